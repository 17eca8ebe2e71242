"""The segmenter interface every model kind implements, and what it returns."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from ..datasets.base import Sample
from ..options import NoOptions, Options

#: Outcome of one (sample, model) pair; docs/outputs.md explains each.
STATUSES = {
    "ok": "the model returned a mask (possibly empty)",
    "error": "the model raised or returned something unusable; scored as an empty prediction",
    "unavailable": "the model does not apply to this sample (e.g. no 2nd annotator on DRIVE's training split); not scored",
    "sample_error": "the sample itself could not be read (missing mask, size mismatch, unreadable file); not scored",
    "blocked": "the API refused to answer (safety or policy block); scored as an empty prediction",
    "api_error": "the API call failed after its retries, or with an error that retrying cannot fix; scored as empty",
    "missing": "a `masks` model has no prediction file for the sample; scored as an empty prediction",
}
# Decoder outcomes (unparseable, invalid_answer, unsupported_format, no_image, aspect_mismatch) are
# listed in omniseg.models.api.decoders.STATUSES; all of them are scored as empty predictions.


@dataclass(frozen=True)
class RunContext:
    """What a run tells its models: where the store lives and the run-wide options. Frozen: a run that learns more
    (the batch stage's answers) binds a new one (``dataclasses.replace``)."""

    store_root: Path = Path("runs")
    refresh: bool = False  # bypass the response cache (answers are still written to it)
    max_cost: float | None = None  # USD this run may spend on API calls
    look_only: bool = False  # --dry-run: read what exists (the answer archive), create and write nothing
    # --batch: answers come from the archive (a batch job put them there); nothing is called online.
    answers_only: bool = False
    batch_failures: dict = field(default_factory=dict)  # cache key -> (status, reason) of a job's failed request
    max_pixels: int | None = None  # dataset.max_pixels: the largest file a model reads from disk (None: the default)
    #: the answer archive beside the store, and how to open one (``omniseg.store.archive.AnswerArchive``: the run
    #: opens it, as this layer opens no store file); None outside a run
    archive_path: Path | None = None
    open_archive: Callable[..., Any] | None = None



@dataclass
class Prediction:
    """What a model says about one sample. ``mask`` is None unless status is 'ok'."""

    mask: np.ndarray | None
    status: str = "ok"
    reason: str = ""
    prob: np.ndarray | None = None  # float probability map, kept for confidence analyses
    meta: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)  # API calls made for it (omniseg.store.database api_calls)

    @classmethod
    def failed(cls, reason: str, status: str = "error", **meta: Any) -> "Prediction":
        return cls(mask=None, status=status, reason=reason, meta=meta)


#: What a model is in the comparison; reports, curation, routing and figures select models by role,
#: never by kind name. A kind declares its default; a config entry may override it (``role:``).
ROLES = {
    "specialist": "a network trained for the task: picks the easiest and hardest cases, routes to omnimodels",
    "omnimodel": "a general-purpose model asked zero-shot (an API model)",
    "floor": "a training-free reference: what any model should beat",
    "human": "a second human annotation: the human-versus-human row",
    "foundation": "a promptable segmentation foundation model (SAM 3): general-purpose, given a concept, not trained for the task",
}


class Segmenter:
    """Turns samples into predictions. Subclasses set ``kind``, ``role``, ``version``, ``Options`` and ``predict``."""

    kind: ClassVar[str]
    role: ClassVar[str] = "floor"  # the default role of the kind (ROLES); an instance may carry another
    trainable: ClassVar[bool] = False  # `omniseg train` can train it (its options name a checkpoint)
    #: told something a fair contender is not (SAM 3's box-oracle: the reference's box); every table marks it
    privileged: bool = False
    version: ClassVar[str] = "1"  # bump when the same options would give different masks
    Options: ClassVar[type[Options]] = NoOptions  # the kind's options (omniseg.options)

    #: starts its work in :meth:`submit` (API requests in flight), so :meth:`collect` waits rather than computes; a
    #: run keeps what arrived of such a chunk when it is interrupted
    works_in_submit: ClassVar[bool] = False
    #: reads a whole volume at once (a `masks` folder of NIfTI predictions); any other model sees volumes slice by
    #: slice (omniseg.models.slicewise)
    volumetric: ClassVar[bool] = False
    #: samples per predict_batch call the model works best with (None: the run's --batch-size)
    preferred_batch: int | None = None
    #: signature keys left out of the hash: they are recorded per row and can be brought up to date
    #: without redoing the pair (e.g. an API model's decoder version, see `omniseg redecode`)
    unhashed: ClassVar[tuple[str, ...]] = ()
    #: options that do not change what the model says (where, how fast, how it is called): left out of the
    #: signature, so changing them redoes nothing. Every other option changes the signature (the contract test
    #: of tests/models/test_contract.py tries each one).
    inert: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: Options | None = None):
        self.name = name
        self.options = options if options is not None else self.Options()
        self.context = RunContext()
        #: set when the model must stop the run cleanly (budget or daily quota reached); samples
        #: it did not get to come back with status 'skipped' and are not recorded
        self.stop_reason: str | None = None

    def bind(self, context: RunContext) -> None:
        self.context = context

    def needs(self) -> tuple[str, ...]:
        """Names of other model entries this one works through (a chain's source); :func:`omniseg.models.link`
        attaches them."""
        return ()

    def attach(self, peers: dict[str, "Segmenter"], running: frozenset[str]) -> None:
        """Receive the entries named by :meth:`needs`; ``running``: the names the run itself runs (their models are
        shared, not owned)."""

    def check_ready(self) -> None:
        """Raise an OmnisegError when the model cannot predict anything (checked before a run starts)."""

    def estimate(self, samples: list[Sample]) -> dict[str, Any]:
        """What predicting these samples would cost (for --dry-run); local models cost nothing."""
        return {"calls": 0, "cached": 0, "cost_usd": 0.0}

    def signature(self) -> dict[str, Any]:
        """Everything that decides this model's output; stored so results stay traceable."""
        return {"kind": self.kind, "version": self.version,
                "options": self.options.model_dump(mode="json", exclude=set(self.inert))}

    def signature_hash(self) -> str:
        sig = {k: v for k, v in self.signature().items() if k not in self.unhashed}
        return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]

    def predict(self, sample: Sample) -> Prediction:
        raise NotImplementedError

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        """Predict several samples; a failure on one becomes that sample's 'error' row."""
        out = []
        for s in samples:
            try:
                out.append(self.predict(s))
            except Exception as e:  # one bad image must not end the run
                out.append(Prediction.failed(f"{type(e).__name__}: {e}"))
        return out

    def submit(self, samples: list[Sample]) -> Any:
        """Start work on a chunk; the runner submits the next chunk before collecting this one.

        Local models do their work in :meth:`collect`; API models start their requests here so
        that the pipe stays full across chunk boundaries.
        """
        return samples

    def collect(self, handle: Any) -> list[Prediction]:
        """The predictions of a submitted chunk, in order."""
        return self.predict_batch(handle)

    def close(self) -> None:
        """Release resources (clients, GPU memory) at the end of a run."""

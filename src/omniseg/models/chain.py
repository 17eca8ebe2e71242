"""A general model locates, a promptable segmenter draws: the `chain` model kind.

Box-only and point-only models lose on Dice for their answer's format, not for their perception (a filled box
cannot match a round polyp). A chain takes another entry's answers (``source``: an omnimodel of the same task)
and prompts a promptable segmenter (``segmenter``: SAM 3 first) with the boxes they hold, so the report can split
the gap to the specialist into *where* (localisation) and *what shape* (delineation).

The first stage is the source entry itself, asked through its own machinery: an answer already in the archive is
read from it (no call); one that is not is asked once and archived, so the source's own rows then read it from
there (within one run the two share one model, and a request on its way is never sent twice). Unlike SAM 3's
``box-oracle`` a chain is not privileged: its boxes come from the model, not from the reference.

Prompts, per image: the boxes the answer located (``meta.located``: box forms, PNG-crop boxes); for an answer that
drew shapes (polygons, a mask picture) the bounding box of each connected region; largest first, at most
``max_boxes``. A point-only answer has no box to give SAM 3's concept model (it takes text and boxes): its row
says so (``unsupported_format``). A first-stage failure is the chain's row with the first stage's status and
reason; the first stage's answer key and form, and the segmenter's settings and checkpoint, are kept per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from ..datasets.base import Sample
from ..errors import OmnisegError
from ..options import Options
from .base import Prediction, RunContext, Segmenter


class Stage(Options):
    kind: str = Field("sam3", description="a promptable model kind (one that can be prompted with boxes: sam3)")
    options: dict[str, Any] = Field(default_factory=dict, description="that kind's options (as in its own entry)")


class ChainOptions(Options):
    source: str = Field(description="the models entry whose answers locate (an omnimodel of the same task)")
    segmenter: Stage = Field(default_factory=Stage, description="the promptable segmenter that draws from the boxes")
    max_boxes: int = Field(10, ge=1, description="at most this many boxes prompt one image (the largest first)")


def regions(mask: np.ndarray) -> list[list[float]]:
    """The bounding box [x0, y0, x1, y1] (pixel edges) of each 8-connected region of a mask."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [[float(s[1].start), float(s[0].start), float(s[1].stop), float(s[0].stop)]
            for s in ndimage.find_objects(labels) if s is not None]


def prompts(pred: Prediction, max_boxes: int) -> tuple[list[list[float]], str]:
    """The boxes a first-stage prediction prompts with, and where they came from ('' when it gives none)."""
    located = pred.meta.get("located") if isinstance(pred.meta.get("located"), dict) else {}
    boxes = [list(map(float, b)) for b in located.get("boxes") or []]
    source = "boxes answered"
    if not boxes and not located.get("points") and pred.mask is not None and pred.mask.any():
        boxes, source = regions(pred.mask), "regions drawn"
    if not boxes:
        return [], "points only" if located.get("points") else ""
    boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    return boxes[:max_boxes], source


class Chain(Segmenter):
    kind = "chain"
    role = "omnimodel"  # the omnimodel's answer, drawn: a zero-shot general-purpose pipeline
    works_in_submit = True  # submit() starts its source's work (an API model's requests)
    version = "1"
    Options = ChainOptions

    def __init__(self, name: str, options: ChainOptions | None = None):
        super().__init__(name, options)
        from . import REGISTRY  # the registry of this package (a call-time lookup: no import circle)

        st = self.options.segmenter
        try:
            cls = REGISTRY.get(st.kind)
        except KeyError as e:
            raise OmnisegError(f"model {name!r} (kind chain): key 'segmenter.kind': {e.args[0]}") from None
        if not callable(getattr(cls, "segment_boxes", None)):
            able = [k for k in REGISTRY.names() if callable(getattr(REGISTRY.get(k), "segment_boxes", None))]
            raise OmnisegError(f"model {name!r} (kind chain): key 'segmenter.kind': {st.kind!r} cannot be prompted "
                               f"with boxes; expected one of: {', '.join(able)}")
        try:
            stage_options = cls.Options.model_validate(st.options)
        except ValidationError as e:
            where = ".".join(str(x) for x in e.errors()[0]["loc"])
            raise OmnisegError(f"model {name!r} (kind chain): key 'segmenter.options.{where}': "
                               f"{e.errors()[0]['msg']}") from None
        self.second = cls(f"{name}/segmenter", stage_options)
        self.first: Segmenter | None = None
        self.owns_first = False  # the source is not among the run's models: the chain binds and closes it

    # -- wiring: the source entry, shared with the run when it runs too ---------------------------
    def needs(self) -> tuple[str, ...]:
        return (self.options.source,)

    def attach(self, peers: dict[str, Segmenter], running: frozenset[str]) -> None:
        first = peers[self.options.source]
        if isinstance(first, Chain):
            raise OmnisegError(f"model {self.name!r} (kind chain): key 'source': {first.name!r} is itself a chain; "
                               "expected the entry of the model that answers")
        if first.name == self.name:
            raise OmnisegError(f"model {self.name!r} (kind chain): key 'source' names the chain itself")
        self.first, self.owns_first = first, first.name not in running
        if self.owns_first:
            self.first.bind(self.context)

    def _source(self) -> Segmenter:
        if self.first is None:
            raise OmnisegError(f"model {self.name!r} (kind chain) was built without its source "
                               f"{self.options.source!r} (omniseg.models.link attaches it)")
        return self.first

    def bind(self, context: RunContext) -> None:
        super().bind(context)
        self.second.bind(context)
        if self.first is not None and self.owns_first:
            self.first.bind(context)

    def check_ready(self) -> None:
        self._source().check_ready()
        self.second.check_ready()

    def signature(self) -> dict[str, Any]:
        first = self._source()
        return {"kind": self.kind, "version": self.version,
                "options": {"source": self.options.source, "max_boxes": self.options.max_boxes},
                "source": {"kind": first.kind, "signature": first.signature_hash()},
                "segmenter": self.second.signature(), "privileged": False}

    def estimate(self, samples: list[Sample]) -> dict[str, Any]:
        """The first stage's calls when the chain asks them; none when its source runs too (the source pays)."""
        if self.owns_first:
            return self._source().estimate(samples)
        return {"calls": 0, "cached": 0, "cost_usd": 0.0}

    # -- running ---------------------------------------------------------------------------------
    def submit(self, samples: list[Sample]) -> Any:
        return _Handle(samples, self._source().submit(samples))

    def collect(self, handle: Any) -> list[Prediction]:
        samples, firsts = handle.samples, self._source().collect(handle.first)
        if self.first.stop_reason:
            self.stop_reason = self.first.stop_reason
        out: list[Prediction | None] = [None] * len(samples)
        todo: list[int] = []
        boxes: dict[int, list[list[float]]] = {}
        stage1: dict[int, dict] = {}
        for i, p in enumerate(firsts):
            stage1[i] = self._first_meta(p)
            if p.status == "skipped":  # not asked (a stop, a batch without its answer yet): no row
                out[i] = p
            elif p.status != "ok":
                out[i] = Prediction(None, status=p.status, reason=f"first stage ({self.options.source}): {p.reason}",
                                    meta={"first_stage": stage1[i]}, calls=p.calls)
            else:
                boxes[i], stage1[i]["prompted_with"] = prompts(p, self.options.max_boxes)
                if stage1[i]["prompted_with"] == "points only":
                    out[i] = Prediction(None, status="unsupported_format", calls=p.calls, meta={"first_stage": stage1[i]},
                                        reason=f"first stage ({self.options.source}) answered points only: "
                                               f"{self.options.segmenter.kind} is prompted with boxes")
                else:
                    todo.append(i)
        drawn = self.second.segment_boxes([samples[i] for i in todo], [boxes[i] for i in todo],
                                          nothing="the first stage located nothing") if todo else []
        for i, q in zip(todo, drawn):
            q.meta = {"first_stage": {**stage1[i], "boxes": boxes[i]}, "second_stage": self._second_meta(q)}
            q.calls = firsts[i].calls  # the first stage's bookings (a cache hit when its answer was archived)
            out[i] = q
        return out  # type: ignore[return-value]

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        return self.collect(self.submit(samples))

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]

    def _first_meta(self, p: Prediction) -> dict:
        keep = ("cache_key", "answer_form", "cache_hit", "decoder_version", "model_version", "coords")
        return {"model": self.options.source, "status": p.status,
                **{k: p.meta[k] for k in keep if k in p.meta}}

    def _second_meta(self, q: Prediction) -> dict:
        sig = self.second.signature()
        return {"kind": self.second.kind, "checkpoint": getattr(self.second.options, "checkpoint", None),
                "weights": sig.get("weights"), "settings": sig.get("options"), **q.meta}

    def close(self) -> None:
        self.second.close()
        if self.first is not None and self.owns_first:
            self.first.close()


class _Handle:
    """A chain's submitted chunk: its samples and the first stage's handle (not a list of futures: a runner
    collecting answers on an interrupt leaves it alone; the first stage archived what it received)."""

    def __init__(self, samples: list[Sample], first: Any):
        self.samples, self.first = samples, first

"""The contract one remote API implements, and nothing else: build a request, send it, read the response,
describe a failure, price a call.

A provider knows its wire format and its prices; it knows nothing of scheduling (:mod:`.scheduler`), of the
answer archive (:mod:`.cached`) or of masks (:mod:`.answers`). A new provider is one module with a
:class:`Provider` subclass and a :class:`~omniseg.models.api.remote.RemoteSegmenter` kind naming it
(docs/architecture.md). A provider that can also run batch jobs implements :class:`BatchProvider`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...datasets.base import Sample
from ...redaction import watch
from .types import Failure, RemoteOptions, Reply, estimate_input_tokens


class Provider(ABC):
    """One API's wire format and prices, for one model entry (``name``) with its options."""

    #: environment variables that may hold the key, first found wins (also what redaction watches)
    key_variables: tuple[str, ...] = ()
    #: where answers come from when ``base_url`` is not set (reports name any other endpoint)
    default_endpoint: ClassVar[str] = ""

    def __init__(self, name: str, options: RemoteOptions):
        self.name, self.options = name, options

    # -- access ---------------------------------------------------------------------------------
    def endpoint(self) -> str:
        """The address answers come from: the ``base_url`` option, else the provider's own."""
        return self.options.base_url or self.default_endpoint

    def needs_key(self) -> bool:
        """False where the provider authenticates otherwise (Gemini on Vertex AI: Application Default Credentials)."""
        return bool(self.key_variables)

    def api_key(self) -> str | None:
        watch(*self.key_variables)
        return next((os.environ[v] for v in self.key_variables if os.environ.get(v)), None)

    def import_sdk(self) -> None:
        """Import what the first request will need, from the first instant (errors surface at that request)."""

    @abstractmethod
    def make_client(self, key: str | None) -> Any:
        """The client requests go through (made once, off the event loop)."""

    async def close_client(self, client: Any) -> None:
        """Release the client at the end of a run."""

    # -- a request ------------------------------------------------------------------------------
    @abstractmethod
    def generation(self, sample: Sample) -> dict[str, Any]:
        """The generation settings sent for a sample (part of the archive key)."""

    @abstractmethod
    def payload(self, png: bytes, prompt: str, gen: dict) -> Any:
        """The request, built before it waits for a slot (off the event loop: a slot is held only on the wire)."""

    @abstractmethod
    async def send(self, client: Any, payload: Any) -> str:
        """Send one request; the raw response body (JSON text). Raises what :meth:`failure` describes."""

    # -- a response -----------------------------------------------------------------------------
    @abstractmethod
    def read(self, raw: str) -> Reply:
        """A raw body as a :class:`Reply` (raises on a body shaped like nothing the API sends)."""

    @abstractmethod
    def failure(self, err: BaseException) -> Failure:
        """What a failed call was: retryable or not, a delay the server asked for, a per-day quota."""

    # -- a price --------------------------------------------------------------------------------
    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        p = self.options.price
        return (prompt_tokens * p.input_per_mtok + output_tokens * p.output_per_mtok) / 1e6

    def worst_cost(self, size: tuple[int, int], prompt: str) -> float:
        """What one call may cost at most: the budget holds it while the call is in flight."""
        return self.cost(int(estimate_input_tokens(size, prompt) * 1.5), self.options.max_output_tokens)

    def typical_cost(self, size: tuple[int, int], prompt: str) -> float:
        """What one call is expected to cost (``--dry-run``)."""
        o = self.options
        output = 1290 if o.mode == "image-mask" else min(o.max_output_tokens, 1000)
        return self.cost(estimate_input_tokens(size, prompt), output)


#: states after which a batch job changes no more (Gemini's API says BATCH_STATE_X, its SDK JOB_STATE_X)
ENDED = frozenset({"SUCCEEDED", "PARTIALLY_SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


@dataclass
class JobStatus:
    """What a poll of a batch job says: its state, how far it is, and where its answers are once it ended."""

    name: str
    state: str
    total: int | None = None
    done: int | None = None  # answered or failed so far (None: the API did not say)
    inline: list[dict] = field(default_factory=list)  # inline jobs: [{response|error, metadata}] in input order
    file: str | None = None  # file jobs: the results file's name

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class BatchProvider(Provider):
    """A provider that can also send requests as batch jobs (:mod:`omniseg.inference.batch`)."""

    @abstractmethod
    def jobs(self, client: Any) -> Any:
        """The API's batch jobs for this model: create, status, results, cancel (``gemini.batch.GeminiJobs``)."""

    @abstractmethod
    def batch_request(self, key: str, png: bytes, prompt: str, gen: dict) -> tuple[tuple, dict]:
        """A sample's request in a job: the inline item and the JSONL line of a file job."""

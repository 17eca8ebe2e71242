"""The answer archive around a provider, as lm-evaluation-harness's ``CachingLM`` wraps a model: every answer
a provider sends is kept, with the booking of the call that paid for it, before anything decodes it; a
kept answer is read back instead of asked again. The archive itself is the store's
(:class:`omniseg.store.archive.AnswerArchive`, opened by the run: this layer reads and writes no file of its
own); what a call cost is the provider's; what a request's answer is kept under is :func:`cache_key`.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from ...errors import OmnisegError
from ..base import Prediction
from .provider import Provider
from .types import checked_tokens


def cache_key(**parts) -> str:
    """The key an answer is kept under: a hash of everything that changes it (model, API version, mode, prompt,
    the sent pixels' digest, generation settings), never of how it is read or fetched, never of the API key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CachedProvider:
    """A provider's answers through an open answer archive (``get_with_call``, ``put``, ``close``)."""

    def __init__(self, provider: Provider, archive: Any):
        self.provider = provider
        self.archive = archive

    def get(self, key: str) -> str | None:
        """The raw answer kept under ``key``, or None."""
        kept = self.archive.get_with_call(key)
        return kept[0] if kept else None

    def lookup(self, key: str) -> tuple[str, dict] | None:
        """The raw answer and the booking of the call that paid for it, or None."""
        return self.archive.get_with_call(key)

    def booking(self, raw: str, key: str, attempt: int, latency: float | None) -> dict:
        """The api_calls row of an answer, from its usage; a usage that is not counts books an unknown cost."""
        try:
            reply = self.provider.read(raw)
        except Exception:  # decoding says what is wrong with it; the call is still booked
            reply = None
        tokens = checked_tokens(reply.tokens) if reply is not None else None
        cost = self.provider.cost(tokens["prompt_tokens"], tokens["output_tokens"] + tokens["thoughts_tokens"]) \
            if tokens else 0.0
        version = reply.model_version if reply is not None and isinstance(reply.model_version, str) else None
        return {"attempt": attempt, "outcome": "answered", "http_status": 200, "latency_s": latency, "cost_usd": cost,
                "cost_known": tokens is not None, "cache_key": key, "model_version": version,
                "endpoint": self.provider.endpoint(), **(tokens or {})}

    def keep(self, key: str, raw: str, attempt: int, latency: float) -> tuple[dict, OmnisegError | None]:
        """The answer into the archive with its booking, before anything decodes it: decoded or not, it is never
        paid for twice. Returns the booking and, when the archive could not keep it (a full disk, tried three
        times), the error: the caller then stops sending and the answer travels in its row."""
        booking = self.booking(raw, key, attempt, latency)
        error = None
        for wait in (0.0, 0.2, 1.0):
            time.sleep(wait)
            try:
                self.archive.put(key, self.provider.options.model, booking["model_version"], raw, call=booking)
                return booking, None
            except OmnisegError as e:
                error = e
        return booking, error

    def keep_batch(self, key: str, raw: str, job: str, factor: float) -> None:
        """A batch job's answer with its booking at the batch price (``factor`` of the online one; a body that does
        not read is kept all the same, at an unknown cost)."""
        booking = self.booking(raw, key, 1, None)
        booking.update(outcome="batch", job=job, cost_usd=booking["cost_usd"] * factor)
        self.archive.put(key, self.provider.options.model, booking["model_version"], raw, call=booking)

    def close(self) -> None:
        self.archive.close()


def from_archive(pred: Prediction, booking: dict, key: str) -> Prediction:
    """A prediction decoded from a kept answer, marked as such: no call was made, the booking says who paid."""
    pred.meta.update(cache_hit=True, cache_key=key, **({"batch_job": booking["job"]} if booking.get("job") else {}),
                     **({"endpoint": booking["endpoint"]} if isinstance(booking.get("endpoint"), str) else {}))
    version = pred.meta.get("model_version")
    tokens = checked_tokens(pred.meta.pop("tokens", {})) or {}
    pred.calls = [{"attempt": 0, "outcome": "cache_hit", "http_status": None, "latency_s": 0.0, "cost_usd": 0.0,
                   "cache_key": key, "model_version": version if isinstance(version, str) else None,
                   "booking": booking, **tokens}]
    return pred


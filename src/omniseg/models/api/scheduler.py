"""How a provider's requests are sent: concurrently on one event loop (a background thread, for the whole run)
under a cap on requests in flight and a requests-per-minute limit; 408/429/5xx, timeouts and dropped
connections retried with exponential backoff and full jitter, honouring the server's delay; a per-day quota
or the ``--max-cost`` budget stops the run cleanly. Each answer is kept through the answer archive
(:class:`~omniseg.models.api.cached.CachedProvider`) before its slot is released and before it is decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...errors import OmnisegError
from ..base import Prediction
from . import forms
from .cached import CachedProvider, from_archive
from .provider import Provider
from .types import png_bytes, start_loop, stop_loop


@dataclass(frozen=True)
class Ask:
    """One sample's request: the image's size, the pixels sent, the prompt, the generation settings, the archive
    key, and the budget of the run (None: no budget)."""

    h: int
    w: int
    pixels: np.ndarray
    prompt: str
    gen: dict
    key: str
    max_cost: float | None


class Scheduler:
    """The requests of one model entry (``name``) through ``provider``, for the whole run."""

    def __init__(self, name: str, provider: Provider):
        self.name, self.provider, self.options = name, provider, provider.options
        self.spent = 0.0  # USD on calls this run (actual plus reserved for calls in flight)
        #: set when the run must stop cleanly (budget, daily quota, a full disk); requests not yet sent then come
        #: back 'skipped'
        self.stop_reason: str | None = None
        self.unkept = 0  # answers received that the archive could not keep (a full disk); their rows keep them
        self._next_slot = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client_obj = None
        self._client_lock = threading.Lock()
        self._encoder: concurrent.futures.ThreadPoolExecutor | None = None
        self._outstanding: set[concurrent.futures.Future] = set()
        self._asking: dict[str, concurrent.futures.Future] = {}  # archive key -> the request on its way for it
        threading.Thread(target=provider.import_sdk, name=f"api-import-{name}").start()  # from the first instant

    def client(self) -> Any:
        """The SDK client, made on first need (a run answered from the archive needs no key)."""
        with self._client_lock:  # the encoder threads ask for it at once
            if self._client_obj is None:
                p = self.provider
                key = p.api_key()
                if p.key_variables and not key and p.needs_key():
                    raise OmnisegError(f"model {self.name!r} needs an API key: set {' or '.join(p.key_variables)}")
                self._client_obj = p.make_client(key)
            return self._client_obj

    def warm_up(self) -> None:
        """Make the client on a thread now (with google-genai: 1 s of imports, 0.3 s to build) while the runner reads
        the first images; no key or no credentials is said by the first request that needs the client."""
        def make() -> None:
            try:
                self.client()
            except Exception:
                pass

        threading.Thread(target=make, name=f"api-client-{self.name}").start()

    def ask(self, ask: Ask, cached: Callable[[], CachedProvider]) -> concurrent.futures.Future:
        """Send one request (encoded at once, in order, on the encoder threads; sent in the same order); the future
        holds its prediction. A request already on its way for the same key waits for that answer instead.
        ``cached`` gives the answer archive when an answer is to be kept or looked up (it is opened, and its file
        made, only then)."""
        loop = self._event_loop()
        encoded = self._encoder.submit(self._encode, ask.pixels, ask.prompt, ask.gen)
        first = self._asking.get(ask.key)
        if first is not None:  # the same request is on its way for another sample (a duplicate image)
            work = self._twin(first, ask, encoded, cached)
        else:
            work = self._one(ask, encoded, cached)
        f = asyncio.run_coroutine_threadsafe(work, loop)
        if first is None:
            self._asking[ask.key] = f
            f.add_done_callback(lambda done, k=ask.key: self._asking.pop(k, None) if self._asking.get(k) is done else None)
        self._outstanding.add(f)
        return f

    def collect(self, handle: list[concurrent.futures.Future]) -> list[Prediction]:
        try:
            return [f.result() for f in handle]
        finally:
            self._outstanding.difference_update(handle)

    def close(self) -> None:
        if self._outstanding:  # let calls in flight land in the archive (a stopped run), but do not wait long
            concurrent.futures.wait(list(self._outstanding), timeout=self.options.timeout_s)
            self._outstanding.clear()
        if self._loop is not None:
            client, self._client_obj = self._client_obj, None
            stop_loop(self._loop, self._thread, self.provider.close_client(client) if client is not None else None)
            self._loop = None
            self._encoder.shutdown(wait=True, cancel_futures=True)

    # One event loop in a background thread serves the whole run, so that the cap on requests in flight stays
    # filled across the runner's chunks (it submits chunk k+1 before collecting chunk k).
    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop, self._thread = start_loop(f"api-{self.name}")
            self._sem = asyncio.Semaphore(self.options.max_in_flight)
            # Requests are encoded (PNG, the SDK's request objects) on these threads, not on the runner's: one
            # thread encoding in turn could not keep 16 or more requests in flight (bench_api.py).
            self._encoder = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)),
                                                                  thread_name_prefix=f"api-encode-{self.name}")
        return self._loop

    def _encode(self, pixels: np.ndarray, prompt: str, gen: dict) -> Any:
        """The request's payload; the client is made here too, the first time (off the event loop)."""
        self.client()
        return self.provider.payload(png_bytes(pixels), prompt, gen)

    async def _twin(self, first: concurrent.futures.Future, ask: Ask, encoded: concurrent.futures.Future,
                    cached: Callable[[], CachedProvider]) -> Prediction:
        """A sample whose request (same pixels, prompt and settings) is already on its way for another one: it
        waits for that answer and takes it from the archive, so one answer is asked for and paid once; only when
        the first got none (a failure, a stop) does it ask itself."""
        await asyncio.wrap_future(first)
        hit = await asyncio.get_running_loop().run_in_executor(None, lambda: cached().lookup(ask.key))
        if hit is not None:
            raw, booking = hit
            return from_archive(forms.from_body(self.provider.read, raw, ask.h, ask.w, ask.gen, self.options),
                                booking, ask.key)
        return await self._one(ask, encoded, cached)

    async def _rate_slot(self) -> None:
        if not self.options.rpm:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 60.0 / self.options.rpm
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _one(self, ask: Ask, encoded: concurrent.futures.Future, cached: Callable[[], CachedProvider]) -> Prediction:
        o, p, key = self.options, self.provider, ask.key
        worst = p.worst_cost((ask.pixels.shape[1], ask.pixels.shape[0]), ask.prompt)
        payload = client = None
        calls: list[dict] = []

        def stopped() -> Prediction:
            pred = Prediction.failed(self.stop_reason, status="skipped")
            pred.calls = calls
            return pred

        for attempt in range(1, o.max_retries + 2):
            await self._rate_slot()
            async with self._sem:
                if payload is None:
                    # Awaited only now, so that requests take their slots in the order they were submitted (a quota
                    # or a budget stops the run after the first samples, not after random ones); the encoding
                    # started at submission and is done by now, except for the first few requests.
                    try:
                        payload = await asyncio.wrap_future(encoded)
                    except OmnisegError:  # no key, no credentials: the run stops with that message
                        raise
                    except Exception as e:  # an image PIL cannot encode (e.g. no pixels): its row, no call
                        return Prediction.failed(f"the image could not be encoded for the API: {type(e).__name__}: {e}")
                    client = self.client()
                if self.stop_reason:  # another request hit the daily quota or the budget meanwhile
                    return stopped()
                # The budget holds the worst case of every call in flight until it settles.
                if ask.max_cost is not None and self.spent + worst > ask.max_cost:
                    self.stop_reason = (f"stopped before exceeding --max-cost {ask.max_cost:.4f} USD "
                                        f"(spent {self.spent:.4f}); rerun with a larger budget to continue")
                    return stopped()
                self.spent += worst
                t0 = time.monotonic()
                try:
                    raw = await asyncio.wait_for(p.send(client, payload), timeout=o.timeout_s)
                    err = None
                except Exception as e:  # API errors, timeouts, transport failures, anything unexpected
                    raw, err = None, e
                latency = time.monotonic() - t0
                if err is None:
                    # Kept before the slot is released: a kill at any instant loses at most the answers in flight.
                    # (On a worker thread: reading the usage and the fsync must not hold up the event loop.)
                    booking, unkept = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: cached().keep(key, raw, attempt, latency))
                    if unkept is not None:  # the run stops sending; the answer travels in its row, for redecode
                        self.unkept += 1
                        self.stop_reason = (f"{unkept}; {self.unkept} answer(s) received could not be kept in the "
                                            "answer archive (their rows keep them)")
                self.spent -= worst
            if err is None:
                self.spent += booking["cost_usd"] if booking["cost_known"] else worst
                break
            fail = p.failure(err)
            calls.append({"attempt": attempt, "outcome": "error", "http_status": fail.code, "latency_s": latency,
                          "cost_usd": 0.0, "cache_key": key, "error": fail.text[:300]})
            if fail.per_day:
                self.stop_reason = ("the daily request quota is used up (it resets at midnight Pacific); "
                                    "rerun the same command then to continue")
                return stopped()
            if not fail.retryable or attempt > o.max_retries:
                pred = Prediction.failed(f"{fail.text} (after {attempt} attempt(s))", status="api_error")
                pred.calls = calls
                return pred
            if fail.delay is not None and fail.delay > o.max_retry_wait_s:
                self.stop_reason = (f"the server asked to wait {fail.delay:.0f} s before a retry, over max_retry_wait_s "
                                    f"{o.max_retry_wait_s:.0f}; rerun the same command later to continue")
                return stopped()
            backoff = random.uniform(0, min(o.backoff_max_s, o.backoff_s * 2 ** (attempt - 1)))
            await asyncio.sleep(max(backoff, fail.delay or 0.0))
        calls.append(booking)
        # decoding runs on a worker thread (the loop keeps the slots filled); it never raises (a row, not a crash)
        pred = await asyncio.get_running_loop().run_in_executor(
            None, forms.from_body, p.read, raw, ask.h, ask.w, ask.gen, o)
        pred.meta.pop("tokens", None)
        pred.calls = calls
        pred.meta.update(cache_hit=False, cache_key=key, attempts=len(calls), endpoint=p.endpoint(),
                         elapsed_s=sum(c["latency_s"] for c in calls))
        if unkept is not None:
            pred.meta["unkept_answer"] = raw
        return pred

"""The API layer every remote omnimodel shares: what makes its calls trustworthy.

Requests run concurrently on one event loop (a background thread, for the whole run) under a
cap on requests in flight and a requests-per-minute limit; 408/429/5xx, timeouts and dropped
connections are retried with exponential backoff and full jitter, honouring the server's delay;
a per-day quota or the ``--max-cost`` budget stops the run cleanly. Every answer is kept in the
answer archive (:mod:`omniseg.models.api.archive`) before it is decoded, so a rerun or ``omniseg redecode``
never pays for it again. Every text that could carry the API key passes through :func:`redact`.

A provider (:mod:`.gemini`) subclasses :class:`RemoteSegmenter` and only builds its request and
reads its response into a :class:`Reply`; answer-form detection is the shared
:func:`omniseg.models.api.answers.decode_answer`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import threading
import time
from typing import Any, ClassVar

import numpy as np

from .archive import FILE_NAME, AnswerArchive, cache_key
from ...datasets.base import Sample
from ...errors import OmnisegError
from ...redaction import redact, watch
from . import answers, decoders
from .frames import rule_of
from .types import (Failure, RemoteOptions, Reply, checked_tokens, estimate_input_tokens, pixels_digest, png_bytes,
                    sent_pixels, sent_size, start_loop, stop_loop)
from ..base import Prediction, Segmenter


class RemoteSegmenter(Segmenter):
    """Scheduling, retries, budget, archive and decoding for API-backed models."""

    Options = RemoteOptions
    role = "omnimodel"
    key_variables: ClassVar[tuple[str, ...]] = ()
    default_prompts: ClassVar[dict[str, str]] = {}
    unhashed = ("decoder_version",)  # rows record it; `omniseg redecode` updates them
    # how and where it is called does not change the answer
    inert = ("max_in_flight", "rpm", "max_retries", "backoff_s", "backoff_max_s", "timeout_s", "price", "cache",
             "base_url", "batch", "batch_poll_s", "batch_input", "batch_inline_mb", "vertexai", "project", "location",
             "max_retry_wait_s", "max_answer_mb")
    works_in_submit = True  # submit() sends the requests; collect() waits for their answers

    def __init__(self, name: str, options: RemoteOptions | None = None):
        super().__init__(name, options)
        o = self.options
        self.preferred_batch = max(16, 2 * o.max_in_flight)  # the runner keeps one chunk submitted ahead
        self._next_slot = 0.0
        self.spent = 0.0  # USD on calls this run (actual plus reserved for calls in flight)
        self._archive: AnswerArchive | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client_obj = None
        self._client_lock = threading.Lock()
        self._encoder: concurrent.futures.ThreadPoolExecutor | None = None
        self._outstanding: set[concurrent.futures.Future] = set()
        self._asking: dict[str, concurrent.futures.Future] = {}  # archive key -> the request on its way for it
        self.unkept = 0  # answers received that the archive could not keep (a full disk); their rows keep them
        threading.Thread(target=self._import_sdk, name=f"api-import-{name}").start()  # from the first instant

    # -- provider hooks -----------------------------------------------------------------------
    #: where answers come from when ``base_url`` is not set (reports name any other endpoint)
    default_endpoint: ClassVar[str] = ""

    def endpoint(self) -> str:
        """The address answers come from: the ``base_url`` option, else the provider's own."""
        return self.options.base_url or self.default_endpoint

    def make_client(self, key: str | None):
        raise NotImplementedError

    def _needs_key(self) -> bool:
        """False where the provider authenticates otherwise (Gemini on Vertex AI: Application Default Credentials)."""
        return True

    def _payload(self, png: bytes, prompt: str, gen: dict) -> Any:
        """The request, built before it waits for a slot (off the event loop: a slot is held only on the wire)."""
        return png, prompt, gen

    async def _call(self, client, payload: Any) -> str:
        """Send one request; the raw response body (JSON text)."""
        raise NotImplementedError

    async def _aclose(self, client) -> None:
        pass

    def _generation(self, sample: Sample) -> dict[str, Any]:
        """The generation settings sent for a sample (part of the archive key)."""
        raise NotImplementedError

    def _read(self, raw: str) -> Reply:
        raise NotImplementedError

    def failure(self, err: BaseException) -> Failure:
        raise NotImplementedError

    # -- identity -----------------------------------------------------------------------------
    def template(self) -> str:
        o = self.options
        return o.prompts.get(o.prompt) or self.default_prompts[o.mode]

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["prompt_text"] = self.template()
        sig["decoder_version"] = answers.DECODER_VERSION
        return sig

    def redact(self, text: str) -> str:
        return redact(text)

    def api_key(self) -> str | None:
        watch(*self.key_variables)
        return next((os.environ[v] for v in self.key_variables if os.environ.get(v)), None)

    @property
    def archive(self) -> AnswerArchive | None:
        """The answer archive; None when only looking (--dry-run) and there is none yet."""
        if self._archive is None:
            path = self.options.cache or self.context.store_root / FILE_NAME
            if self.context.look_only and not path.is_file():
                return None
            self._archive = AnswerArchive(path, readonly=self.context.look_only)
        return self._archive

    def check_ready(self) -> None:
        """No key and no answer archive: every pair would need a call that cannot be made (said before anything
        starts). With an archive, answers may come from it: the key is then asked for when a call is needed."""
        if self.key_variables and self._needs_key() and not self.api_key():
            path = self.options.cache or self.context.store_root / FILE_NAME
            if not (path.is_file() and path.stat().st_size > 0):
                raise OmnisegError(f"model {self.name!r} needs an API key: set {' or '.join(self.key_variables)}")
        # the client (with google-genai: 1 s of imports, 0.3 s to build) is made while the runner reads the first images
        threading.Thread(target=self._warm_up, name=f"api-client-{self.name}").start()

    def _warm_up(self) -> None:
        try:
            self._client()
        except Exception:  # no key, no credentials: said by the first request that needs the client
            pass

    def _import_sdk(self) -> None:
        """Import what the first request will need (a provider's hook; errors surface at that request)."""

    def _kept(self, key: str) -> str | None:
        archive = self.archive
        return archive.get(key) if archive is not None else None

    # -- request pieces -----------------------------------------------------------------------
    def _sent_image(self, image: np.ndarray) -> np.ndarray:
        return sent_pixels(image, self.options.max_side)

    _png = staticmethod(png_bytes)
    _est_input_tokens = staticmethod(estimate_input_tokens)

    def prompt(self) -> str:
        return self.template().format(target=self.options.target)

    def _request(self, sample: Sample, prompt: str) -> tuple[np.ndarray, dict, str]:
        """What is sent for a sample (pixels, generation settings) and its archive key."""
        pixels, gen = self._sent_image(sample.image), self._generation(sample)
        return pixels, gen, self._key(pixels, prompt, gen)

    def _key(self, pixels: np.ndarray, prompt: str, gen: dict) -> str:
        """Content key of the answer: the sent pixels (hashed with their shape) stand for the image bytes."""
        o = self.options
        return cache_key(model=o.model, api_version=getattr(o, "api_version", None), mode=o.mode, prompt=prompt,
                         image=pixels_digest(pixels), generation=gen)

    def _typical_output_tokens(self) -> int:
        return 1290 if self.options.mode == "image-mask" else min(self.options.max_output_tokens, 1000)

    def _cost(self, prompt_tokens: int, output_tokens: int) -> float:
        p = self.options.price
        return (prompt_tokens * p.input_per_mtok + output_tokens * p.output_per_mtok) / 1e6

    def worst_cost(self, size: tuple[int, int], prompt: str) -> float:
        return self._cost(int(self._est_input_tokens(size, prompt) * 1.5), self.options.max_output_tokens)

    def estimate(self, samples: list[Sample]) -> dict[str, Any]:
        calls = cached = 0
        cost = 0.0
        prompt = self.prompt()
        for s in samples:
            pixels, _, key = self._request(s, prompt)
            if not self.context.refresh and self._kept(key) is not None:
                cached += 1
                continue
            calls += 1
            size = (pixels.shape[1], pixels.shape[0])
            cost += self._cost(self._est_input_tokens(size, prompt), self._typical_output_tokens())
        return {"calls": calls, "cached": cached, "cost_usd": cost}

    # -- decoding: a raw body into a prediction, from the archive, or a --batch run's verdict -----

    def redecode(self, raw: str, sample: Sample) -> Prediction:
        """A kept raw answer decoded again with today's decoders (no API call)."""
        h, w = sample.image.shape[:2]
        return self._decode_raw(raw, h, w, self._generation(sample))

    def _from_archive(self, raw: str, booking: dict, key: str, sample: Sample) -> Prediction:
        pred = self.redecode(raw, sample)
        pred.meta.update(cache_hit=True, cache_key=key, **({"batch_job": booking["job"]} if booking.get("job") else {}),
                         **({"endpoint": booking["endpoint"]} if isinstance(booking.get("endpoint"), str) else {}))
        version = pred.meta.get("model_version")
        tokens = checked_tokens(pred.meta.pop("tokens", {})) or {}
        pred.calls = [{"attempt": 0, "outcome": "cache_hit", "http_status": None, "latency_s": 0.0, "cost_usd": 0.0,
                       "cache_key": key, "model_version": version if isinstance(version, str) else None,
                       "booking": booking, **tokens}]
        return pred

    def _batch_verdict(self, key: str) -> Prediction:
        """A pair without an archived answer in a --batch run: its job's error, or left to do (not written)."""
        if key not in self.context.batch_failures:
            return Prediction.failed("no batch answer yet", status="skipped")
        status, reason = self.context.batch_failures[key]
        pred = Prediction.failed(reason, status=status, cache_key=key)
        pred.calls = [{"attempt": 1, "outcome": "error", "cache_key": key, "error": reason[:300]}]
        return pred

    def _decode_raw(self, raw: str, h: int, w: int, gen: dict) -> Prediction:
        """A raw body as a prediction. Never raises: whatever an answer holds ends as a row with a status."""
        limit = self.options.max_answer_mb
        if len(raw) > limit * 1e6:
            return Prediction.failed(f"the answer is {len(raw) / 1e6:.1f} MB, over max_answer_mb {limit:g}: kept in the "
                                     "archive, not decoded", status="invalid_answer", decoder_version=answers.DECODER_VERSION)
        try:
            reply = self._read(raw)
        except Exception as e:  # a body shaped like nothing the provider knows (or nested past any sense)
            return Prediction.failed(self.redact(f"cannot read the response: {type(e).__name__}: {str(e)[:200]}"),
                                     status="invalid_answer", decoder_version=answers.DECODER_VERSION)
        try:
            return self._decode(reply, h, w, gen)
        except Exception as e:  # a decoder bug or an answer no rule foresaw: a row, never a crash
            return Prediction.failed(self.redact(f"the answer could not be decoded: {type(e).__name__}: {str(e)[:200]}"),
                                     status="invalid_answer", decoder_version=answers.DECODER_VERSION,
                                     model_version=reply.model_version if isinstance(reply.model_version, str) else None)

    def _decode(self, reply: Reply, h: int, w: int, gen: dict) -> Prediction:
        o = self.options
        return answers.to_prediction(reply, h, w, threshold=o.threshold, point_order=o.point_order,
                                     expect_image=o.mode == "image-mask",
                                     requested_aspect=decoders.ASPECT_RATIOS.get(gen.get("aspect_ratio", "")),
                                     coords=getattr(o, "coords", "norm1000"), sent_size=sent_size(h, w, o.max_side),
                                     resize_rule=rule_of(getattr(o, "resize_rule", None)),
                                     seg_codebook=getattr(o, "seg_codebook", None), redact=self.redact)

    # -- running ------------------------------------------------------------------------------
    # One event loop in a background thread serves the whole run, so that the cap on requests in
    # flight stays filled across the runner's chunks (it submits chunk k+1 before collecting chunk k).
    def submit(self, samples: list[Sample]) -> list[concurrent.futures.Future]:
        loop = self._event_loop()
        prompt = self.prompt()
        futures = []
        for s in samples:
            try:
                pixels, gen, key = self._request(s, prompt)
            except OmnisegError:  # the model cannot work at all (a setting): said once, for the run
                raise
            except Exception as e:  # an image that cannot be sent: its own row, the others go on
                futures.append(_done(Prediction.failed(f"the image could not be prepared for the API: "
                                                       f"{type(e).__name__}: {e}")))
                continue
            fresh = self.context.refresh and not self.context.answers_only  # --batch has just refreshed the archive
            hit = None if fresh or self.archive is None else self.archive.get_with_call(key)
            if hit is not None or self.context.answers_only:  # no call: from the archive, or --batch's verdict
                f: concurrent.futures.Future = concurrent.futures.Future()
                f.set_result(self._from_archive(*hit, key, s) if hit is not None else self._batch_verdict(key))
                futures.append(f)
                continue
            # encoded at once, in order, on the encoder threads; sent in the same order (see _one)
            encoded = self._encoder.submit(self._encode, pixels, prompt, gen)
            first = self._asking.get(key)
            if first is not None:  # the same request is on its way for another sample (a duplicate image)
                work = self._twin(first, s, pixels, encoded, gen, prompt, key)
            else:
                work = self._one(s, pixels, encoded, gen, prompt, key)
            f = asyncio.run_coroutine_threadsafe(work, loop)
            if first is None:
                self._asking[key] = f
                f.add_done_callback(lambda done, k=key: self._asking.pop(k, None) if self._asking.get(k) is done else None)
            futures.append(f)
        self._outstanding.update(futures)
        return futures

    async def _twin(self, first: concurrent.futures.Future, sample: Sample, pixels: np.ndarray,
                    encoded: concurrent.futures.Future, gen: dict, prompt: str, key: str) -> Prediction:
        """A sample whose request (same pixels, prompt and settings) is already on its way for another one: it
        waits for that answer and takes it from the archive, so one answer is asked for and paid once; only when
        the first got none (a failure, a stop) does it ask itself."""
        await asyncio.wrap_future(first)
        hit = await asyncio.get_running_loop().run_in_executor(None, self.archive.get_with_call, key)
        if hit is not None:
            return self._from_archive(*hit, key, sample)
        return await self._one(sample, pixels, encoded, gen, prompt, key)

    def collect(self, handle: list[concurrent.futures.Future]) -> list[Prediction]:
        try:
            return [f.result() for f in handle]
        finally:
            self._outstanding.difference_update(handle)

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        return self.collect(self.submit(samples))

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]

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
        self._client()
        return self._payload(self._png(pixels), prompt, gen)

    def _client(self):
        """The SDK client, made on first need (a run answered from the archive needs no key)."""
        with self._client_lock:  # the encoder threads ask for it at once
            if self._client_obj is None:
                key = self.api_key()
                if self.key_variables and not key and self._needs_key():
                    raise OmnisegError(f"model {self.name!r} needs an API key: set {' or '.join(self.key_variables)}")
                self._client_obj = self.make_client(key)
            return self._client_obj

    def close(self) -> None:
        if self._outstanding:  # let calls in flight land in the archive (a stopped run), but do not wait long
            concurrent.futures.wait(list(self._outstanding), timeout=self.options.timeout_s)
            self._outstanding.clear()
        if self._loop is not None:
            client, self._client_obj = self._client_obj, None
            stop_loop(self._loop, self._thread, self._aclose(client) if client is not None else None)
            self._loop = None
            self._encoder.shutdown(wait=True, cancel_futures=True)
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    async def _rate_slot(self) -> None:
        if not self.options.rpm:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 60.0 / self.options.rpm
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _one(self, sample: Sample, pixels: np.ndarray, encoded: concurrent.futures.Future, gen: dict,
                   prompt: str, key: str) -> Prediction:
        o = self.options
        h, w = sample.image.shape[:2]
        size = (pixels.shape[1], pixels.shape[0])
        worst = self.worst_cost(size, prompt)
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
                    client = self._client()
                if self.stop_reason:  # another request hit the daily quota or the budget meanwhile
                    return stopped()
                # The budget holds the worst case of every call in flight until it settles.
                if self.context.max_cost is not None and self.spent + worst > self.context.max_cost:
                    self.stop_reason = (f"stopped before exceeding --max-cost {self.context.max_cost:.4f} USD "
                                        f"(spent {self.spent:.4f}); rerun with a larger budget to continue")
                    return stopped()
                self.spent += worst
                t0 = time.monotonic()
                try:
                    raw = await asyncio.wait_for(self._call(client, payload), timeout=o.timeout_s)
                    err = None
                except Exception as e:  # API errors, timeouts, transport failures, anything unexpected
                    raw, err = None, e
                latency = time.monotonic() - t0
                if err is None:
                    # Kept before the slot is released: a kill at any instant loses at most the answers in flight.
                    # (On a worker thread: reading the usage and the fsync must not hold up the event loop.)
                    booking, kept = await asyncio.get_running_loop().run_in_executor(
                        None, self._keep, key, raw, attempt, latency)
                self.spent -= worst
            if err is None:
                self.spent += booking["cost_usd"] if booking["cost_known"] else worst
                break
            fail = self.failure(err)
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
        pred = await asyncio.get_running_loop().run_in_executor(None, self._decode_raw, raw, h, w, gen)
        pred.meta.pop("tokens", None)
        pred.calls = calls
        pred.meta.update(cache_hit=False, cache_key=key, attempts=len(calls), endpoint=self.endpoint(),
                         elapsed_s=sum(c["latency_s"] for c in calls))
        if not kept:  # the archive could not keep it (a full disk): the row does, for redecode
            pred.meta["unkept_answer"] = raw
        return pred

    def _booking(self, raw: str, key: str, attempt: int, latency: float) -> dict:
        """The api_calls row of an answer, from its usage; a usage that is not counts books an unknown cost."""
        try:
            reply = self._read(raw)
        except Exception:  # decoding says what is wrong with it; the call is still booked
            reply = None
        tokens = checked_tokens(reply.tokens) if reply is not None else None
        cost = self._cost(tokens["prompt_tokens"], tokens["output_tokens"] + tokens["thoughts_tokens"]) if tokens else 0.0
        version = reply.model_version if reply is not None and isinstance(reply.model_version, str) else None
        return {"attempt": attempt, "outcome": "answered", "http_status": 200, "latency_s": latency, "cost_usd": cost,
                "cost_known": tokens is not None, "cache_key": key, "model_version": version, "endpoint": self.endpoint(),
                **(tokens or {})}

    def _keep(self, key: str, raw: str, attempt: int, latency: float) -> tuple[dict, bool]:
        """The answer into the archive with its booking, before anything decodes it: decoded or not, it is never
        paid for twice. Returns the booking and whether the archive kept it.

        A write that fails (a full disk) is tried again; if it still fails, the run stops sending requests
        and the answer travels in its row instead (``meta.unkept_answer``)."""
        booking = self._booking(raw, key, attempt, latency)
        for wait in (0.0, 0.2, 1.0):
            time.sleep(wait)
            try:
                self.archive.put(key, self.options.model, booking["model_version"], raw, call=booking)
                return booking, True
            except OmnisegError as e:
                error = e
        self.unkept += 1
        self.stop_reason = (f"{error}; {self.unkept} answer(s) received could not be kept in the answer archive "
                            "(their rows keep them)")
        return booking, False


def _done(pred: Prediction) -> concurrent.futures.Future:
    """A future that already holds its prediction (no call to make)."""
    f: concurrent.futures.Future = concurrent.futures.Future()
    f.set_result(pred)
    return f

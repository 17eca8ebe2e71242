"""Gemini as a segmenter, through the real google-genai SDK.

Three answer formats (``mode``): ``json-mask`` (box + PNG crops, Gemini 2.5 native segmentation),
``polygon`` (Gemini 3.x, Robotics-ER) and ``image-mask`` (an image-output model draws the mask).
Requests run concurrently on the async client under a cap on requests in flight and a
requests-per-minute limit, with retries (exponential backoff, full jitter, the server's
``RetryInfo`` delay honoured) on 408/429/5xx, timeouts and dropped connections. A per-day quota or
the ``--max-cost`` budget stops the run cleanly; rerunning resumes. Answers that decode to a mask
are cached by content, so nothing is paid for twice. The API key never leaves the client: every
text that could carry it is passed through :func:`redact`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import math
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..cache import ResponseCache, cache_key
from ..datasets.base import Sample
from ..errors import OmnisegError
from . import decoders
from .base import Prediction, Segmenter

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
RETRY_CODES = {408, 429, 500, 502, 503, 504}

DEFAULT_PROMPTS = {
    "json-mask": (
        "Give the segmentation masks for {target}. Output a JSON list of segmentation masks where each entry "
        'contains the 2D bounding box in the key "box_2d", the segmentation mask in key "mask", and the text '
        'label in the key "label". Use descriptive labels. If there is no {target}, output an empty list [].'
    ),
    "polygon": (
        "Outline each {target} in this image as a polygon. Output a JSON list where each entry has the key "
        '"points" holding [[x, y], ...] vertices with coordinates normalized to 0-1000, and the key "label". '
        "If there is no {target}, output an empty list []."
    ),
    "image-mask": (
        "Return a black-and-white segmentation mask of this image: every pixel of {target} white, everything "
        "else black. Keep exactly the framing and aspect ratio of the input image; draw nothing else."
    ),
}


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input_per_mtok: float = Field(0.30, ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(2.50, ge=0, description="USD per million output tokens (thinking included)")


class GeminiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field("gemini-2.5-flash", description="model name sent to the API; the reported modelVersion is recorded")
    api_version: str = Field("v1beta", description="REST API version, pinned (SDK defaults differ between releases)")
    base_url: str | None = Field(None, description="API endpoint; None is Google's (tests point it at a local fake)")
    mode: Literal["json-mask", "polygon", "image-mask"] = "json-mask"
    target: str = Field("the target", description="what to segment, substituted for {target} in the prompt")
    prompt: str = Field("default", description="name of the prompt variant to use")
    prompts: dict[str, str] = Field(default_factory=dict, description="named prompt templates; 'default' is the mode's")
    temperature: float | None = Field(0.5, ge=0, le=2, description="0 makes 2.5 Flash loop; about 0.5 is advised")
    thinking_budget: int | None = Field(0, ge=-1, description="0 turns thinking off (not possible on Pro); None leaves it unset")
    max_output_tokens: int = Field(8192, ge=1)
    seed: int | None = 0
    max_side: int | None = Field(1024, ge=64, description="downscale longer sides to this before sending (None: as is)")
    max_in_flight: int = Field(16, ge=1, description="requests in flight at once")
    rpm: float | None = Field(None, gt=0, description="client-side requests-per-minute limit (None: no limit)")
    max_retries: int = Field(6, ge=0)
    backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles each attempt (full jitter)")
    backoff_max_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    threshold: int = Field(decoders.THRESHOLD, ge=0, le=254, description="grey level above which a mask pixel is foreground")
    price: Price = Price()
    cache: Path | None = Field(None, description="response cache file; default gemini-cache.sqlite beside the store")

    @model_validator(mode="after")
    def _prompt_exists(self):
        if self.prompt != "default" and self.prompt not in self.prompts:
            raise ValueError(f"prompt {self.prompt!r} is not among the prompts given ({', '.join(self.prompts) or 'none'})")
        return self

    def template(self) -> str:
        return self.prompts.get(self.prompt) or DEFAULT_PROMPTS[self.mode]


def api_key() -> str | None:
    for var in KEY_VARIABLES:
        if os.environ.get(var):
            return os.environ[var]
    return None


def redact(text: str) -> str:
    """``text`` with any configured API key (and anything shaped like a Google key) masked."""
    for var in KEY_VARIABLES:
        key = os.environ.get(var)
        if key:
            text = text.replace(key, "[redacted]")
    return re.sub(r"AIza[0-9A-Za-z_\-]{10,}", "[redacted]", text)


class QuotaExhausted(OmnisegError):
    pass


def _retry_delay(err) -> float | None:
    """The server's RetryInfo delay in seconds, if the error carries one."""
    details = (getattr(err, "details", None) or {})
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    for d in details or []:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            m = re.match(r"([\d.]+)s", str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None


def _per_day(err) -> bool:
    return "PerDay" in str(getattr(err, "details", ""))


def _transport_error(e: BaseException) -> bool:
    """Timeouts, refused or dropped connections: worth retrying."""
    if isinstance(e, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    return any(c.__name__ in ("TransportError", "TimeoutException", "NetworkError", "RemoteProtocolError",
                              "ProtocolError", "ConnectError", "ReadError")
               for c in type(e).__mro__)


class Gemini(Segmenter):
    kind = "gemini"
    version = "1"
    Options = GeminiOptions

    def __init__(self, name: str, options: GeminiOptions | None = None):
        super().__init__(name, options)
        o: GeminiOptions = self.options
        self.preferred_batch = max(16, 2 * o.max_in_flight)  # the runner keeps one chunk submitted ahead
        self._next_slot = 0.0
        self.spent = 0.0  # USD on calls this run (actual plus reserved for calls in flight)
        self._cache: ResponseCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client_obj = None
        self._outstanding: set[concurrent.futures.Future] = set()

    # -- identity -----------------------------------------------------------------------------
    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        for k in ("max_in_flight", "rpm", "max_retries", "backoff_s", "backoff_max_s", "timeout_s", "price", "cache", "base_url"):
            sig["options"].pop(k, None)  # how and where it is called does not change the answer
        sig["prompt_text"] = self.options.template()
        sig["decoder_version"] = decoders.DECODER_VERSION
        return sig

    @property
    def cache(self) -> ResponseCache:
        if self._cache is None:
            self._cache = ResponseCache(self.options.cache or self.context.store_root / "gemini-cache.sqlite")
        return self._cache

    # -- request pieces -----------------------------------------------------------------------
    def _sent_image(self, image: np.ndarray) -> np.ndarray:
        """The pixels that are sent: the image, its longer side capped at ``max_side``."""
        m = self.options.max_side
        h, w = image.shape[:2]
        if m and max(h, w) > m:
            s = m / max(h, w)
            img = Image.fromarray(image).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            return np.asarray(img)
        return image

    @staticmethod
    def _png(pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")  # lossless: the model sees exactly the keyed pixels
        return buf.getvalue()

    def _prompt(self) -> str:
        return self.options.template().format(target=self.options.target)

    def _generation(self, sample: Sample) -> dict[str, Any]:
        o = self.options
        g: dict[str, Any] = {"temperature": o.temperature, "max_output_tokens": o.max_output_tokens, "seed": o.seed}
        if o.thinking_budget is not None:
            g["thinking_budget"] = o.thinking_budget
        if o.mode == "image-mask":
            h, w = sample.image.shape[:2]
            g["response_modalities"] = ["IMAGE"]
            g["aspect_ratio"] = decoders.nearest_aspect(w, h)
        return g

    def _config(self, gen: dict[str, Any]):
        from google.genai import types

        kw: dict[str, Any] = {k: gen[k] for k in ("temperature", "max_output_tokens", "seed") if gen.get(k) is not None}
        if "thinking_budget" in gen:
            kw["thinking_config"] = types.ThinkingConfig(thinking_budget=gen["thinking_budget"])
        if "response_modalities" in gen:
            kw["response_modalities"] = gen["response_modalities"]
            kw["image_config"] = types.ImageConfig(aspect_ratio=gen["aspect_ratio"])
        return types.GenerateContentConfig(**kw)

    def _request(self, sample: Sample, prompt: str) -> tuple[np.ndarray, dict, str]:
        """What is sent for a sample (pixels, generation settings) and its cache key."""
        pixels, gen = self._sent_image(sample.image), self._generation(sample)
        return pixels, gen, self._key(pixels, prompt, gen)

    def _key(self, pixels: np.ndarray, prompt: str, gen: dict) -> str:
        """Content key: the sent pixels (hashed with their shape) stand for the image bytes."""
        o = self.options
        image = hashlib.sha256(str(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()
        return cache_key(model=o.model, api_version=o.api_version, mode=o.mode, prompt=prompt, image=image,
                         generation=gen, threshold=o.threshold, decoder=decoders.DECODER_VERSION)

    def _est_input_tokens(self, png_size: tuple[int, int], prompt: str) -> int:
        w, h = png_size
        tiles = 1 if max(w, h) <= 384 else math.ceil(w / 768) * math.ceil(h / 768)
        return 258 * tiles + len(prompt) // 3 + 16

    def _cost(self, prompt_tokens: int, output_tokens: int) -> float:
        p = self.options.price
        return (prompt_tokens * p.input_per_mtok + output_tokens * p.output_per_mtok) / 1e6

    def estimate(self, samples: list[Sample]) -> dict[str, Any]:
        calls = cached = 0
        cost = 0.0
        prompt = self._prompt()
        for s in samples:
            pixels, _, key = self._request(s, prompt)
            if not self.context.refresh and self.cache.get(key):
                cached += 1
                continue
            calls += 1
            size = (pixels.shape[1], pixels.shape[0])
            typical_out = 1290 if self.options.mode == "image-mask" else min(self.options.max_output_tokens, 1000)
            cost += self._cost(self._est_input_tokens(size, prompt), typical_out)
        return {"calls": calls, "cached": cached, "cost_usd": cost}

    # -- running ------------------------------------------------------------------------------
    # Requests run on one event loop in a background thread for the whole run, so that the cap on
    # requests in flight stays filled across the runner's chunks (it submits chunk k+1 before it
    # collects chunk k).
    def submit(self, samples: list[Sample]) -> list[concurrent.futures.Future]:
        loop = self._event_loop()
        prompt = self._prompt()
        futures = []
        for s in samples:
            pixels, gen, key = self._request(s, prompt)
            hit = None if self.context.refresh else self.cache.get(key)
            if hit is not None:  # answered from the cache here, without touching the event loop
                f: concurrent.futures.Future = concurrent.futures.Future()
                f.set_result(self._from_cache(hit, key, s))
                futures.append(f)
                continue
            # encoding is CPU work: do it on this thread, not on the event loop
            png = self._png(pixels)
            size = (pixels.shape[1], pixels.shape[0])
            futures.append(asyncio.run_coroutine_threadsafe(self._one(s, png, size, gen, prompt, key), loop))
        self._outstanding.update(futures)
        return futures

    def _from_cache(self, hit: str, key: str, sample: Sample) -> Prediction:
        from google.genai import types

        resp = types.GenerateContentResponse.model_validate_json(hit)
        h, w = sample.image.shape[:2]
        pred = self._decode(resp, h, w, self._generation(sample))
        pred.meta.update(cache_hit=True, cache_key=key)
        pred.calls = [{"attempt": 0, "outcome": "cache_hit", "http_status": None, "latency_s": 0.0, "cost_usd": 0.0,
                       "cache_key": key, "model_version": resp.model_version, **self._tokens(resp)}]
        return pred

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
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name=f"gemini-{self.name}", daemon=True)
            self._thread.start()
            self._sem = asyncio.Semaphore(self.options.max_in_flight)
        return self._loop

    def _client_for_calls(self):
        """The SDK client, made on first need (a run answered from the cache needs no key)."""
        if self._client_obj is None:
            self._client_obj = self._client()
        return self._client_obj

    def close(self) -> None:
        if self._outstanding:  # let calls in flight land in the cache (a stopped run), but do not wait long
            concurrent.futures.wait(list(self._outstanding), timeout=self.options.timeout_s)
            self._outstanding.clear()
        if self._loop is not None:
            if self._client_obj is not None:
                asyncio.run_coroutine_threadsafe(self._client_obj.aio.aclose(), self._loop).result(timeout=10)
                self._client_obj = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _client(self):
        from google import genai
        from google.genai import types

        key = api_key()
        if not key:
            raise OmnisegError(f"model {self.name!r} needs an API key: set {' or '.join(KEY_VARIABLES)}")
        o = self.options
        http = types.HttpOptions(base_url=o.base_url, api_version=o.api_version, timeout=int(o.timeout_s * 1000),
                                 retry_options=types.HttpRetryOptions(attempts=1))  # omniseg does the retrying
        return genai.Client(api_key=key, http_options=http)

    async def _rate_slot(self) -> None:
        if not self.options.rpm:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 60.0 / self.options.rpm
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _one(self, sample: Sample, png: bytes, size: tuple[int, int], gen: dict, prompt: str,
                   key: str) -> Prediction:
        from google.genai import errors, types

        o = self.options
        h, w = sample.image.shape[:2]
        worst = self._cost(int(self._est_input_tokens(size, prompt) * 1.5),
                           o.max_output_tokens + max(o.thinking_budget or 0, 0))
        client = self._client_for_calls()
        calls: list[dict] = []
        contents = [types.Part.from_bytes(data=png, mime_type="image/png"), prompt]
        config = self._config(gen)

        def stopped() -> Prediction:
            pred = Prediction.failed(self.stop_reason, status="skipped")
            pred.calls = calls
            return pred

        for attempt in range(1, o.max_retries + 2):
            await self._rate_slot()
            async with self._sem:
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
                    resp = await asyncio.wait_for(
                        client.aio.models.generate_content(model=o.model, contents=contents, config=config),
                        timeout=o.timeout_s)
                    err = None
                except Exception as e:  # APIError, timeouts, transport failures, anything unexpected
                    resp, err = None, e
                latency = time.monotonic() - t0
                self.spent -= worst
            if err is None:
                tok = self._tokens(resp)
                cost = self._cost(tok["prompt_tokens"], tok["output_tokens"] + tok["thoughts_tokens"])
                self.spent += cost
                calls.append({"attempt": attempt, "outcome": "answered", "http_status": 200, "latency_s": latency,
                              "cost_usd": cost, "cache_key": key, "model_version": resp.model_version, **tok})
                break
            code = getattr(err, "code", None) if isinstance(err, errors.APIError) else None
            status_text = " ".join(str(x) for x in (code, getattr(err, "status", None)) if x)
            last_error = redact(f"{type(err).__name__} {status_text}: {getattr(err, 'message', None) or err}")
            calls.append({"attempt": attempt, "outcome": "error", "http_status": code, "latency_s": latency,
                          "cost_usd": 0.0, "cache_key": key, "error": last_error[:300]})
            if code == 429 and _per_day(err):
                self.stop_reason = ("the daily request quota is used up (it resets at midnight Pacific); "
                                    "rerun the same command then to continue")
                return stopped()
            retryable = code in RETRY_CODES if code is not None else _transport_error(err)
            if not retryable or attempt > o.max_retries:
                pred = Prediction.failed(f"{last_error} (after {attempt} attempt(s))", status="api_error")
                pred.calls = calls
                return pred
            backoff = random.uniform(0, min(o.backoff_max_s, o.backoff_s * 2 ** (attempt - 1)))
            await asyncio.sleep(max(backoff, _retry_delay(err) or 0.0))
        try:
            pred = self._decode(resp, h, w, gen)
        except Exception as e:  # an answer shaped like nothing we know: a row, never a crash
            pred = Prediction.failed(redact(f"cannot read the response: {type(e).__name__}: {e}"), status="invalid_answer")
        pred.calls = calls
        pred.meta.update(cache_hit=False, cache_key=key, attempts=len(calls),
                         elapsed_s=sum(c["latency_s"] for c in calls))
        if pred.status == "ok":  # durable before the row that uses it is written
            self.cache.put(key, o.model, resp.model_version, resp.model_dump_json(exclude_none=True,
                                                                               exclude={"sdk_http_response"}))
        return pred

    @staticmethod
    def _tokens(resp) -> dict[str, int]:
        u = resp.usage_metadata
        return {"prompt_tokens": (u and u.prompt_token_count) or 0, "output_tokens": (u and u.candidates_token_count) or 0,
                "thoughts_tokens": (u and u.thoughts_token_count) or 0}

    def _decode(self, resp, h: int, w: int, gen: dict) -> Prediction:
        meta: dict[str, Any] = {"model_version": resp.model_version, "response_id": resp.response_id}
        fb = resp.prompt_feedback
        if fb is not None and fb.block_reason:
            return Prediction.failed(f"prompt blocked: {_name(fb.block_reason)}", status="blocked", **meta)
        if not resp.candidates:
            return Prediction.failed("the response has no candidates", status="api_error", **meta)
        cand = resp.candidates[0]
        finish = _name(cand.finish_reason) if cand.finish_reason else ""
        meta["finish_reason"] = finish
        parts = (cand.content.parts if cand.content and cand.content.parts else None) or []
        if not parts and finish not in ("STOP", "MAX_TOKENS", ""):
            return Prediction.failed(f"no answer: finish reason {finish}", status="blocked", **meta)
        o = self.options
        if o.mode == "image-mask":
            data = next((p.inline_data.data for p in parts if p.inline_data is not None and p.inline_data.data), None)
            requested = decoders.ASPECT_RATIOS.get(gen.get("aspect_ratio", ""))
            d = decoders.decode_image_mask(data, h, w, requested, o.threshold)
        else:
            text = "".join(p.text for p in parts if p.text and not p.thought)
            if o.mode == "json-mask":
                d = decoders.decode_json_masks(text, h, w, o.threshold)
            else:
                d = decoders.decode_polygons(text, h, w)
        meta.update(notes=d.notes, instances=d.instances)
        if finish == "MAX_TOKENS":
            meta["notes"] = d.notes + ["answer cut at the output-token cap"]
        if d.status != "ok":
            return Prediction(mask=None, status=d.status, reason=d.reason, meta=meta)
        return Prediction(mask=d.mask, reason="; ".join(d.notes), meta=meta)


def _name(v) -> str:
    return getattr(v, "value", None) or str(v)

"""The pieces of the API layer a provider fills in: shared options, a read reply, a classified failure.

Kept apart from the scheduling in :mod:`.remote` so that a provider module and the tests can use
them without the event-loop machinery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from ...options import Options
from . import decoders


class Price(Options):
    input_per_mtok: float = Field(0.30, ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(2.50, ge=0, description="USD per million output tokens (thinking included)")
    batch_factor: float = Field(0.5, gt=0, le=1, description="price of a batch job's tokens relative to online ones")


class RemoteOptions(Options):
    """Options every API-backed model takes; a provider adds its own."""

    model: str = Field(description="model name sent to the API; the version the API reports is recorded per call")
    base_url: str | None = Field(None, description="API endpoint; None is the provider's (tests point it at a local fake)")
    mode: Literal["json-mask", "polygon", "image-mask"] | None = Field(
        None, description="which prompt and generation settings to use (not how the answer is read: that is detected)")
    target: str = Field("the target", description="what to segment, substituted for {target} in the prompt")
    prompt: str = Field("default", description="name of the prompt variant to use")
    prompts: dict[str, str] = Field(default_factory=dict, description="named prompt templates; 'default' is the mode's")
    max_output_tokens: int = Field(8192, ge=1)
    seed: int | None = 0
    max_side: int | None = Field(1024, ge=64, description="downscale longer sides to this before sending (None: as is)")
    max_in_flight: int = Field(16, ge=1, description="requests in flight at once")
    rpm: float | None = Field(None, gt=0, description="client-side requests-per-minute limit (None: no limit)")
    max_retries: int = Field(6, ge=0)
    backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles each attempt (full jitter)")
    backoff_max_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    max_retry_wait_s: float = Field(600.0, ge=0, description="longest wait a server may ask for (retry-after, "
                                    "RetryInfo) before a retry; past it the run stops cleanly, to be rerun later")
    max_answer_mb: float = Field(8.0, gt=0, description="answers larger than this are kept but not decoded "
                                 "(status invalid_answer): decoding time is bounded like the request")
    threshold: int = Field(decoders.THRESHOLD, ge=0, le=254, description="grey level above which a mask pixel is foreground")
    point_order: Literal["xy", "yx"] = Field("xy", description="order of polygon points ([x, y] as Gemini 3.x answers)")
    price: Price = Price()
    cache: Path | None = Field(None, description="answer archive file; default answers.sqlite beside the store")

    @model_validator(mode="after")
    def _prompt_exists(self):
        if self.prompt != "default" and self.prompt not in self.prompts:
            raise ValueError(f"prompt {self.prompt!r} is not among the prompts given ({', '.join(self.prompts) or 'none'})")
        return self


@dataclass
class Reply:
    """A provider's answer, read into the pieces decoding needs."""

    text: str = ""
    image: bytes | None = None
    finish: str = ""
    blocked: str | None = None  # why the prompt or the answer was refused
    has_candidates: bool = True
    model_version: str | None = None
    response_id: str | None = None
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "output_tokens": 0, "thoughts_tokens": 0})


@dataclass
class Failure:
    """One failed attempt, classified by the provider."""

    code: int | None  # HTTP status, None for transport failures
    text: str  # already redacted
    retryable: bool
    per_day: bool = False  # a daily quota: retrying cannot help today
    delay: float | None = None  # the server's requested retry delay


TOKEN_FIELDS = ("prompt_tokens", "output_tokens", "thoughts_tokens")


def checked_tokens(tokens: dict) -> dict[str, int] | None:
    """The reply's token counts when each is a non-negative integer (absent counts as 0); None otherwise.

    None books the call at an unknown cost (``api_calls.cost_known`` 0): a count that is a string,
    NaN, negative or fractional never becomes a cost, which would be wrong or loosen ``--max-cost``.
    """
    if not isinstance(tokens, dict):
        return None
    out = {}
    for k in TOKEN_FIELDS:
        v = tokens.get(k)
        v = 0 if v is None else v
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return None
        out[k] = v
    return out


def retry_after_seconds(value: object) -> float | None:
    """A ``retry-after`` header's delay in seconds; None when it is absent or does not parse (then ignored).

    Only the delta-seconds form is read (what rate limiters send); an HTTP date is ignored rather than
    compared with this machine's clock."""
    text = str(value or "").strip()
    if not re.fullmatch(r"\d+(\.\d+)?", text):
        return None
    delay = float(text)
    return delay if math.isfinite(delay) else None


def transport_error(e: BaseException) -> bool:
    """Timeouts, refused or dropped connections: worth retrying."""
    if isinstance(e, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    return any(c.__name__ in ("TransportError", "TimeoutException", "NetworkError", "RemoteProtocolError",
                              "ProtocolError", "ConnectError", "ReadError")
               for c in type(e).__mro__)


def sent_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) of an h x w image as sent: its longer side capped at ``max_side``."""
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        return max(1, round(w * s)), max(1, round(h * s))
    return w, h


def sent_pixels(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """The pixels that are sent: the image, its longer side capped at ``max_side``."""
    h, w = image.shape[:2]
    size = sent_size(h, w, max_side)
    return image if size == (w, h) else np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # lossless: the model sees exactly the keyed pixels; level 1 encodes ~4x faster than the default 6 for
    # ~10% more bytes (docs/scaling.md: at 16 requests in flight, encoding at level 6 was a quarter of a core)
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pixels_digest(pixels: np.ndarray) -> str:
    """The sent pixels (hashed with their shape) stand for the image bytes in the archive key."""
    return hashlib.sha256(str(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def estimate_input_tokens(png_size: tuple[int, int], prompt: str) -> int:
    """Gemini's published rule: 258 tokens per image up to 384 px a side, else per 768 x 768 tile."""
    w, h = png_size
    tiles = 1 if max(w, h) <= 384 else math.ceil(w / 768) * math.ceil(h / 768)
    return 258 * tiles + len(prompt) // 3 + 16


def start_loop(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """An event loop running in a daemon thread (one per API model and run)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    return loop, thread


def stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, last=None) -> None:
    """Cancel what is left on the loop and let it unwind (no task dies pending), await ``last`` (closing the
    client), then stop and close the loop."""

    async def shutdown() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if last is not None:
            await last

    try:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
    except (concurrent.futures.TimeoutError, RuntimeError):
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()

"""Gemini as a segmenter, through the real google-genai SDK: the provider half.

This module builds Gemini's request and reads its raw response; scheduling, retries, the budget,
the answer archive and decoding are the shared API layer (:mod:`.remote`). ``mode`` picks the
prompt and the generation settings: ``json-mask`` (the documented 2.5 segmentation prompt: box +
PNG crops), ``polygon`` (3.x, Robotics-ER), ``image-mask`` (an image-output model draws the mask).
Which form came back is detected from the answer (:mod:`.answers`). Which settings a model takes
comes from :mod:`.gemini_catalog`: Gemini 3 takes ``thinking_level`` and ``media_resolution``,
2.5 takes ``temperature`` and ``thinking_budget``; sending one a model does not take is refused
when the configuration is loaded.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from typing import Any, Literal

from pydantic import Field, model_validator

from ..datasets.base import Sample
from . import decoders, gemini_catalog
from .remote import (
    Failure,
    Price,
    RemoteOptions,
    RemoteSegmenter,
    Reply,
    transport_error,
)

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


class GeminiOptions(RemoteOptions):
    model: str = Field("gemini-3.5-flash", description="model name sent to the API (docs/omnimodels.md lists today's)")
    api_version: str = Field("v1beta", description="REST API version, pinned (SDK defaults differ between releases)")
    temperature: float | None = Field(None, ge=0, le=2, description="2.5 only: about 0.5 is advised (0 makes 2.5 Flash loop)")
    thinking_budget: int | None = Field(None, ge=-1, description="2.5 only: 0 turns thinking off")
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = Field(None, description="Gemini 3 only")
    media_resolution: Literal["low", "medium", "high"] | None = Field(None, description="Gemini 3: image tokens per image")
    image_size: Literal["0.5K", "1K", "2K", "4K"] | None = Field(None, description="image-output models: output size")
    price: Price = Field(None, description="USD per million tokens; default from docs/omnimodels.md for known models")

    @model_validator(mode="before")
    @classmethod
    def _from_catalog(cls, data: Any) -> Any:
        """Mode and price default to the catalogue's for a known model."""
        if not isinstance(data, dict):
            return data
        entry = gemini_catalog.lookup(data.get("model", cls.model_fields["model"].default))
        data = dict(data)
        if data.get("mode") is None:
            data["mode"] = entry.mode if entry else "json-mask"
        if data.get("price") is None:
            known = entry and entry.input_per_mtok is not None
            data["price"] = ({"input_per_mtok": entry.input_per_mtok, "output_per_mtok": entry.output_per_mtok}
                             if known else {})
        return data

    @model_validator(mode="after")
    def _settings_the_model_takes(self):
        entry = gemini_catalog.lookup(self.model)
        if entry is not None:
            refused = [k for k in gemini_catalog.SETTINGS if getattr(self, k) is not None and k not in entry.settings]
            if refused:
                takes = ", ".join(entry.settings) or "none of them"
                raise ValueError(f"{self.model} does not take {', '.join(refused)} (it takes {takes}; "
                                 "docs/omnimodels.md): remove the key")
        return self


class Gemini(RemoteSegmenter):
    kind = "gemini"
    version = "2"
    Options = GeminiOptions
    key_variables = KEY_VARIABLES
    default_prompts = DEFAULT_PROMPTS

    def __init__(self, name: str, options: GeminiOptions | None = None):
        super().__init__(name, options)
        note = gemini_catalog.status_note(self.options.model)
        if note:
            warnings.warn(f"model {name!r}: {note}", stacklevel=2)

    def _generation(self, sample: Sample) -> dict[str, Any]:
        o = self.options
        g: dict[str, Any] = {"max_output_tokens": o.max_output_tokens, "seed": o.seed}
        for k in ("temperature", "thinking_budget", "thinking_level", "media_resolution"):
            if getattr(o, k) is not None:
                g[k] = getattr(o, k)
        if o.mode == "image-mask":
            h, w = sample.image.shape[:2]
            g["response_modalities"] = ["IMAGE"]
            g["aspect_ratio"] = decoders.nearest_aspect(w, h)
            if o.image_size:
                g["image_size"] = o.image_size
        return g

    def _worst_cost(self, size: tuple[int, int], prompt: str) -> float:
        thinking = max(self.options.thinking_budget or 0, 0)
        return self._cost(int(self._est_input_tokens(size, prompt) * 1.5), self.options.max_output_tokens + thinking)

    def _make_client(self, key: str | None):
        from google import genai
        from google.genai import types

        o = self.options
        http = types.HttpOptions(base_url=o.base_url, api_version=o.api_version, timeout=int(o.timeout_s * 1000),
                                 retry_options=types.HttpRetryOptions(attempts=1))  # the API layer retries
        return genai.Client(api_key=key, http_options=http)

    @staticmethod
    def _config(gen: dict[str, Any]):
        from google.genai import types

        kw: dict[str, Any] = {k: gen[k] for k in ("temperature", "max_output_tokens", "seed") if gen.get(k) is not None}
        thinking = {k: gen[k] for k in ("thinking_budget", "thinking_level") if k in gen}
        if thinking:
            kw["thinking_config"] = types.ThinkingConfig(**thinking)
        if "media_resolution" in gen:
            kw["media_resolution"] = f"MEDIA_RESOLUTION_{gen['media_resolution'].upper()}"
        if "response_modalities" in gen:
            kw["response_modalities"] = gen["response_modalities"]
            kw["image_config"] = types.ImageConfig(aspect_ratio=gen["aspect_ratio"], image_size=gen.get("image_size"))
        # the raw body, exactly as the API sent it, is what the archive keeps and the decoders read
        return types.GenerateContentConfig(should_return_http_response=True, **kw)

    def _payload(self, png: bytes, prompt: str, gen: dict):
        from google.genai import types

        return [types.Part.from_bytes(data=png, mime_type="image/png"), prompt], self._config(gen)

    async def _call(self, client, payload) -> str:
        contents, config = payload
        resp = await client.aio.models.generate_content(model=self.options.model, contents=contents, config=config)
        return resp.sdk_http_response.body or "{}"

    async def _aclose(self, client) -> None:
        await client.aio.aclose()

    def _read(self, raw: str) -> Reply:
        """Gemini's REST response (camelCase; snake_case accepted too) into a :class:`Reply`."""
        d = json.loads(raw)
        get = lambda obj, *names: next((obj[n] for n in names if n in obj), None)  # noqa: E731
        usage = get(d, "usageMetadata", "usage_metadata") or {}
        reply = Reply(model_version=get(d, "modelVersion", "model_version"), response_id=get(d, "responseId", "response_id"),
                      tokens={"prompt_tokens": get(usage, "promptTokenCount", "prompt_token_count") or 0,
                              "output_tokens": get(usage, "candidatesTokenCount", "candidates_token_count") or 0,
                              "thoughts_tokens": get(usage, "thoughtsTokenCount", "thoughts_token_count") or 0})
        block = (get(d, "promptFeedback", "prompt_feedback") or {}).get("blockReason")
        if block:
            reply.blocked = f"prompt blocked: {block}"
            return reply
        candidates = d.get("candidates") or []
        if not candidates:
            reply.has_candidates = False
            return reply
        cand = candidates[0]
        reply.finish = get(cand, "finishReason", "finish_reason") or ""
        parts = (cand.get("content") or {}).get("parts") or []
        reply.text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        for p in parts:
            inline = get(p, "inlineData", "inline_data")
            if inline and inline.get("data"):
                data = inline["data"]
                reply.image = base64.b64decode(data.replace("-", "+").replace("_", "/") + "=" * (-len(data) % 4))
                break
        return reply

    def _failure(self, err: BaseException) -> Failure:
        from google.genai import errors

        if not isinstance(err, errors.APIError):
            text = self.redact(f"{type(err).__name__}: {err}")
            return Failure(None, text, retryable=transport_error(err))
        code = err.code
        status = " ".join(str(x) for x in (code, err.status) if x)
        text = self.redact(f"{type(err).__name__} {status}: {err.message or err}")
        details = err.details or {}
        if isinstance(details, dict):
            details = details.get("error", details).get("details", [])
        delay = None
        for item in details or []:
            if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
                m = re.match(r"([\d.]+)s", str(item.get("retryDelay", "")))
                delay = float(m.group(1)) if m else None
        per_day = code == 429 and "PerDay" in str(err.details)
        return Failure(code, text, retryable=code in RETRY_CODES, per_day=per_day, delay=delay)

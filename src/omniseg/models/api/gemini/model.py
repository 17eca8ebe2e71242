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
import importlib
import json
import os
import re
import warnings
from typing import Any, Literal

from pydantic import Field, model_validator

from ....datasets.base import Sample
from .... import clock
from .. import decoders
from . import catalog as gemini_catalog
from ....redaction import redact
from ..provider import BatchProvider
from ..types import (Failure, Price, RemoteOptions, Reply, estimate_input_tokens, retry_after_seconds,
                     transport_error)
from ..remote import RemoteSegmenter

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


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _rest_generation(gen: dict[str, Any]) -> dict[str, Any]:
    """The generation settings as the REST API's ``generationConfig`` (a batch job's JSONL input)."""
    out: dict[str, Any] = {}
    for k, rest in (("temperature", "temperature"), ("max_output_tokens", "maxOutputTokens"), ("seed", "seed")):
        if gen.get(k) is not None:
            out[rest] = gen[k]
    thinking = {}
    if "thinking_budget" in gen:
        thinking["thinkingBudget"] = gen["thinking_budget"]
    if "thinking_level" in gen:
        thinking["thinkingLevel"] = gen["thinking_level"].upper()
    if thinking:
        out["thinkingConfig"] = thinking
    if "media_resolution" in gen:
        out["mediaResolution"] = f"MEDIA_RESOLUTION_{gen['media_resolution'].upper()}"
    if "response_modalities" in gen:
        out["responseModalities"] = gen["response_modalities"]
        out["imageConfig"] = {"aspectRatio": gen["aspect_ratio"], **({"imageSize": gen["image_size"]} if gen.get("image_size") else {})}
    return out


class GeminiOptions(RemoteOptions):
    model: str = Field("gemini-3.5-flash", description="model name sent to the API (docs/omnimodels.md lists today's)")
    api_version: str = Field("v1beta", description="REST API version, pinned (SDK defaults differ between releases)")
    temperature: float | None = Field(None, ge=0, le=2, description="2.5 only: about 0.5 is advised (0 makes 2.5 Flash loop)")
    thinking_budget: int | None = Field(None, ge=-1, description="2.5 only: 0 turns thinking off")
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = Field(None, description="Gemini 3 only")
    media_resolution: Literal["low", "medium", "high"] | None = Field(None, description="Gemini 3: image tokens per image")
    image_size: Literal["0.5K", "1K", "2K", "4K"] | None = Field(None, description="image-output models: output size")
    price: Price = Field(None, description="USD per million tokens; default from docs/omnimodels.md for known models")
    batch: bool = Field(False, description="send the pairs to do as batch jobs (half price, within 24 h); also `run --batch`")
    batch_poll_s: float = Field(30.0, gt=0, description="seconds between polls of a batch job")
    batch_input: Literal["auto", "inline", "file"] = Field(
        "auto", description="auto: inline while the job is under batch_inline_mb, else a JSONL file via the Files API")
    batch_inline_mb: float = Field(19.0, gt=0, le=20, description="largest inline job (the API takes up to 20 MB)")
    vertexai: bool = Field(default_factory=lambda: _env_true("GOOGLE_GENAI_USE_VERTEXAI"),
                           description="call Vertex AI with Application Default Credentials instead of an API key")
    project: str | None = Field(None, description="Vertex AI: Google Cloud project (else GOOGLE_CLOUD_PROJECT, else ADC's)")
    location: str | None = Field(None, description="Vertex AI: region (else GOOGLE_CLOUD_LOCATION, else 'global')")

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
        if data.get("vertexai", _env_true("GOOGLE_GENAI_USE_VERTEXAI")) and "api_version" not in data:
            data["api_version"] = "v1"  # Vertex AI serves v1 and v1beta1, not the Gemini API's v1beta
        if data.get("price") is None:
            known = entry and entry.input_per_mtok is not None
            data["price"] = ({"input_per_mtok": entry.input_per_mtok, "output_per_mtok": entry.output_per_mtok}
                             if known else {})
        return data

    @model_validator(mode="after")
    def _vertex(self):
        if self.vertexai and self.batch:
            raise ValueError("batch jobs on Vertex AI read and write Cloud Storage, which omniseg does not manage: "
                             "use batch with an API key, or vertexai online (docs/omnimodels.md)")
        return self

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


class GeminiApi(BatchProvider):
    """Gemini's wire format (google-genai), prices and batch jobs."""

    key_variables = KEY_VARIABLES
    default_endpoint = "https://generativelanguage.googleapis.com"

    def endpoint(self) -> str:
        """``base_url``, else ``GOOGLE_GEMINI_BASE_URL`` (which the SDK reads too), else Google's API or Vertex AI."""
        o = self.options
        if o.base_url:
            return o.base_url
        if o.vertexai:
            return os.environ.get("GOOGLE_VERTEX_BASE_URL") or "https://aiplatform.googleapis.com"
        return os.environ.get("GOOGLE_GEMINI_BASE_URL") or self.default_endpoint

    def needs_key(self) -> bool:
        return not self.options.vertexai

    def import_sdk(self) -> None:
        importlib.import_module("google.genai.types")

    def make_client(self, key: str | None):
        from google import genai
        from google.genai import types

        o = self.options
        http = types.HttpOptions(base_url=o.base_url, api_version=o.api_version, timeout=int(o.timeout_s * 1000),
                                 retry_options=types.HttpRetryOptions(attempts=1))  # the API layer retries
        if o.vertexai:
            creds, project = self._vertex_credentials()
            location = o.location or os.environ.get("GOOGLE_CLOUD_LOCATION") or "global"
            return genai.Client(vertexai=True, project=project, location=location, credentials=creds, http_options=http)
        return genai.Client(api_key=key, http_options=http)

    def _vertex_credentials(self):
        """Application Default Credentials and the project, or one message naming what is missing."""
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        from ....errors import OmnisegError

        project = self.options.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        try:
            creds, adc_project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except DefaultCredentialsError as e:
            missing = "no Application Default Credentials" + ("" if project else " and no Google Cloud project")
            raise OmnisegError(
                f"model {self.name!r} uses Vertex AI but found {missing} ({redact(str(e)).splitlines()[0][:200]}): "
                "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a key file"
                + ("" if project else ", and set `project` on the model or GOOGLE_CLOUD_PROJECT")) from None
        project = project or adc_project
        if not project:
            raise OmnisegError(f"model {self.name!r} uses Vertex AI but no Google Cloud project is known: set `project` "
                               "on the model or GOOGLE_CLOUD_PROJECT (the credentials name none)")
        return creds, project

    async def close_client(self, client) -> None:
        await client.aio.aclose()

    def generation(self, sample: Sample) -> dict[str, Any]:
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

    def payload(self, png: bytes, prompt: str, gen: dict):
        from google.genai import types

        return [types.Part.from_bytes(data=png, mime_type="image/png"), prompt], _config(gen)

    async def send(self, client, payload) -> str:
        contents, config = payload
        resp = await client.aio.models.generate_content(model=self.options.model, contents=contents, config=config)
        return resp.sdk_http_response.body or "{}"

    def read(self, raw: str) -> Reply:
        """Gemini's REST response (camelCase; snake_case accepted too) into a :class:`Reply`.

        Anything in the body may be of the wrong type: what is not what the API documents reads as absent."""
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError(f"the body is a JSON {type(d).__name__}, not an object")
        usage = _get(d, dict, "usageMetadata", "usage_metadata") or {}
        reply = Reply(model_version=_get(d, str, "modelVersion", "model_version"),
                      response_id=_get(d, str, "responseId", "response_id"),
                      tokens={"prompt_tokens": _get(usage, None, "promptTokenCount", "prompt_token_count") or 0,
                              "output_tokens": _get(usage, None, "candidatesTokenCount", "candidates_token_count") or 0,
                              "thoughts_tokens": _get(usage, None, "thoughtsTokenCount", "thoughts_token_count") or 0})
        feedback = _get(d, dict, "promptFeedback", "prompt_feedback") or {}
        block = _get(feedback, None, "blockReason", "block_reason")
        if block:
            reply.blocked = f"prompt blocked: {str(block)[:100]}"
            return reply
        candidates = _get(d, list, "candidates") or []
        if not candidates or not isinstance(candidates[0], dict):
            reply.has_candidates = False
            return reply
        cand = candidates[0]
        reply.finish = _get(cand, str, "finishReason", "finish_reason") or ""
        parts = [p for p in _get(_get(cand, dict, "content") or {}, list, "parts") or [] if isinstance(p, dict)]
        reply.text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
        for p in parts:
            inline = _get(p, dict, "inlineData", "inline_data")
            if inline and isinstance(inline.get("data"), str) and inline["data"]:
                data = inline["data"]
                reply.image = base64.b64decode(data.replace("-", "+").replace("_", "/") + "=" * (-len(data) % 4))
                break
        return reply

    def failure(self, err: BaseException) -> Failure:
        """What a failed call was: the HTTP status decides whether to retry, whatever the body held."""
        from google.genai import errors

        if not isinstance(err, errors.APIError):
            text = redact(f"{type(err).__name__}: {err}")
            return Failure(None, text, retryable=transport_error(err))
        code = err.code if isinstance(err.code, int) else None
        status = " ".join(str(x) for x in (code, err.status) if x)
        message = err.message if isinstance(err.message, str) else str(err.details)[:200]
        text = redact(f"{type(err).__name__} {status}: {message or err}")
        body = err.details.get("error", err.details) if isinstance(err.details, dict) else None
        details = body.get("details") if isinstance(body, dict) else None
        delay = None
        for item in details if isinstance(details, list) else []:
            if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
                m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(item.get("retryDelay", "")))
                delay = float(m.group(1)) if m else None
        if delay is None:  # a proxy in front of the API may say it the HTTP way
            headers = getattr(getattr(err, "response", None), "headers", None)
            delay = retry_after_seconds(headers.get("retry-after")) if headers is not None else None
        per_day = code == 429 and "PerDay" in str(err.details)
        return Failure(code, text, retryable=code in RETRY_CODES, per_day=per_day, delay=delay)

    def worst_cost(self, size: tuple[int, int], prompt: str) -> float:
        thinking = max(self.options.thinking_budget or 0, 0)
        return self.cost(int(estimate_input_tokens(size, prompt) * 1.5), self.options.max_output_tokens + thinking)

    # -- batch jobs (:mod:`omniseg.inference.batch`) ------------------------------------------------------
    def jobs(self, client):
        from .batch import GeminiJobs

        if getattr(self, "_jobs", None) is None:
            self._jobs = GeminiJobs(client, self.options.model)
        return self._jobs

    def batch_request(self, key: str, png: bytes, prompt: str, gen: dict) -> tuple[tuple, dict]:
        """The inline request (for :meth:`GeminiJobs.create_inline`) and the JSONL line of a file job."""
        from .batch import rest_request

        line = {"key": key, "request": rest_request(png, prompt, _rest_generation(gen))}
        return (key, png, prompt, _config(gen, raw_body=False)), line


def _config(gen: dict[str, Any], raw_body: bool = True):
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
    return types.GenerateContentConfig(should_return_http_response=raw_body or None, **kw)


class Gemini(RemoteSegmenter):
    kind = "gemini"
    version = "2"
    Options = GeminiOptions
    Api = GeminiApi
    default_prompts = DEFAULT_PROMPTS

    def __init__(self, name: str, options: GeminiOptions | None = None):
        super().__init__(name, options)
        note = gemini_catalog.status_note(self.options.model, clock.today())
        if note:
            warnings.warn(f"model {name!r}: {note}", stacklevel=2)


def _get(obj: dict, kind: type | None, *names: str):
    """The first of ``names`` in ``obj``; None when absent or not of ``kind`` (when given)."""
    v = next((obj[n] for n in names if n in obj), None)
    return v if kind is None or isinstance(v, kind) else None

"""Any OpenAI-compatible chat-completions endpoint as a segmenter: the `openai` kind (a second provider).

Open-weight vision-language models served on your own hardware (vLLM, SGLang, Ollama, llama.cpp's
server) and hosted ones behind the same API. The image goes as a PNG data URL with a prompt per
answer form; the answer's form is detected as Gemini's is (:mod:`.answers`), with the coordinate
convention the model uses as an option (``coords``: 0..1000, 0..1, or pixels of the image as sent) and
boxes read as crude masks of their own form. Scheduling, retries (honouring ``retry-after``), the
budget, the answer archive and key redaction are the shared API layer (:mod:`.remote`). The key comes
from the environment variable ``key_env`` names, or none for a local server.
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar, Literal

from pydantic import Field

from ...datasets.base import Sample
from ...errors import OmnisegError
from .frames import RuleOption
from .types import Failure, Price, RemoteOptions, Reply, retry_after_seconds, transport_error
from ...redaction import redact
from .provider import Provider
from .remote import RemoteSegmenter

RETRY_CODES = {408, 409, 429, 500, 502, 503, 504}

PROMPTS = {
    "polygon": (
        "Outline each {target} in this image as a polygon. Answer with JSON only: a list where each entry has the "
        'key "points" holding [[x, y], ...] vertices and the key "label". If there is no {target}, answer [].'
    ),
    "box": (
        "Find each {target} in this image. Answer with JSON only: a list where each entry has the key \"bbox_2d\" "
        'holding [x1, y1, x2, y2] and the key "label". If there is no {target}, answer [].'
    ),
}


class OpenAIOptions(RemoteOptions):
    model: str = Field(description="the model name the endpoint serves, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    base_url: str = Field("https://api.openai.com/v1", description="the endpoint up to /v1 (a local server: "
                                                                   "http://localhost:8000/v1)")
    key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key; null for a "
                                                              "local server without one")
    mode: Literal["polygon", "box"] = Field("polygon", description="the prompt family: polygons, or boxes (crude masks)")
    coords: Literal["norm1000", "norm1", "pixels", "model-pixels"] = Field(
        "norm1000", description="the model's coordinate convention: 0..1000 (Qwen3-VL), 0..1, pixels of the image as "
                                "sent, or model-pixels: pixels of the model's own resized input (Qwen2.5-VL; the "
                                "rule is resize_rule); recorded with each row")
    resize_rule: RuleOption = Field("qwen2.5-vl", description="with coords: model-pixels, how the model's processor "
                                    "resizes the image: qwen2.5-vl (the checkpoints' processor: vLLM, SGLang, "
                                    "transformers), ollama (under a megapixel), or {factor, min_pixels, max_pixels}")
    seg_codebook: str | None = Field(None, description="PaliGemma's mask codebook (big_vision's vae-oid.npz): with it, "
                                     "<seg> tokens are drawn as masks; without it they are unsupported_format")
    temperature: float | None = Field(0.0, ge=0, le=2)
    price: Price = Field(Price(input_per_mtok=0.0, output_per_mtok=0.0), description="USD per million tokens "
                                                                                     "(0 for your own server)")


class ApiHttpError(Exception):
    """A non-200 answer: its status, the (redacted) message and the server's retry-after."""

    def __init__(self, code: int, message: str, retry_after: float | None):
        super().__init__(f"HTTP {code}: {message}")
        self.code, self.message, self.retry_after = code, message, retry_after


class OpenAIApi(Provider):
    """The chat-completions wire format: the image as a PNG data URL, the answer in the first choice's message."""

    default_endpoint = "https://api.openai.com/v1"

    def __init__(self, name: str, options: OpenAIOptions):
        super().__init__(name, options)
        self.key_variables = (options.key_env,) if options.key_env else ()  # for the key and redaction

    def make_client(self, key: str | None):
        import httpx2  # the HTTP client google-genai already brings (httpx's successor)

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.AsyncClient(base_url=self.options.base_url.rstrip("/") + "/", headers=headers,
                                  timeout=self.options.timeout_s, trust_env=False)

    async def close_client(self, client) -> None:
        await client.aclose()

    def generation(self, sample: Sample) -> dict[str, Any]:
        o = self.options
        return {k: v for k, v in (("max_tokens", o.max_output_tokens), ("temperature", o.temperature),
                                  ("seed", o.seed)) if v is not None}

    def payload(self, png: bytes, prompt: str, gen: dict) -> bytes:
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        body = {"model": self.options.model, **gen, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]}]}
        return json.dumps(body).encode()

    async def send(self, client, payload: bytes) -> str:
        resp = await client.post("chat/completions", content=payload, headers={"Content-Type": "application/json"})
        if resp.status_code != 200:  # the status code decides; the body (any JSON, or none) only explains
            raise ApiHttpError(resp.status_code, redact(error_message(resp.text)),
                               retry_after_seconds(resp.headers.get("retry-after")))
        return resp.text

    def read(self, raw: str) -> Reply:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError(f"the body is a JSON {type(d).__name__}, not an object")
        usage = d.get("usage") if isinstance(d.get("usage"), dict) else {}
        details = usage.get("completion_tokens_details") if isinstance(usage.get("completion_tokens_details"), dict) else {}
        completion, reasoning = usage.get("completion_tokens") or 0, details.get("reasoning_tokens") or 0
        counted = all(isinstance(v, int) and not isinstance(v, bool) for v in (completion, reasoning))
        # completion_tokens includes reasoning: output is the rest (a count that is no integer books an unknown cost)
        reply = Reply(model_version=_text(d.get("model")), response_id=_text(d.get("id")),
                      tokens={"prompt_tokens": usage.get("prompt_tokens") or 0,
                              "output_tokens": completion - reasoning if counted else completion,
                              "thoughts_tokens": reasoning})
        choices = d.get("choices") if isinstance(d.get("choices"), list) else []
        if not choices or not isinstance(choices[0], dict):
            reply.has_candidates = False
            return reply
        choice = choices[0]
        finish = _text(choice.get("finish_reason")) or ""
        reply.finish = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}.get(finish, finish.upper())
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts
            content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        reply.text = content if isinstance(content, str) else ""
        if finish == "content_filter" and not content:
            reply.blocked = "answer withheld by the endpoint's content filter"
        return reply

    def failure(self, err: BaseException) -> Failure:
        if isinstance(err, ApiHttpError):
            return Failure(err.code, redact(str(err)), retryable=err.code in RETRY_CODES, delay=err.retry_after)
        return Failure(None, redact(f"{type(err).__name__}: {err}"), retryable=transport_error(err))


class OpenAICompatible(RemoteSegmenter):
    kind = "openai"
    version = "1"
    Options = OpenAIOptions
    Api = OpenAIApi
    default_prompts: ClassVar[dict[str, str]] = PROMPTS

    def __init__(self, name: str, options: OpenAIOptions | None = None):
        super().__init__(name, options)
        if self.options.seg_codebook:  # a wrong file is said now, not as a failed row per answer
            from . import paligemma_masks

            try:
                paligemma_masks.load(self.options.seg_codebook)
            except OmnisegError as e:
                raise OmnisegError(f"model {name!r}: option seg_codebook: {e}") from None

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        if self.options.seg_codebook:  # the weights, wherever the file lies
            from . import paligemma_masks

            sig["options"]["seg_codebook"] = paligemma_masks.digest(self.options.seg_codebook)
        return sig


def _text(v: object) -> str | None:
    return v if isinstance(v, str) else None


def error_message(body: str) -> str:
    """The message of an error body: ``{"error": {"message"}}``, ``{"error": "..."}``, ``{"message"}``, or the
    start of whatever else came (a list, a bare string, HTML, nothing)."""
    try:
        d = json.loads(body)
    except (ValueError, RecursionError):
        return " ".join(body.split())[:200] or "(empty body)"
    err = d.get("error", d) if isinstance(d, dict) else d
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"][:500]
    return (err if isinstance(err, str) else json.dumps(err))[:200]

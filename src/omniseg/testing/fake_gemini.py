"""A fake Gemini REST server on 127.0.0.1 for tests and benchmarks (never used by `omniseg run` itself).

It speaks the real wire format: ``POST /{version}/models/{model}:generateContent`` with the key in
``x-goog-api-key``; requests may use camelCase or snake_case keys (``inlineData``/``inline_data``,
``mimeType``/``mime_type``); responses are camelCase with ``candidates``, ``usageMetadata``,
``modelVersion`` and ``responseId``, errors are ``{"error": {code, status, message, details}}``.
The real google-genai client reaches it through ``HttpOptions(base_url=server.url)``.

What it answers is scripted per request by a ``behaviour`` callable (request -> :class:`Reply`);
:mod:`.gemini_answers` builds each kind of answer seen in the wild and the behaviours (``live``,
``chaos``) that choose among them; they are re-exported here.
"""

from __future__ import annotations

import hashlib
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from .fake_http import FakeServer, ParseError, decode_image, serve
from .gemini_answers import (  # noqa: F401  (re-exported for tests and benchmarks)
    IMAGE_SIZES,
    LIVE_MODELS,
    MALFORMED,
    TODAY,
    Reply,
    Request,
    _get,
    answer,
    blocked,
    box_and_crop,
    bright_truth,
    chaos,
    error,
    good_answer,
    image_answer,
    image_size,
    json_masks_text,
    live,
    not_found,
    png_bytes,
    polygon_entries,
    polygons_text,
    safety_candidate,
    seg_tokens_text,
    served_model,
    text_answer,
    usage,
)


class FakeGemini(FakeServer):
    """The Gemini REST API on 127.0.0.1: ``generateContent`` and ``models.list``; ``log`` lists every answer."""

    def __init__(self, behaviour: Callable[[Request], Reply] | None = None, port: int = 0, today: str = TODAY):
        super().__init__(behaviour or good_answer, port)
        self.today = today  # models.list lists the models served on this day

    def parse(self, h: BaseHTTPRequestHandler, body: dict) -> tuple[Request, bytes]:
        path = h.path.split("?")[0].strip("/")
        try:
            version, rest = path.split("/models/", 1)
            model, method = rest.rsplit(":", 1)
        except ValueError:
            raise ParseError(error(400, "INVALID_ARGUMENT", f"bad request path {h.path}")) from None
        if method != "generateContent":
            raise ParseError(error(404, "NOT_FOUND", f"method {method} not served by the fake"))
        image, image_bytes, prompt = None, b"", []
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                inline = _get(part, "inlineData", "inline_data")
                if inline and image is None:
                    try:  # the SDK sends URL-safe base64; the API takes either alphabet
                        image, image_bytes = decode_image(_get(inline, "data") or "")
                    except Exception:
                        raise ParseError(error(400, "INVALID_ARGUMENT", "Unable to process input image.")) from None
                if "text" in part:
                    prompt.append(part["text"])
        return Request(model, version, body, image, hashlib.sha256(image_bytes).hexdigest(), "\n".join(prompt), 0,
                       h.headers.get("x-goog-api-key")), image_bytes

    def finish(self, reply: Reply, req: Request) -> None:
        reply.body.setdefault("modelVersion", req.model)  # the live API reports the model that answered

    def get(self, h: BaseHTTPRequestHandler) -> None:
        """``GET /{version}/models``: the models served today, two per page (so clients must page)."""
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(h.path)
        if not url.path.rstrip("/").endswith("/models"):
            return self.send(h, error(404, "NOT_FOUND", f"no route {url.path}"))
        if not h.headers.get("x-goog-api-key"):
            return self.send(h, error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."))
        names = sorted(m for m in LIVE_MODELS if served_model(m, self.today) == m)
        start = int((parse_qs(url.query).get("pageToken") or ["0"])[0])
        body: dict[str, Any] = {"models": [{"name": f"models/{m}", "displayName": m, "version": "001",
                                            "supportedGenerationMethods": ["generateContent", "countTokens"]}
                                           for m in names[start:start + 2]]}
        if start + 2 < len(names):
            body["nextPageToken"] = str(start + 2)
        with self._lock:
            self.log.append({"kind": "list_models", "status": 200, "start": time.monotonic(), "end": time.monotonic(),
                             "image_sha": "", "attempt": 1, "model": "", "version": url.path.split("/")[1]})
        self.send(h, Reply(200, body, kind="list_models"))


def main(argv: list[str] | None = None) -> None:
    """Serve answers after a fixed delay until interrupted (used by scripts/bench_api.py).

    Well-formed answers in the form the prompt asks for; with --live, the forms the live API gives
    today per model name (gemini_answers.live), for trying `omniseg probe` and `omniseg run` offline."""
    serve(FakeGemini, good_answer, main.__doc__, argv, live=lambda delay: live(delay=delay))


if __name__ == "__main__":
    main()

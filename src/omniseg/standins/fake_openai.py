"""A fake OpenAI-compatible server on 127.0.0.1 (``POST /v1/chat/completions``) for tests and benchmarks.

It speaks the wire format open-model servers (vLLM, SGLang, Ollama, llama.cpp) and hosted endpoints share:
the image arrives as a data URL in the user message, the answer is ``choices[0].message.content`` with
``finish_reason`` and ``usage``; errors are ``{"error": {"message", "type", "code"}}`` with a
``retry-after`` header on 429. What it answers is chosen per request by a ``behaviour`` callable;
the builders below make polygons and boxes in each coordinate convention from the truth.
"""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler
from typing import Callable

import numpy as np

from .fake_http import FakeServer, ParseError, Reply, Request, decode_image, serve
from .gemini_answers import bright_truth, polygon_entries


def usage(prompt: int = 300, completion: int = 120) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(text: str, finish: str = "stop", **u) -> Reply:
    return Reply(200, {"id": "chatcmpl-" + hashlib.sha1(text.encode()).hexdigest()[:12], "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": finish}], "usage": usage(**u)}, kind="ok")


def error(code: int, message: str = "", retry_after: float | None = None) -> Reply:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    kind = {429: "rate_limit_error", 401: "authentication_error"}.get(code, "server_error" if code >= 500 else "invalid_request_error")
    return Reply(code, {"error": {"message": message or kind, "type": kind, "code": code}}, kind=f"http{code}", headers=headers)


def to_convention(entries: list[dict], key: str, coords: str, size: tuple[int, int]) -> list[dict]:
    """Polygons traced in 0..1000 (gemini_answers.polygon_entries) in another coordinate convention."""
    w, h = size
    conv = {"norm1000": lambda x, y: [x, y], "norm1": lambda x, y: [round(x / 1000, 4), round(y / 1000, 4)],
            "pixels": lambda x, y: [round(x / 1000 * w, 1), round(y / 1000 * h, 1)]}[coords]
    return [{key: [conv(x, y) for x, y in e[key]], "label": e["label"]} for e in entries]


def polygons(mask: np.ndarray, coords: str = "norm1000", key: str = "points") -> str:
    h, w = mask.shape
    if coords == "norm1000":
        return json.dumps(polygon_entries(mask, key))
    return json.dumps(to_convention(polygon_entries(mask, key, tolerance=0.5), key, coords, (w, h)))


def boxes(mask: np.ndarray, coords: str = "norm1000") -> str:
    """One bbox_2d [x1, y1, x2, y2] around the mask, in the convention."""
    if not mask.any():
        return "[]"
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    scale = {"norm1000": (1000 / w, 1000 / h), "norm1": (1 / w, 1 / h), "pixels": (1, 1)}[coords]
    box = [round(float(x0 * scale[0]), 4), round(float(y0 * scale[1]), 4), round(float(x1 * scale[0]), 4),
           round(float(y1 * scale[1]), 4)]
    return json.dumps([{"bbox_2d": box, "label": "target"}])


def good_answer(req: Request, truth: Callable[[np.ndarray], np.ndarray] = bright_truth, coords: str = "norm1000") -> Reply:
    """What a well-behaved open model answers: boxes when the prompt asks for bbox_2d, else polygons."""
    m = truth(req.image)
    r = completion(boxes(m, coords) if "bbox_2d" in req.prompt else polygons(m, coords))
    return r


MALFORMED = {
    "prose": lambda req: completion("I can see a polyp in the lower left of the image."),
    # cut at the token cap inside a repeated list: the complete entries before the cut are kept
    "truncated": lambda req: completion(json.dumps(polygon_entries(bright_truth(req.image), "points") * 2)[:-40],
                                        finish="length"),
    "refused": lambda req: Reply(200, {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                                                             "finish_reason": "content_filter"}], "usage": usage()}),
}


def chaos(p429: float = 0.1, p5xx: float = 0.05, p_malformed: float = 0.05, seed: int = 0,
          truth: Callable[[np.ndarray], np.ndarray] = bright_truth, delay: float = 0.0,
          coords: str = "norm1000") -> Callable[[Request], Reply]:
    """Random (but reproducible per image and attempt) 429s with retry-after, 5xx and malformed answers."""

    def unit(*parts) -> float:
        return int(hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()[:8], 16) / 16**8

    def behave(req: Request) -> Reply:
        u, bad = unit(req.image_sha, req.attempt), unit("bad", req.image_sha)
        if u < p429:
            r = error(429, "Rate limit reached", retry_after=0.05)
        elif u < p429 + p5xx:
            r = error(503 if u < p429 + p5xx / 2 else 500, "The server is overloaded")
        elif bad < p_malformed:  # the same images are malformed on every attempt
            kind = sorted(MALFORMED)[int(bad / p_malformed * len(MALFORMED)) % len(MALFORMED)]
            r = MALFORMED[kind](req)
            r.kind = kind
        else:
            r = good_answer(req, truth, coords)
        r.delay = delay
        return r

    return behave


class FakeOpenAI(FakeServer):
    """``POST /v1/chat/completions`` on 127.0.0.1; ``log`` lists every answer."""

    def __init__(self, behaviour: Callable[[Request], Reply] | None = None, port: int = 0, key: str | None = None):
        super().__init__(behaviour or good_answer, port)
        self.key = key  # when set, requests without this bearer key are refused (401)

    def parse(self, h: BaseHTTPRequestHandler, body: dict) -> tuple[Request, bytes]:
        if not h.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
            raise ParseError(error(404, f"no route {h.path}"))
        auth = h.headers.get("Authorization") or ""
        key = auth.removeprefix("Bearer ") or None
        if self.key is not None and key != self.key:
            raise ParseError(error(401, "Incorrect API key provided."))
        image, image_bytes, prompt = None, b"", []
        for message in body.get("messages", []):
            content = message.get("content")
            for part in content if isinstance(content, list) else [{"type": "text", "text": content or ""}]:
                if part.get("type") == "image_url" and image is None:
                    url = (part.get("image_url") or {}).get("url", "")
                    try:
                        image, image_bytes = decode_image(url.split(",", 1)[1])
                    except Exception:
                        raise ParseError(error(400, "Invalid image in the request.")) from None
                elif part.get("type") == "text":
                    prompt.append(part.get("text", ""))
        if image is None:
            raise ParseError(error(400, "The request holds no image."))
        return Request(body.get("model", ""), "v1", body, image, hashlib.sha256(image_bytes).hexdigest(),
                       "\n".join(prompt), 0, key), image_bytes

    def finish(self, reply: Reply, req: Request) -> None:
        reply.body.setdefault("model", req.model)
        reply.body.setdefault("object", "chat.completion")


def main(argv: list[str] | None = None) -> None:
    """Serve well-formed answers after a fixed delay until interrupted (--stdin: until stdin closes, as
    scripts/bench_api.py runs it)."""
    serve(FakeOpenAI, good_answer, main.__doc__, argv)


if __name__ == "__main__":
    main()

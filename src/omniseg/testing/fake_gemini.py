"""A fake Gemini REST server on 127.0.0.1 for tests and benchmarks (never used by `omniseg run` itself).

It speaks the real wire format: ``POST /{version}/models/{model}:generateContent`` with the key in
``x-goog-api-key``; requests may use camelCase or snake_case keys (``inlineData``/``inline_data``,
``mimeType``/``mime_type``); responses are camelCase with ``candidates``, ``usageMetadata``,
``modelVersion`` and ``responseId``, errors are ``{"error": {code, status, message, details}}``.
The real google-genai client reaches it through ``HttpOptions(base_url=server.url)``.

What it answers is scripted per request by a ``behaviour`` callable (request -> :class:`Reply`);
the helpers below build each kind of answer seen in the wild.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np
from PIL import Image


@dataclass
class Request:
    model: str
    version: str
    body: dict
    image: np.ndarray | None  # decoded RGB of the first inline image
    image_sha: str
    prompt: str
    attempt: int  # 1 for the first request with this content, 2 for its first retry, ...
    api_key: str | None

    @property
    def generation(self) -> dict:
        return self.body.get("generationConfig") or self.body.get("generation_config") or {}

    @property
    def wants_image(self) -> bool:
        mods = self.generation.get("responseModalities") or self.generation.get("response_modalities") or []
        return any(str(m).upper() == "IMAGE" for m in mods)


@dataclass
class Reply:
    status: int = 200
    body: dict = field(default_factory=dict)
    delay: float = 0.0
    kind: str = "ok"  # a label for the log: what the server chose to answer
    drop: bool = False  # close the connection without answering


def _get(d: dict, *names: str):
    for n in names:
        if n in d:
            return d[n]
    return None


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def usage(prompt: int = 300, output: int = 120, thoughts: int = 0) -> dict:
    return {"promptTokenCount": prompt, "candidatesTokenCount": output, "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + output + thoughts,
            "promptTokensDetails": [{"modality": "IMAGE", "tokenCount": 258}, {"modality": "TEXT", "tokenCount": prompt - 258}]}


def answer(parts: list[dict], finish: str = "STOP", model_version: str = "gemini-2.5-flash-fake-001", **u) -> Reply:
    return Reply(200, {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage(**u), "modelVersion": model_version,
        "responseId": hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16],
    })


def text_answer(text: str, finish: str = "STOP", **kw) -> Reply:
    r = answer([{"text": text}], finish, **kw)
    r.kind = "text"
    return r


def box_and_crop(mask: np.ndarray) -> tuple[list[int], str] | None:
    """The documented native-segmentation entry of one mask: box_2d (0..1000) and a PNG crop."""
    if not mask.any():
        return None
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = [int(np.floor(y0 / h * 1000)), int(np.floor(x0 / w * 1000)), int(np.ceil(y1 / h * 1000)), int(np.ceil(x1 / w * 1000))]
    by0, bx0 = int(box[0] * h / 1000), int(box[1] * w / 1000)
    by1, bx1 = max(int(round(box[2] * h / 1000)), by0 + 1), max(int(round(box[3] * w / 1000)), bx0 + 1)
    crop = (mask[by0:by1, bx0:bx1] * 255).astype(np.uint8)
    # the model's PNG size is undocumented: send it at another size on purpose
    crop_img = Image.fromarray(crop).resize((max(crop.shape[1] // 2, 1), max(crop.shape[0] // 2, 1)), Image.BILINEAR)
    buf = io.BytesIO()
    crop_img.save(buf, format="PNG")
    return box, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def json_masks_text(masks: list[np.ndarray], label: str = "target", fence: bool = True) -> str:
    entries = []
    for m in masks:
        bc = box_and_crop(m)
        if bc:
            entries.append({"box_2d": bc[0], "mask": bc[1], "label": label})
    text = json.dumps(entries, indent=1)
    return f"```json\n{text}\n```" if fence else text


def polygons_text(mask: np.ndarray, wrap: bool = False) -> str:
    """A coarse outline (the bounding polygon of the mask's rows) in 0..1000 [x, y] points."""
    h, w = mask.shape
    rows = [y for y in range(h) if mask[y].any()]
    if not rows:
        return "[]"
    left, right = [], []
    for y in rows[:: max(len(rows) // 24, 1)] + [rows[-1]]:
        xs = np.nonzero(mask[y])[0]
        left.append([round(xs.min() / w * 1000), round(y / h * 1000)])
        right.append([round((xs.max() + 1) / w * 1000), round(y / h * 1000)])
    poly = left + right[::-1]
    payload: Any = {"boxes": [{"points": poly, "label": "target"}]} if wrap else [{"points": poly, "label": "target"}]
    return json.dumps(payload)


def image_answer(mask: np.ndarray, size: tuple[int, int] = (1024, 1024), **kw) -> Reply:
    img = Image.fromarray((mask * 255).astype(np.uint8)).resize(size, Image.NEAREST).convert("RGB")
    data = base64.b64encode(png_bytes(np.asarray(img))).decode()
    r = answer([{"inlineData": {"mimeType": "image/png", "data": data}}], output=1290, **kw)
    r.kind = "image"
    return r


def error(code: int, status: str, message: str = "", retry_delay: str | None = None, per_day: bool = False) -> Reply:
    details: list[dict] = []
    if code == 429:
        quota = "GenerateRequestsPerDayPerProjectPerModel" if per_day else "GenerateRequestsPerMinutePerProjectPerModel"
        details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota}]})
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return Reply(code, {"error": {"code": code, "status": status, "message": message or status, "details": details}},
                 kind=f"http{code}")


def blocked(reason: str = "SAFETY") -> Reply:
    return Reply(200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": usage(output=0),
                       "modelVersion": "gemini-2.5-flash-fake-001"}, kind="blocked")


def safety_candidate() -> Reply:
    return Reply(200, {"candidates": [{"finishReason": "SAFETY", "index": 0,
                                       "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]}],
                       "usageMetadata": usage(output=0), "modelVersion": "gemini-2.5-flash-fake-001"}, kind="safety")


def bright_truth(image: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for 'what the model sees': pixels brighter than mean + std."""
    grey = image.astype(np.float32).mean(axis=2)
    return grey > grey.mean() + grey.std()


#: output sizes an image model returns for each requested aspect ratio (Gemini's published table)
IMAGE_SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
               "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}


def good_answer(req: Request, truth: Callable[[np.ndarray], np.ndarray] = bright_truth) -> Reply:
    """A well-formed answer in the format the request asks for."""
    m = truth(req.image)
    if req.wants_image:
        cfg = req.generation.get("imageConfig") or req.generation.get("image_config") or {}
        ratio = cfg.get("aspectRatio") or cfg.get("aspect_ratio") or "1:1"
        return image_answer(m, IMAGE_SIZES.get(ratio, (1024, 1024)))
    if "polygon" in req.prompt.lower():
        r = text_answer(polygons_text(m))
    else:
        r = text_answer(json_masks_text([m]))
    r.kind = "ok"
    return r


MALFORMED = {
    "prose": lambda req: text_answer("I can see a polyp in the lower left of the image, about 2 cm wide."),
    "truncated": lambda req: text_answer(json_masks_text([bright_truth(req.image)] * 2, fence=False)[:-60], finish="MAX_TOKENS"),
    "seg_tokens": lambda req: text_answer(json.dumps([{"box_2d": [100, 100, 500, 500], "mask": "<start_of_mask><seg_4><seg_77>", "label": "x"}])),
}


def chaos(p429: float = 0.1, p503: float = 0.05, p_malformed: float = 0.05, seed: int = 0,
          truth: Callable[[np.ndarray], np.ndarray] = bright_truth, delay: float = 0.0) -> Callable[[Request], Reply]:
    """Random (but reproducible per image and attempt) 429s, 503s and malformed answers."""

    def behave(req: Request) -> Reply:
        u = int(hashlib.sha256(f"{seed}:{req.image_sha}:{req.attempt}".encode()).hexdigest()[:8], 16) / 16**8
        bad = int(hashlib.sha256(f"{seed}:bad:{req.image_sha}".encode()).hexdigest()[:8], 16) / 16**8
        if u < p429:
            r = error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="0.05s")
        elif u < p429 + p503:
            r = error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        elif bad < p_malformed:  # the same images are malformed on every attempt
            kind = sorted(MALFORMED)[int(bad / p_malformed * len(MALFORMED)) % len(MALFORMED)]
            r = MALFORMED[kind](req)
            r.kind = kind
        else:
            r = good_answer(req, truth)
        r.delay = delay
        return r

    return behave


class FakeGemini:
    """Threaded HTTP server; use as a context manager. ``log`` lists every request answered."""

    def __init__(self, behaviour: Callable[[Request], Reply] | None = None, port: int = 0):
        self.behaviour = behaviour or good_answer
        self.log: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                fake._handle(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients that hang up are part of the tests
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeGemini":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.log:
            out[e["kind"]] = out.get(e["kind"], 0) + 1
        return out

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic()
        try:
            raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            path = h.path.split("?")[0].strip("/")
            try:
                version, rest = path.split("/models/", 1)
                model, method = rest.rsplit(":", 1)
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._send(h, error(400, "INVALID_ARGUMENT", f"bad request path {h.path}"))
            if method != "generateContent":
                return self._send(h, error(404, "NOT_FOUND", f"method {method} not served by the fake"))
            image, image_bytes, prompt = None, b"", []
            for content in body.get("contents", []):
                for part in content.get("parts", []):
                    inline = _get(part, "inlineData", "inline_data")
                    if inline and image is None:
                        # the SDK sends URL-safe base64; the API takes either alphabet
                        image_bytes = base64.urlsafe_b64decode((_get(inline, "data") or "").replace("+", "-").replace("/", "_"))
                        try:
                            image = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
                        except Exception:
                            return self._send(h, error(400, "INVALID_ARGUMENT", "Unable to process input image."))
                    if "text" in part:
                        prompt.append(part["text"])
            sha = hashlib.sha256(image_bytes + "\n".join(prompt).encode()).hexdigest()
            with self._lock:
                self.attempts[sha] = self.attempts.get(sha, 0) + 1
                attempt = self.attempts[sha]
            req = Request(model, version, body, image, hashlib.sha256(image_bytes).hexdigest(), "\n".join(prompt),
                          attempt, h.headers.get("x-goog-api-key"))
            reply = self.behaviour(req)
            if reply.delay:
                time.sleep(reply.delay)
            with self._lock:
                self.log.append({"image_sha": req.image_sha, "attempt": attempt, "kind": reply.kind,
                                 "status": reply.status, "model": model, "version": version,
                                 "start": started, "end": time.monotonic()})
            self._send(h, reply)
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.drop:
            h.close_connection = True
            h.connection.close()
            return
        data = json.dumps(reply.body).encode()
        h.send_response(reply.status)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    """Serve well-formed answers after a fixed delay until interrupted (used by scripts/bench_gemini.py)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds before each answer")
    args = ap.parse_args(argv)

    def behave(req: Request) -> Reply:
        r = good_answer(req)
        r.delay = args.delay
        return r

    with FakeGemini(behave, port=args.port) as srv:
        print(srv.url, flush=True)
        try:
            sys.stdin.read()  # serve until the parent closes our stdin
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

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

import base64
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np
from PIL import Image

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


class FakeGemini:
    """Threaded HTTP server; use as a context manager. ``log`` lists every request answered."""

    def __init__(self, behaviour: Callable[[Request], Reply] | None = None, port: int = 0, today: str = TODAY):
        self.behaviour = behaviour or good_answer
        self.today = today  # models.list lists the models served on this day
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

            def do_GET(self):
                fake._list_models(self)

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
            if reply.status == 200 and isinstance(reply.body, dict):
                reply.body.setdefault("modelVersion", model)  # the live API reports the model that answered
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

    def _list_models(self, h: BaseHTTPRequestHandler) -> None:
        """``GET /{version}/models``: the models served today, two per page (so clients must page)."""
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(h.path)
        if not url.path.rstrip("/").endswith("/models"):
            return self._send(h, error(404, "NOT_FOUND", f"no route {url.path}"))
        if not h.headers.get("x-goog-api-key"):
            return self._send(h, error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."))
        names = sorted(m for m in LIVE_MODELS if served_model(m, self.today) == m)
        start = int((parse_qs(url.query).get("pageToken") or ["0"])[0])
        page = names[start:start + 2]
        body: dict[str, Any] = {"models": [{"name": f"models/{m}", "displayName": m, "version": "001",
                                            "supportedGenerationMethods": ["generateContent", "countTokens"]}
                                           for m in page]}
        if start + 2 < len(names):
            body["nextPageToken"] = str(start + 2)
        with self._lock:
            self.log.append({"kind": "list_models", "status": 200, "start": time.monotonic(), "end": time.monotonic(),
                             "image_sha": "", "attempt": 1, "model": "", "version": url.path.split("/")[1]})
        self._send(h, Reply(200, body, kind="list_models"))

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
    """Serve answers after a fixed delay until interrupted (used by scripts/bench_gemini.py).

    Well-formed answers in the form the prompt asks for; with --live, the forms the live API gives
    today per model name (gemini_answers.live), for trying `omniseg probe` and `omniseg run` offline."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds before each answer")
    ap.add_argument("--live", action="store_true", help="answer as the live API does today, per model name")
    args = ap.parse_args(argv)
    lively = live(delay=args.delay)

    def behave(req: Request) -> Reply:
        if args.live:
            return lively(req)
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

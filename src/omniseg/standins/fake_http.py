"""The threaded HTTP server both fake providers share (fake_gemini, fake_openai), and its request record.

A provider's fake parses its own wire format into a :class:`Request`; the server counts attempts per
content, keeps requests in flight and their peak, delays, drops connections, logs every answer and
sends the :class:`Reply` a ``behaviour`` chose. Tests read ``log``, ``kinds()`` and ``max_in_flight``.
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
    image: np.ndarray | None  # decoded RGB of the first image
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
    body: Any = field(default_factory=dict)  # any JSON value: services also answer lists, strings, nothing
    delay: float = 0.0
    kind: str = "ok"  # a label for the log: what the server chose to answer
    drop: bool = False  # close the connection without answering
    headers: dict = field(default_factory=dict)  # e.g. retry-after (odd ones too: "1.5.0", an HTTP date)
    raw: bytes | None = None  # sent as is instead of the JSON of ``body`` (HTML error pages, deep nesting)


class ParseError(Exception):
    """A request the fake answers with an error reply (bad path, unreadable image)."""

    def __init__(self, reply: Reply):
        self.reply = reply


def decode_image(data: str) -> tuple[np.ndarray, bytes]:
    """RGB pixels and raw bytes of base64 image data, either alphabet, padded or not."""
    raw = base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_") + "=" * (-len(data) % 4))
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")), raw


class FakeServer:
    """Use as a context manager; subclasses implement :meth:`parse` (and may answer GETs)."""

    def __init__(self, behaviour: Callable[[Request], Reply], port: int = 0):
        self.behaviour = behaviour
        self.log: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified when the last request in progress ends
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                if not fake.post(self):
                    fake.handle(self)

            def do_GET(self):
                fake.get(self)

            def do_DELETE(self):
                fake.delete(self)

        class Server(ThreadingHTTPServer):
            # the listen backlog, read when the socket starts listening (setting it on the instance is too late):
            # with the default 5, a sixth connection opened at once waits a second for its SYN to be resent
            request_queue_size = 256
            daemon_threads = True

            def handle_error(self, request, client_address):  # clients that hang up are part of the tests
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # shutdown() waits for the serving loop's next look at its flag: every 0.5 s by default, half a second lost
        # at the end of each test that starts a server
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
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

    # -- for subclasses ---------------------------------------------------------------------------
    def parse(self, h: BaseHTTPRequestHandler, body: dict) -> tuple[Request, bytes]:
        """The request (attempt left 0) and the image bytes; raise :class:`ParseError` to answer an error."""
        raise NotImplementedError

    def finish(self, reply: Reply, req: Request) -> None:
        """Last touches to a reply before it is sent (e.g. the model that answered)."""

    def get(self, h: BaseHTTPRequestHandler) -> None:
        self.send(h, Reply(404, {"error": {"code": 404, "message": f"no route {h.path}"}}, kind="http404"))

    def post(self, h: BaseHTTPRequestHandler) -> bool:
        """Answer a POST that is not a model request (batch jobs, uploads); False to handle it as one."""
        return False

    def delete(self, h: BaseHTTPRequestHandler) -> None:
        self.send(h, Reply(404, {"error": {"code": 404, "message": f"no route {h.path}"}}, kind="http404"))

    # -- the loop ---------------------------------------------------------------------------------
    def answer(self, req: Request, image_bytes: bytes) -> Reply:
        """The behaviour's reply to a parsed request, its attempt counted by content."""
        sha = hashlib.sha256(image_bytes + req.prompt.encode()).hexdigest()
        with self._lock:
            self.attempts[sha] = self.attempts.get(sha, 0) + 1
            req.attempt = self.attempts[sha]
        reply = self.behaviour(req)
        if reply.status == 200 and isinstance(reply.body, dict) and reply.raw is None:
            self.finish(reply, req)
        return reply

    def record(self, req: Request, reply: Reply, started: float, **extra) -> None:
        with self._lock:
            self.log.append({"image_sha": req.image_sha, "attempt": req.attempt, "kind": reply.kind,
                             "status": reply.status, "model": req.model, "version": req.version,
                             "start": started, "end": time.monotonic(), **extra})

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic()
        try:
            raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            try:
                req, image_bytes = self.parse(h, json.loads(raw or b"{}"))
            except ParseError as e:
                return self.send(h, e.reply)
            except ValueError:
                return self.send(h, Reply(400, {"error": {"code": 400, "message": "the body is not JSON"}}, kind="http400"))
            reply = self.answer(req, image_bytes)
            if reply.delay:  # the answer leaves `delay` s after the request came, as a service's latency includes its work
                time.sleep(max(0.0, reply.delay - (time.monotonic() - started)))
            self.record(req, reply, started, path=h.path.split("?")[0])
            self.send(h, reply)
        finally:
            with self._lock:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._settled.notify_all()

    def settle(self, timeout: float = 60.0) -> None:
        """Return once no request is in progress: one that a killed client sent is logged when its answer leaves,
        which may be after the client died (a test that counts what was served before a kill waits for this)."""
        with self._settled:
            if not self._settled.wait_for(lambda: self.in_flight == 0, timeout):
                raise TimeoutError(f"the fake server still had {self.in_flight} request(s) in progress after {timeout} s")

    @staticmethod
    def send(h: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.drop:
            h.close_connection = True
            h.connection.close()
            return
        data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        h.send_response(reply.status)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            h.send_header(k, str(v))
        h.end_headers()
        h.wfile.write(data)


def serve(server_cls, answers: Callable[[Request], Reply], doc: str, argv: list[str] | None = None,
          live: Callable[[float], Callable[[Request], Reply]] | None = None, usage: str = "") -> None:
    """Command line of a fake server: answer after --delay seconds, print the URL (and ``usage``, how to point
    omniseg at it), serve until interrupted (Ctrl-C or SIGTERM), or with --stdin until its stdin closes."""
    import argparse
    import signal
    import sys

    ap = argparse.ArgumentParser(description=doc, epilog=usage.replace("{url}", "URL"),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    ap.add_argument("--delay", type=float, default=1.0, help="seconds before each answer")
    ap.add_argument("--stdin", action="store_true", help="stop when stdin closes (for a parent process that owns it)")
    if live is not None:
        ap.add_argument("--live", action="store_true", help="answer as the live API does today, per model name")
    args = ap.parse_args(argv)
    chosen = live(args.delay) if getattr(args, "live", False) else None

    def behave(req: Request) -> Reply:
        if chosen is not None:
            return chosen(req)
        r = answers(req)
        r.delay = args.delay
        return r

    with server_cls(behave, port=args.port) as srv:
        print(srv.url, flush=True)
        if usage:
            print(usage.format(url=srv.url), file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            if args.stdin:
                sys.stdin.read()  # the parent closes it to stop the server
            else:
                threading.Event().wait()
        except (KeyboardInterrupt, SystemExit):
            pass

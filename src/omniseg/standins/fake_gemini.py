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
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from .fake_batch import FakeBatch
from .fake_http import FakeServer, ParseError, decode_image, serve
from .gemini_answers import LIVE_MODELS, TODAY, Reply, Request, error, field, good_answer, live, served_model


class FakeGemini(FakeServer):
    """The Gemini REST API on 127.0.0.1: ``generateContent``, ``models.list``, batch jobs and files
    (:mod:`.fake_batch`, as ``.batch``), and Vertex AI's URL shape with bearer tokens; ``log`` lists
    every answer."""

    def __init__(self, behaviour: Callable[[Request], Reply] | None = None, port: int = 0, today: str = TODAY,
                 **batch: Any):
        super().__init__(behaviour or good_answer, port)
        self.today = today  # models.list lists the models served on this day
        self.batch = FakeBatch(self, **batch)  # request_s, queue_s, expire_s
        self.tokens: set[str] = set()  # bearer tokens handed out by /token (Vertex AI)

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.batch.close()

    def post(self, h: BaseHTTPRequestHandler) -> bool:
        if h.path == "/token":
            self._token(h)
            return True
        return self.batch.post(h)

    def _token(self, h: BaseHTTPRequestHandler) -> None:
        """An OAuth token endpoint: a service account's signed JWT traded for a bearer token."""
        from urllib.parse import parse_qs

        form = parse_qs(h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode())
        if not form.get("assertion") or "jwt-bearer" not in (form.get("grant_type") or [""])[0]:
            return self.send(h, Reply(400, {"error": "invalid_grant"}, kind="token400"))
        token = f"ya29.fake-{uuid.uuid4().hex}"
        self.tokens.add(token)
        self.send(h, Reply(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}, kind="token"))

    def delete(self, h: BaseHTTPRequestHandler) -> None:
        self.batch.delete(h)

    def parse(self, h: BaseHTTPRequestHandler, body: dict) -> tuple[Request, bytes]:
        path = h.path.split("?")[0].strip("/")
        try:
            version, rest = path.split("/models/", 1)
            model, method = rest.rsplit(":", 1)
        except ValueError:
            raise ParseError(error(400, "INVALID_ARGUMENT", f"bad request path {h.path}")) from None
        if method != "generateContent":
            raise ParseError(error(404, "NOT_FOUND", f"method {method} not served by the fake"))
        if "/projects/" in f"/{version}":  # Vertex AI: {v}/projects/{p}/locations/{l}/publishers/google/models/{m}
            scope = version.split("/")
            if len(scope) != 7 or scope[1] != "projects" or scope[3] != "locations" or scope[5:] != ["publishers", "google"]:
                raise ParseError(error(404, "NOT_FOUND", f"bad Vertex AI path {h.path}"))
            token = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in self.tokens:
                raise ParseError(error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."))
            version = scope[0]
        return self.request_from_body(model, version, body, h.headers.get("x-goog-api-key"))

    def request_from_body(self, model: str, version: str, body: dict, api_key: str | None) -> tuple[Request, bytes]:
        """A ``generateContent`` body read into a :class:`Request` (online, or one request of a batch job)."""
        image, image_bytes, prompt = None, b"", []
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                inline = field(part, "inlineData", "inline_data")
                if inline and image is None:
                    try:  # the SDK sends URL-safe base64; the API takes either alphabet
                        image, image_bytes = decode_image(field(inline, "data") or "")
                    except Exception:
                        raise ParseError(error(400, "INVALID_ARGUMENT", "Unable to process input image.")) from None
                if "text" in part:
                    prompt.append(part["text"])
        return Request(model, version, body, image, hashlib.sha256(image_bytes).hexdigest(), "\n".join(prompt), 0,
                       api_key), image_bytes

    def finish(self, reply: Reply, req: Request) -> None:
        reply.body.setdefault("modelVersion", req.model)  # the live API reports the model that answered

    def get(self, h: BaseHTTPRequestHandler) -> None:
        """``GET /{version}/models``: the models served today, two per page (so clients must page)."""
        from urllib.parse import parse_qs, urlsplit

        if self.batch.get(h):
            return
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


def service_account_file(path, token_uri: str, project: str = "omniseg-test") -> None:
    """Write a service-account key file (a fresh RSA key) whose tokens come from ``token_uri``: test
    Application Default Credentials for Vertex AI (GOOGLE_APPLICATION_CREDENTIALS=path)."""
    import json
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    Path(path).write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "fake", "private_key": pem,
        "client_email": f"omniseg@{project}.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}))


USAGE = """Point omniseg at it (no config to edit; the google-genai SDK reads the variable too):
  export GOOGLE_GEMINI_BASE_URL={url}
  export GEMINI_API_KEY=stand-in   # any non-empty key: the fake checks only that there is one
  omniseg probe --task polyp; omniseg run --task polyp
Every report of such a run names this server as the source of the answers."""


def main(argv: list[str] | None = None) -> None:
    """A stand-in for the Gemini API on 127.0.0.1: serves answers after a fixed delay until interrupted.

    Well-formed answers in the form the prompt asks for; with --live, the forms the live API gives
    today per model name (gemini_answers.live), for trying `omniseg probe` and `omniseg run` offline.
    Its answers trace a crude guess from the image, not a model: no number from it is a Gemini result."""
    serve(FakeGemini, good_answer, main.__doc__, argv, live=lambda delay: live(delay=delay), usage=USAGE)


if __name__ == "__main__":
    main()

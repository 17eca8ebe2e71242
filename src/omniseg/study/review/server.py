"""`omniseg review --reviewer NAME`: the review page served on this machine (Starlette, run by uvicorn).

Medical images: the server listens on 127.0.0.1 unless told otherwise, and answers only requests that carry
the token made at its start (in the URL it prints); the token is compared in constant time and never logged
(uvicorn's access log is off). Each answer is committed to the store before the reply, so a closed browser or a
killed server loses nothing, and the next start resumes at the reviewer's first unanswered item.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time

from ...store import reviews as store_reviews
from ...store.database import Store
from . import items as items_mod
from .claim import VERDICTS
from .page import Pictures, html

DEFAULT_HOST = "127.0.0.1"


def app(store: Store, task: str, reviewer: str, order: list[str], token: str, data_root=None):
    """The ASGI app for one reviewer of one task."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    pictures = Pictures(store, task, data_root)
    lock = threading.Lock()  # one SQLite connection; Starlette runs these handlers on several threads

    class TokenOnly:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                got = Request(scope).query_params.get("token", "")
                if not secrets.compare_digest(got.encode(), token.encode()):
                    await PlainTextResponse("forbidden: open the URL `omniseg review` printed (it carries the token)",
                                            status_code=403)(scope, receive, send)
                    return
            await self.inner(scope, receive, send)

    def answered() -> dict[str, dict]:
        return store_reviews.answers_of(store, task, reviewer)

    def state() -> dict:
        done = answered()
        nxt = next((k for k, i in enumerate(order, start=1) if i not in done), None)
        return {"n": len(order), "answered": sum(i in done for i in order), "next": nxt}

    def page(request: Request):
        return HTMLResponse(html(task, reviewer), headers={"Cache-Control": "no-store"})

    def get_state(request: Request):
        with lock:
            return JSONResponse(state())

    def get_item(request: Request):
        k = int(request.path_params["k"])
        if not 1 <= k <= len(order):
            return JSONResponse({"error": f"no item {k}; there are {len(order)}"}, status_code=404)
        with lock:
            body = pictures.payload(order[k - 1])
            body.update(k=k, n=len(order), answer=answered().get(order[k - 1]))
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def post_answer(request: Request):
        expected = "expected a JSON object {item, verdict} with a known item and one of " + ", ".join(VERDICTS)
        try:
            a = await request.json()
        except ValueError:
            return JSONResponse({"error": f"the body is not JSON; {expected}"}, status_code=400)
        # any JSON may come: check the types before a value is looked up (a list is no dictionary key)
        if not (isinstance(a, dict) and isinstance(a.get("item"), str) and isinstance(a.get("verdict"), str)
                and a["item"] in pictures.items and a["verdict"] in VERDICTS):
            return JSONResponse({"error": expected}, status_code=400)
        if a["verdict"] == "finding" and pictures.items[a["item"]]["side"] == "reference-only":
            return JSONResponse({"error": "'finding' is not an answer for a region the annotation marks"}, status_code=400)
        seconds, note = a.get("seconds"), a.get("note")
        seconds = seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None
        with lock:
            store_reviews.put_review(store, task, a["item"], reviewer, a["verdict"], note[:10_000] if isinstance(note, str) else "",
                             seconds, source="page")
            return JSONResponse(state())

    def post_undo(request: Request):
        with lock:
            item = store_reviews.undo_review(store, task, reviewer)
            out = state()
        out["undone"] = order.index(item) + 1 if item in order else None
        return JSONResponse(out)

    return Starlette(routes=[Route("/", page), Route("/api/state", get_state), Route("/api/item/{k:int}", get_item),
                             Route("/api/answer", post_answer, methods=["POST"]),
                             Route("/api/undo", post_undo, methods=["POST"])],
                     middleware=[Middleware(TokenOnly)])


def serve(store: Store, task: str, reviewer: str, *, host: str = DEFAULT_HOST, port: int = 0,
          seed: int | None = None, data_root=None, say=print) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Serve until interrupted; prints the URL (with its token) once the socket listens."""
    import uvicorn

    seed, order = items_mod.order(store, task, reviewer, seed)
    token = secrets.token_urlsafe(24)
    application = app(store, task, reviewer, order, token, data_root)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    done = store_reviews.answer_count(store, task, reviewer)
    say(f"review of {task} by {reviewer}: {len(order)} items, {done} answered (order seed {seed})")
    say(f"open http://{shown}:{bound}/?token={token}")
    say("answers are saved as they are given; Ctrl-C stops the server (start it again to go on)")
    config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    started = time.monotonic()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        say(f"stopped after {time.monotonic() - started:.0f} s")

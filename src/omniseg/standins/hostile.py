"""Answers a careless, broken or hostile service gives, in both fakes' wire formats.

The live services answer politely most of the time; the reliability tests need the rest: coordinates
that are NaN, lists nested 200,000 deep, 9 MB of triangles, usage counts that are strings, NaN or
negative, a cut answer with no text, bodies that are not objects, a server that echoes the caller's
key, and text made to break a web page (``</script>``, ``<!--``). :data:`KINDS` names each; a
behaviour built by :func:`gemini` or :func:`openai` answers the kind chosen for each image, and what
omniseg must make of it is :data:`EXPECTED` (the status of the row; every answer is kept and booked).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Callable

from .fake_http import Reply, Request

#: text that closes a script element and opens an HTML comment: a page that embeds it carelessly breaks
PAGE_BREAKER = "</script><!--<script>window.__omniseg_pwned=1</script>"

#: kind -> the status omniseg must record for it (None: decoded normally, status ok)
EXPECTED = {
    "nan_points": "invalid_answer",  # every point of the only polygon is unusable
    "nan_box": "invalid_answer",
    "deep_text": "unparseable",  # the answer text nests past any sense
    "deep_body": "invalid_answer",  # the response body itself does
    "huge": "invalid_answer",  # 200,000 triangles: refused, not decoded for minutes
    "string_tokens": "ok",  # decoded; its cost is unknown
    "nan_usage": "ok",
    "negative_usage": "ok",
    "max_tokens_empty": "unparseable",
    "page_breaker": "ok",
    "list_body": "invalid_answer",
    "string_body": "invalid_answer",
    "html_body": "invalid_answer",
    "echo_key": "ok",
}
KINDS = tuple(EXPECTED)
#: the kinds whose usage is not a count (or whose body cannot be read at all): booked at an unknown cost
UNKNOWN_COST = ("string_tokens", "nan_usage", "negative_usage", "deep_body", "list_body", "string_body", "html_body")


def deep(n: int = 200_000) -> str:
    return "[" * n + "]" * n


def triangles(n: int = 200_000) -> str:
    """About 9 MB of JSON: n small triangles as polygon entries."""
    return json.dumps([{"points": [[i % 990, i // 200 % 990], [i % 990 + 5, i // 200 % 990], [i % 990, i // 200 % 990 + 5]],
                        "label": "x"} for i in range(n)], separators=(",", ":"))


def polygon_text(label: str = "polyp") -> str:
    """A valid answer: one square in the middle, in Gemini's 0..1000 [x, y] polygon form; the label comes
    first, so it is in the start of the answer that rows and reports show."""
    return json.dumps([{"label": label, "points": [[300, 300], [700, 300], [700, 700], [300, 700]]}])


def _text(kind: str, req: Request) -> str | None:
    """The answer text of a hostile kind that answers with text (None for the others); only the one asked for is
    built: the 9 MB and 400 kB ones cost a fifth of a second each, on every request."""
    texts = {"nan_points": lambda: '[{"points": [[NaN, 10], [20, NaN], [NaN, NaN]], "label": "polyp"}]',
             "nan_box": lambda: '[{"box_2d": [NaN, 100, 600, 700], "label": "polyp"}]',
             "deep_text": _deep_text,
             "huge": _huge_text,
             "page_breaker": lambda: polygon_text(PAGE_BREAKER),
             "echo_key": lambda: polygon_text(f"key {req.api_key} Authorization: Bearer {req.api_key}")}
    return texts[kind]() if kind in texts else None


@functools.lru_cache(maxsize=1)
def _deep_text() -> str:
    return deep()


@functools.lru_cache(maxsize=1)
def _huge_text() -> str:
    return triangles()


def _raw(kind: str) -> Reply | None:
    """Bodies that are not the provider's object at all."""
    if kind == "deep_body":
        return Reply(200, raw=('{"candidates": ' + deep() + ', "choices": []}').encode(), kind=kind)
    if kind == "list_body":
        return Reply(200, [], kind=kind)
    if kind == "string_body":
        return Reply(200, "all good", kind=kind)
    if kind == "html_body":
        return Reply(200, raw=b"<html><body><h1>502 Bad Gateway</h1></body></html>", kind=kind)
    return None


def choose(kinds: tuple[str, ...]) -> Callable[[Request], str]:
    """Each image's kind, fixed by its content (so a test knows which image got which)."""
    return lambda req: kinds[int(hashlib.sha256(req.image_sha.encode()).hexdigest()[:8], 16) % len(kinds)]


def gemini(kinds: tuple[str, ...] = KINDS, pick: Callable[[Request], str] | None = None) -> Callable[[Request], Reply]:
    """A fake Gemini behaviour answering every image with one of ``kinds``."""
    from .gemini_answers import answer, text_answer

    return _behaviour(pick or choose(kinds), text_answer, lambda: answer([], finish="MAX_TOKENS", output=8192, thoughts=0),
                      ("usageMetadata", "promptTokenCount", "candidatesTokenCount"))


def openai(kinds: tuple[str, ...] = KINDS, pick: Callable[[Request], str] | None = None) -> Callable[[Request], Reply]:
    """A fake OpenAI-compatible behaviour answering every image with one of ``kinds``."""
    from .fake_openai import completion

    return _behaviour(pick or choose(kinds), completion, lambda: completion("", finish="length", completion=8192),
                      ("usage", "prompt_tokens", "completion_tokens"))


def _behaviour(pick: Callable[[Request], str], text: Callable[[str], Reply], empty: Callable[[], Reply],
               usage_keys: tuple[str, str, str]) -> Callable[[Request], Reply]:
    """The hostile kinds in one provider's wire format: ``text`` answers a text, ``empty`` is an answer cut at the
    token cap with nothing in it, ``usage_keys`` name the usage object and its prompt and output counts."""
    field, prompt, output = usage_keys

    def behave(req: Request) -> Reply:
        kind = pick(req)
        r = _raw(kind)
        if r is not None:
            return r
        body = _text(kind, req)
        if body is not None:
            r = text(body)
        elif kind == "max_tokens_empty":
            r = empty()
        else:
            r = text(polygon_text())
            usage = r.body[field]
            if kind == "string_tokens":
                usage[prompt] = "300"
            elif kind == "nan_usage":
                usage[output] = float("nan")  # json.dumps writes NaN, as a broken proxy may
            elif kind == "negative_usage":
                usage[prompt] = -100_000_000  # would book -150 USD and loosen --max-cost
            else:
                raise KeyError(f"unknown hostile kind {kind!r}")
        r.kind = kind
        return r

    return behave

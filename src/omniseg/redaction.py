"""The one redaction every text passes through before it is stored, archived, logged or shown.

API keys never reach the store, the answer archive, a report, a log or an error message. A key can
turn up anywhere: in an exception's text, in an answer (a server that echoes the request's
``Authorization`` header in its body), in a URL. So the places where text leaves the process (the
store's rows, the archive's bodies, the CLI's messages) call :func:`redact`, which masks the value of
every variable a model reads its key from (:func:`watch`), anything shaped like a Google API key, and
the token of a ``Bearer`` header.
"""

from __future__ import annotations

import os
import re

MASK = "[redacted]"
#: environment variables that hold keys: the providers' defaults, and every model's ``key_env`` (watch)
_VARIABLES: set[str] = {"GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"}
_PATTERNS = (re.compile(r"AIza[0-9A-Za-z_\-]{10,}"), re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=\-]{8,}"))
_SHORTEST = 8  # a variable holding fewer characters is no key worth masking (and masking it would mangle text)


def watch(*variables: str) -> None:
    """Also mask the values of these environment variables (a model's key variables)."""
    _VARIABLES.update(v for v in variables if v)


def redact(text: str) -> str:
    """``text`` with every key value, Google-shaped key and bearer token masked."""
    if not text:
        return text
    for var in _VARIABLES:
        key = os.environ.get(var)
        if key and len(key) >= _SHORTEST and key in text:
            text = text.replace(key, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text

"""Which day it is, for what depends on the date (the Gemini catalogue's retiring and retired models).

The one place omniseg reads the calendar. ``OMNISEG_TODAY=YYYY-MM-DD`` pins it: to see a run's
warnings as they were on another day, and so that no test depends on the day it runs.
"""

from __future__ import annotations

import datetime as dt
import os

from .errors import OmnisegError

VARIABLE = "OMNISEG_TODAY"


def today() -> dt.date:
    """``OMNISEG_TODAY`` when set, else the local calendar's date."""
    text = os.environ.get(VARIABLE, "").strip()
    if not text:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise OmnisegError(f"{VARIABLE}={text!r}: expected a date as YYYY-MM-DD, e.g. 2026-12-01") from None

"""What omniseg knows about each Gemini model: answer form, settings it takes, price, status.

A snapshot (see :data:`AS_OF`); docs/omnimodels.md shows the same table with the source of every
fact, and a test keeps the two and the shipped configs in agreement. It decides two things: which
generation settings are sent (a setting the model does not take is a configuration error, not a
silently ignored key) and the warning printed when a configured model is retiring or retired.
The catalogue never decides how an answer is read: that is detected from the answer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

AS_OF = "2026-11-27"

#: generation settings a Gemini model may take (option names of GeminiOptions)
SETTINGS = ("temperature", "thinking_budget", "thinking_level", "media_resolution", "image_size")


@dataclass(frozen=True)
class Entry:
    name: str
    answer: str  # the answer form seen for the segmentation prompt (omniseg.models.api.forms.FORMS)
    mode: str  # the mode omniseg uses by default: json-mask | polygon | image-mask
    settings: tuple[str, ...]  # which of SETTINGS it takes
    input_per_mtok: float | None  # USD, standard tier
    output_per_mtok: float | None  # USD (thinking included; image tokens for image models)
    status: str  # served | retiring | retired
    date: str | None = None  # the day it retires or retired
    replacement: str | None = None

    def state_on(self, day: dt.date) -> str:
        """served | retiring | retired on ``day``."""
        if self.date is None:
            return self.status
        return "retired" if day >= dt.date.fromisoformat(self.date) else "retiring"


_25 = ("temperature", "thinking_budget")
_3 = ("thinking_level", "media_resolution")
_IMG = ("image_size",)

CATALOG: dict[str, Entry] = {e.name: e for e in (
    Entry("gemini-3.5-flash", "polygon/mask", "polygon", _3, 1.50, 9.00, "served"),
    Entry("gemini-3.5-flash-lite", "polygon/mask", "polygon", _3, 0.30, 2.50, "served"),
    Entry("gemini-robotics-er-2-preview", "polygon/mask", "polygon", _3, None, None, "served"),
    Entry("gemini-3.1-flash-image", "image", "image-mask", _IMG, 0.50, 60.00, "served"),
    Entry("gemini-3-pro-image", "image", "image-mask", _IMG, 2.00, 120.00, "served"),
    Entry("gemini-2.5-flash", "png-crops", "json-mask", _25, 0.30, 2.50, "retiring", "2026-12-01",
          "gemini-3.5-flash-lite"),
    Entry("gemini-2.5-flash-image", "image", "image-mask", (), 0.30, 30.00, "retired", "2026-10-02",
          "gemini-3.1-flash-image"),
    Entry("gemini-robotics-er-1.6-preview", "polygon/mask", "polygon", _3, None, None, "retired", "2026-08-31",
          "gemini-robotics-er-2-preview"),
)}


def lookup(model: str) -> Entry | None:
    return CATALOG.get(model)


def status_note(model: str, today: dt.date) -> str | None:
    """A warning for a retiring or retired model on ``today`` (:func:`omniseg.clock.today`), or None."""
    e = lookup(model)
    if e is None or e.date is None:
        return None
    then = f"; use {e.replacement}" if e.replacement else ""
    if e.state_on(today) == "retired":
        return f"{model} was shut down on {e.date} (docs/omnimodels.md){then}; calls to it fail or are answered by another model"
    return (f"{model} retires on {e.date} (docs/omnimodels.md){then}; after that its requests fail or are answered "
            "by another model (the modelVersion recorded per call shows which)")

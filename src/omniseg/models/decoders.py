"""Turn an omnimodel's answer into a boolean mask, robust to what models really return.

Pure functions. Each returns a :class:`Decoded` with a status from :data:`STATUSES`; the
model records it, and any status but 'ok' is scored as an empty prediction (never dropped).
Bump :data:`DECODER_VERSION` whenever a decoder would turn the same answer into another mask:
it is part of the response-cache key and of the model's signature.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

DECODER_VERSION = "1"
THRESHOLD = 127  # the docs' text says 127 (their code used 128): grey > 127 is foreground

STATUSES = {
    "ok": "a mask was decoded (an empty list is a valid empty prediction); notes say what was repaired",
    "unparseable": "no JSON could be read from the answer (prose, broken or truncated before any complete object)",
    "invalid_answer": "JSON was read but no entry held a usable mask (no mask key, inverted boxes, bad PNGs)",
    "unsupported_format": "the mask came as <seg_..> tokens, which have no public decoder",
    "no_image": "an image answer was expected but the response held no image",
    "aspect_mismatch": "the returned mask image has another aspect ratio than the input or the one requested",
}


@dataclass
class Decoded:
    mask: np.ndarray | None
    status: str = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    instances: int = 0

    @classmethod
    def fail(cls, status: str, reason: str, notes: list[str] | None = None) -> "Decoded":
        return cls(None, status, reason, notes or [])


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S)


def strip_fences(text: str) -> str:
    m = _FENCE.search(text)
    return m.group(1).strip() if m else text.strip()


def parse_json(text: str) -> tuple[object, list[str]]:
    """The JSON value in ``text``; a truncated list keeps its complete objects.

    Raises ValueError when nothing usable is found.
    """
    body = strip_fences(text)
    try:
        return json.loads(body), []
    except json.JSONDecodeError:
        pass
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON in the answer")
    try:  # JSON followed by prose
        value, _ = json.JSONDecoder().raw_decode(body[start:])
        return value, ["text after the JSON ignored"]
    except json.JSONDecodeError:
        pass
    # Truncated (e.g. MAX_TOKENS in a repetition loop): collect the complete objects of the list.
    dec = json.JSONDecoder()
    i = body.find("[")
    if i < 0:
        raise ValueError("truncated JSON without a list")
    i += 1
    items = []
    while True:
        while i < len(body) and body[i] in " \t\r\n,":
            i += 1
        if i >= len(body) or body[i] == "]":
            break
        try:
            obj, i = dec.raw_decode(body, i)
        except json.JSONDecodeError:
            break
        items.append(obj)
    if not items:
        raise ValueError("truncated JSON before any complete object")
    return items, [f"truncated answer: kept {len(items)} complete object(s)"]


def _entries(value: object) -> list:
    """The list of entries, whether bare or wrapped ({"masks": [...]}, {"boxes": [...]}, one object)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in ("masks", "boxes", "segmentation_masks", "objects", "polygons", "results"):
            if isinstance(value.get(key), list):
                return value[key]
        return [value]
    return []


def _box(entry: dict, h: int, w: int, notes: list[str]) -> tuple[int, int, int, int] | None:
    box = entry.get("box_2d") or entry.get("box")
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        notes.append("entry without a valid box_2d skipped")
        return None
    clipped = [min(max(float(v), 0.0), 1000.0) for v in box]
    if clipped != [float(v) for v in box]:
        notes.append("box outside 0..1000 clipped")
    y0, x0, y1, x1 = clipped
    if y1 <= y0 or x1 <= x0:
        notes.append("inverted or empty box skipped")
        return None
    py0, px0 = int(round(y0 / 1000 * h)), int(round(x0 / 1000 * w))
    py1, px1 = int(round(y1 / 1000 * h)), int(round(x1 / 1000 * w))
    if py1 <= py0 or px1 <= px0:
        notes.append("box smaller than a pixel skipped")
        return None
    return py0, px0, py1, px1


def decode_json_masks(text: str, h: int, w: int, threshold: int = THRESHOLD) -> Decoded:
    """Gemini 2.5 native segmentation: ``[{"box_2d": [y0,x0,y1,x1], "mask": "data:image/png;base64,..."}]``."""
    try:
        value, notes = parse_json(text)
    except ValueError as e:
        return Decoded.fail("unparseable", str(e))
    entries = _entries(value)
    if not entries:
        return Decoded(np.zeros((h, w), bool), notes=notes + ["no objects found"])
    mask = np.zeros((h, w), bool)
    used = 0
    for e in entries:
        if not isinstance(e, dict):
            notes.append("non-object entry skipped")
            continue
        m = e.get("mask")
        if isinstance(m, str) and "<seg_" in m:
            return Decoded.fail("unsupported_format", "mask given as <seg_..> tokens", notes)
        if not isinstance(m, str) or not m:
            notes.append("entry without a mask skipped")
            continue
        box = _box(e, h, w, notes)
        if box is None:
            continue
        y0, x0, y1, x1 = box
        try:
            png = base64.b64decode(m.split(",", 1)[1] if m.startswith("data:") else m, validate=False)
            crop = Image.open(io.BytesIO(png)).convert("L")
        except (binascii.Error, OSError, ValueError, IndexError):
            notes.append("undecodable mask PNG skipped")
            continue
        crop = crop.resize((x1 - x0, y1 - y0), Image.BILINEAR)  # the PNG's size is undocumented
        mask[y0:y1, x0:x1] |= np.asarray(crop) > threshold
        used += 1
    if used == 0:
        return Decoded.fail("invalid_answer", f"none of {len(entries)} entries held a usable mask", notes)
    return Decoded(mask, notes=notes, instances=used)


def _points(entry: object) -> list | None:
    if isinstance(entry, dict):
        for key in ("points", "polygon", "vertices", "coordinates"):
            if key in entry:
                return entry[key]
        return None
    return entry if isinstance(entry, list) else None


def decode_polygons(text: str, h: int, w: int) -> Decoded:
    """Polygons as ``[[x, y], ...]`` in 0..1000 (bare, as objects with "points", or under {"boxes": [...]})."""
    try:
        value, notes = parse_json(text)
    except ValueError as e:
        return Decoded.fail("unparseable", str(e))
    entries = _entries(value)
    if entries and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
                       for p in entries):
        entries = [entries]  # one bare polygon
    if not entries:
        return Decoded(np.zeros((h, w), bool), notes=notes + ["no objects found"])
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    used = 0
    for e in entries:
        pts = _points(e)
        try:
            xy = [(min(max(float(x), 0), 1000) / 1000 * w, min(max(float(y), 0), 1000) / 1000 * h) for x, y in pts]
        except (TypeError, ValueError):
            notes.append("entry without valid points skipped")
            continue
        if len(xy) < 3:
            notes.append("polygon with fewer than 3 points skipped")
            continue
        draw.polygon(xy, fill=1)
        used += 1
    if used == 0:
        return Decoded.fail("invalid_answer", f"none of {len(entries)} entries was a usable polygon", notes)
    return Decoded(np.asarray(canvas, dtype=bool), notes=notes, instances=used)


def decode_image_mask(data: bytes | None, h: int, w: int, requested_aspect: float | None = None,
                      threshold: int = THRESHOLD, tolerance: float = 0.04) -> Decoded:
    """A black-and-white mask picture: grey, checked for framing, resized to the input, thresholded.

    The published output sizes miss their nominal ratios by up to 3% (5:4 is 1152x896), hence ``tolerance``.
    """
    if not data:
        return Decoded.fail("no_image", "the response held no image")
    try:
        img = Image.open(io.BytesIO(data)).convert("L")
    except OSError as e:
        return Decoded.fail("no_image", f"the returned image cannot be read: {e}")
    aspect = img.width / img.height
    fits = [a for a in (w / h, requested_aspect) if a]
    if not any(abs(aspect / a - 1) <= tolerance for a in fits):
        return Decoded.fail("aspect_mismatch",
                            f"returned {img.width}x{img.height} (aspect {aspect:.3f}) for a {w}x{h} input"
                            + (f" asked at aspect {requested_aspect:.3f}" if requested_aspect else ""))
    notes = [] if (img.width, img.height) == (w, h) else [f"resized from {img.width}x{img.height}"]
    grey = np.asarray(img.resize((w, h), Image.BILINEAR))
    return Decoded(grey > threshold, notes=notes, instances=1)


#: aspect ratios an image-output model can return (output sizes are fixed per ratio)
ASPECT_RATIOS = {"1:1": 1.0, "2:3": 2 / 3, "3:2": 3 / 2, "3:4": 3 / 4, "4:3": 4 / 3, "4:5": 4 / 5,
                 "5:4": 5 / 4, "9:16": 9 / 16, "16:9": 16 / 9, "21:9": 21 / 9}


def nearest_aspect(w: int, h: int) -> str:
    return min(ASPECT_RATIOS, key=lambda k: abs(np.log(ASPECT_RATIOS[k] * h / w)))

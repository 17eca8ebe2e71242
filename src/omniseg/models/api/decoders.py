"""Pieces that turn one answer form into a boolean mask: PNG crops, polygons, mask images.

Pure functions. :mod:`omniseg.models.api.forms` detects which form an answer takes and calls these;
each returns a :class:`Decoded` with a status from :data:`STATUSES`. Any status but 'ok' is
scored as an empty prediction (never dropped).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

THRESHOLD = 127  # the docs' text says 127 (their code used 128): grey > 127 is foreground
#: bounds on the work one answer may ask of the decoders (a hostile or runaway answer is refused, not decoded
#: for minutes): entries, polygon vertices in all, and pixels of a PNG crop or a mask picture
MAX_ENTRIES = 1000
MAX_VERTICES = 100_000
MAX_CROP_PIXELS = 16_000_000
MAX_IMAGE_PIXELS = 64_000_000
#: share of a mask picture's pixels in colour (channels more than 32 apart) from which it is read as colour-coded
COLOURED = 0.01

STATUSES = {
    "ok": "a mask was decoded (an empty list is a valid empty prediction); notes say what was repaired",
    "unparseable": "no JSON could be read from the answer (prose, broken or truncated before any complete object)",
    "invalid_answer": "the answer's form was recognised but no entry held a usable mask (inverted boxes, "
                      "bad PNGs, polygons under 3 points)",
    "unknown_form": "JSON in none of the known answer forms; the reason quotes the answer's start",
    "unsupported_format": "the mask came as <seg_..> tokens, which have no public decoder",
    "no_image": "an image answer was expected but the response held no image (and no other usable form)",
    "aspect_mismatch": "the returned mask image has another aspect ratio than the input or the one requested",
}


@dataclass
class Decoded:
    mask: np.ndarray | None
    status: str = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    instances: int = 0
    form: str = ""  # the answer form that was detected (omniseg.models.api.forms.FORMS)
    #: where the answer put things, in pixels of the image: {"boxes": [[x0, y0, x1, y1], ...] (pixel edges),
    #: "points": [[x, y], ...]}; what a chain (omniseg.models.chain) prompts a segmenter with
    located: dict = field(default_factory=dict)

    @classmethod
    def fail(cls, status: str, reason: str, notes: list[str] | None = None, form: str = "") -> "Decoded":  # noqa: D102
        return cls(None, status, reason, notes or [], form=form)


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.S)


def strip_fences(text: str) -> str:
    m = _FENCE.search(text)
    return m.group(1).strip() if m else text.strip()


def parse_json(text: str) -> tuple[object, list[str]]:
    """The JSON value in ``text``; a truncated list keeps its complete objects.

    Raises ValueError when nothing usable is found.
    """
    try:
        return _parse_json(strip_fences(text))
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def _parse_json(body: str) -> tuple[object, list[str]]:
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


def box_pixels(box: object, h: int, w: int, notes: list[str]) -> tuple[int, int, int, int] | None:
    """``box_2d`` ([y0, x0, y1, x1] in 0..1000) as pixel bounds, or None (with a note) when unusable."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(is_number(v) for v in box)):
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


def paste_crop(mask: np.ndarray, box: object, png: str, threshold: int, notes: list[str]) -> bool:
    """Paste one PNG probability crop into ``mask`` at its box; False (with a note) when unusable."""
    h, w = mask.shape
    bounds = box_pixels(box, h, w, notes)
    if bounds is None:
        return False
    y0, x0, y1, x1 = bounds
    try:
        data = base64.b64decode(png.split(",", 1)[1] if png.startswith("data:") else png, validate=False)
        crop = Image.open(io.BytesIO(data))
        if crop.width * crop.height > MAX_CROP_PIXELS:
            notes.append(f"mask PNG of {crop.width}x{crop.height} pixels skipped (over {MAX_CROP_PIXELS})")
            return False
        crop = crop.convert("L")
    except (binascii.Error, OSError, ValueError, IndexError, Image.DecompressionBombError):
        notes.append("undecodable mask PNG skipped")
        return False
    crop = crop.resize((x1 - x0, y1 - y0), Image.BILINEAR)  # the PNG's size is undocumented
    mask[y0:y1, x0:x1] |= np.asarray(crop) > threshold
    return True


def is_number(v: object) -> bool:
    """A finite int or float (not a bool): NaN and infinity place nothing anywhere."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_point(p: object) -> bool:
    return isinstance(p, (list, tuple)) and len(p) == 2 and all(is_number(v) for v in p)


def draw_polygon(mask: np.ndarray, points: list, notes: list[str]) -> bool:
    """Fill one polygon of [x, y] points in 0..1000 into ``mask``; False (with a note) when it has under 3 usable points.

    A point at normalized x lies at x / 1000 * w in pixel-edge coordinates; a pixel is filled when its
    centre is inside the polygon (even-odd rule).
    """
    if not isinstance(points, (list, tuple)) or not all(is_point(p) for p in points):
        notes.append("entry without valid points skipped")
        return False
    if len(points) < 3:
        notes.append("polygon with fewer than 3 points skipped")
        return False
    h, w = mask.shape
    pts = np.clip(np.asarray(points, dtype=float), 0, 1000)
    fill_polygon(mask, pts[:, 0] / 1000 * w, pts[:, 1] / 1000 * h)
    return True


def fill_polygon(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Set the pixels whose centre (c + 0.5, r + 0.5) is inside the polygon (pixel-edge coordinates).

    A scanline fill, vectorized over rows and edges: for each row's centre line, the crossings with the
    polygon's edges, sorted and paired (even-odd), mark the runs of centres between them.
    """
    h, w = mask.shape
    top, bottom = max(int(np.floor(ys.min())), 0), min(int(np.ceil(ys.max())), h)
    # the columns a centre inside can have: every crossing lies in [xs.min(), xs.max()], so clipping to these
    # instead of 0..w changes no run, and the runs are summed over the polygon's width, not the image's
    left, right = max(int(np.floor(xs.min())), 0), min(int(np.ceil(xs.max())), w)
    if bottom <= top or right <= left:
        return
    y = (np.arange(top, bottom) + 0.5)[:, None]
    x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    crosses = ((y0 <= y) & (y < y1)) | ((y1 <= y) & (y < y0))
    with np.errstate(divide="ignore", invalid="ignore"):
        at = np.where(crosses, x0 + (y - y0) * (x1 - x0) / (y1 - y0), np.inf)
    at.sort(axis=1)
    k = int(crosses.sum(axis=1).max()) // 2 * 2
    if k == 0:
        return
    width = right - left
    starts = np.clip(np.ceil(at[:, 0:k:2] - 0.5), left, right).astype(int) - left  # first centre at or right of
    ends = np.clip(np.ceil(at[:, 1:k:2] - 0.5), left, right).astype(int) - left  # the crossing
    rows = np.arange(bottom - top)[:, None] * (width + 1)
    size = (bottom - top) * (width + 1)
    runs = (np.bincount((rows + starts).ravel(), minlength=size)
            - np.bincount((rows + ends).ravel(), minlength=size)).reshape(bottom - top, width + 1)
    mask[top:bottom, left:right] |= np.cumsum(runs[:, :width], axis=1) > 0


def decode_image_mask(data: bytes | None, h: int, w: int, requested_aspect: float | None = None,
                      threshold: int = THRESHOLD, tolerance: float = 0.04) -> Decoded:
    """A black-and-white mask picture: grey, checked for framing, resized to the input, thresholded.

    The published output sizes miss their nominal ratios by up to 3% (5:4 is 1152x896), hence ``tolerance``.
    """
    if not data:
        return Decoded.fail("no_image", "the response held no image", form="image")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            return Decoded.fail("invalid_answer", f"the returned image is {img.width}x{img.height} pixels, over "
                                f"{MAX_IMAGE_PIXELS}: not decoded", form="image")
        rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return Decoded.fail("no_image", f"the returned image cannot be read: {e}", form="image")
    aspect = img.width / img.height
    fits = [a for a in (w / h, requested_aspect) if a]
    if not any(abs(aspect / a - 1) <= tolerance for a in fits):
        return Decoded.fail("aspect_mismatch",
                            f"returned {img.width}x{img.height} (aspect {aspect:.3f}) for a {w}x{h} input"
                            + (f" asked at aspect {requested_aspect:.3f}" if requested_aspect else ""), form="image")
    notes = [] if (img.width, img.height) == (w, h) else [f"resized from {img.width}x{img.height}"]
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    if float((spread > 32).mean()) > COLOURED:  # one colour per class (image-output models may colour-code)
        colours, counts = np.unique(rgb.reshape(-1, 3) // 32, axis=0, return_counts=True)
        background = colours[counts.argmax()].astype(np.int16) * 32 + 16
        grey = np.where(np.abs(rgb.astype(np.int16) - background).max(axis=2) > 64, 255, 0).astype(np.uint8)
        notes.append("colour-coded picture: every colour but the background's is foreground")
    else:
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
    grey = np.asarray(Image.fromarray(grey).resize((w, h), Image.BILINEAR))
    return Decoded(grey > threshold, notes=notes, instances=1, form="image")


#: aspect ratios an image-output model can return (output sizes are fixed per ratio)
ASPECT_RATIOS = {"1:1": 1.0, "2:3": 2 / 3, "3:2": 3 / 2, "3:4": 3 / 4, "4:3": 4 / 3, "4:5": 4 / 5,
                 "5:4": 5 / 4, "9:16": 9 / 16, "16:9": 16 / 9, "21:9": 21 / 9}


def nearest_aspect(w: int, h: int) -> str:
    return min(ASPECT_RATIOS, key=lambda k: abs(np.log(ASPECT_RATIOS[k] * h / w)))

"""Which form an omnimodel's answer takes, detected from the answer itself, and the mask it holds.

A model's configured ``mode`` chooses the prompt and the generation settings; it does not decide
how the answer is read, because models drift: Gemini 3.5 Flash answers the documented 2.5
segmentation prompt with polygons under ``"mask"``, 2.5 Flash often answers with ``<seg_N>``
tokens, a 2.5 model retired by Google is answered by a 3.x one. :func:`decode_answer` recognises
every form in :data:`FORMS` and records the one it decoded (and the point order it assumed).

Bump :data:`DECODER_VERSION` whenever the same answer would decode to another mask or status:
each row records the version that decoded it, and ``omniseg redecode`` brings older rows up to
date from the kept raw answers without an API call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..base import Prediction
from .decoders import (
    MAX_ENTRIES,
    MAX_VERTICES,
    THRESHOLD,
    Decoded,
    box_pixels,
    decode_image_mask,
    draw_polygon,
    is_number,
    is_point,
    parse_json,
    paste_crop,
)

if TYPE_CHECKING:
    from .types import Reply

DECODER_VERSION = "5"  # 5: a crop's box read as a mask-less box is (key, order, coordinates); 4: NaN/infinite
# coordinates skipped, bounds on entries and vertices; 3: boxes, coordinates

FORMS = {
    "png-crops": "entries with a box (box_2d [y0, x0, y1, x1] in 0..1000 from Gemini 2.5, or any key of BOX_KEYS, read "
                 "as a box without a mask is) and a PNG probability crop under mask",
    "polygon/<key>": "entries whose <key> (mask, points, polygon, vertices, ...) holds [[x, y], ...] in 0..1000 "
                     "(Gemini 3.x, Robotics-ER: under mask for the documented prompt); bare, per entry or wrapped",
    "polygon/bare": "a list of [x, y] points, or a list of such lists",
    "seg-tokens": "<seg_N> mask tokens: no public decoder, never guessed (status unsupported_format)",
    "image": "a mask picture in an image part (image-output models)",
    "empty": "an empty list: the model found nothing (a valid empty prediction)",
    "box": "boxes without masks, filled as crude masks (status ok; reports can separate them by form)",
    "prose": "no JSON at all (status unparseable)",
    "unknown": "JSON in none of these forms (status unknown_form)",
    "too-large": "more entries or polygon vertices than one answer may hold (decoders.MAX_ENTRIES, MAX_VERTICES): "
                 "kept in the archive, not decoded (status invalid_answer)",
}

#: keys under which an entry may hold its polygon, in the order they are looked for
POLYGON_KEYS = ("mask", "points", "polygon", "polygons", "vertices", "coordinates", "contour", "outline")
#: keys under which an entry may hold a box without a mask: box_2d is [y0, x0, y1, x1] (Gemini), the others
#: [x0, y0, x1, y1] (open vision-language models)
BOX_KEYS = ("box_2d", "bbox_2d", "bbox", "box")
#: coordinate conventions of points and boxes (a model's option, recorded with each row)
COORDS = {"norm1000": "0..1000 of the image's width and height (Gemini)", "norm1": "0..1 of the image",
          "pixels": "pixels of the image as it was sent"}
#: keys under which a list of entries may be wrapped ({"boxes": [...]} and the like)
WRAPPERS = ("masks", "boxes", "segmentation_masks", "objects", "polygons", "results", "predictions", "detections",
            "items")


def head(text: str, n: int = 80) -> str:
    """The first ``n`` characters of an answer, on one line, for reasons and the probe table."""
    flat = " ".join(text.split())
    return repr(flat[:n] + ("…" if len(flat) > n else ""))


def _entries(value: object) -> list | None:
    """The list of entries, whether bare, wrapped or a single object; None when no form applies."""
    if isinstance(value, list):
        return [value] if value and all(is_point(p) for p in value) else value
    if isinstance(value, dict):
        for key in WRAPPERS:
            if isinstance(value.get(key), list):
                return _entries(value[key])
        return [value]
    return None


def _polygons(entry: object) -> tuple[str, list] | None:
    """(form, [polygon, ...]) when the entry holds polygons."""
    if isinstance(entry, list):
        if entry and all(is_point(p) for p in entry):
            return "polygon/bare", [entry]
        if entry and all(isinstance(p, list) and p and all(is_point(q) for q in p) for p in entry):
            return "polygon/bare", list(entry)
        return None
    if not isinstance(entry, dict):
        return None
    for key in POLYGON_KEYS:
        v = entry.get(key)
        if isinstance(v, list) and v:
            if all(isinstance(p, list) and p and all(is_point(q) for q in p) for p in v):
                return f"polygon/{key}", list(v)  # several rings under one key
            return f"polygon/{key}", [v]
    return None


def _scale(coords: str, sent_size: tuple[int, int] | None) -> tuple[float, float]:
    """Factors that bring x and y of the given convention to 0..1000."""
    if coords == "norm1":
        return 1000.0, 1000.0
    if coords == "pixels":
        if not sent_size:
            raise ValueError("pixel coordinates need the size of the image as sent")
        return 1000.0 / sent_size[0], 1000.0 / sent_size[1]
    return 1.0, 1.0


def _to_1000(points: list, point_order: str, sx: float, sy: float) -> list:
    """[x, y] points in 0..1000, whatever order and convention they came in (left as they are when invalid)."""
    if not all(is_point(p) for p in points):
        return points
    xy = [(p[1], p[0]) if point_order == "yx" else (p[0], p[1]) for p in points]
    return [[x * sx, y * sy] for x, y in xy]


def _box_1000(entry: dict, sx: float, sy: float) -> list | None:
    """An entry's box as [y0, x0, y1, x1] in 0..1000, [] for a box whose coordinates are not all finite
    numbers (NaN, strings), or None when it holds no box."""
    for key in BOX_KEYS:
        v = entry.get(key)
        if isinstance(v, (list, tuple)) and len(v) == 4:
            if not all(is_number(c) for c in v):
                return []
            y0, x0, y1, x1 = v if key == "box_2d" else (v[1], v[0], v[3], v[2])
            return [y0 * sy, x0 * sx, y1 * sy, x1 * sx]
    return None


def decode_answer(text: str, image: bytes | None, h: int, w: int, *, threshold: int = THRESHOLD,
                  point_order: str = "xy", expect_image: bool = False, requested_aspect: float | None = None,
                  coords: str = "norm1000", sent_size: tuple[int, int] | None = None) -> Decoded:
    """Detect the answer's form and decode it into an ``h`` x ``w`` mask (or a failure status).

    ``coords`` is the convention of points and boxes (:data:`COORDS`); ``sent_size`` the (width, height)
    of the image as sent, for pixel coordinates.
    """
    if image is not None:
        return decode_image_mask(image, h, w, requested_aspect, threshold)
    if "<seg_" in text:
        return Decoded.fail("unsupported_format", f"mask given as <seg_..> tokens: {head(text)}", form="seg-tokens")
    try:
        value, notes = parse_json(text)
    except ValueError as e:
        if expect_image:
            return Decoded.fail("no_image", f"the response held no image, and its text is no mask: {head(text)}",
                                form="prose")
        return Decoded.fail("unparseable", f"{e}: {head(text)}", form="prose")
    entries = _entries(value)
    if entries is None:
        return Decoded.fail("unknown_form", f"JSON in no known answer form: {head(text)}", form="unknown")
    if not entries:
        return Decoded(np.zeros((h, w), bool), notes=notes + ["no objects found"], form="empty")
    if len(entries) > MAX_ENTRIES:
        return Decoded.fail("invalid_answer", f"{len(entries)} entries, over the {MAX_ENTRIES} one answer may hold: "
                            f"not decoded: {head(text)}", notes, form="too-large")
    mask = np.zeros((h, w), bool)
    forms: set[str] = set()
    used = vertices = 0
    sx, sy = _scale(coords, sent_size)
    for e in entries:
        crop = e.get("mask") if isinstance(e, dict) else None
        if isinstance(crop, str):
            forms.add("png-crops")
            # the box by the rules of a box without a mask: its key's order, the coordinate convention
            used += paste_crop(mask, _box_1000(e, sx, sy), crop, threshold, notes)
            continue
        poly = _polygons(e)
        if poly is not None:
            vertices += sum(len(p) for p in poly[1] if isinstance(p, (list, tuple)))
            if vertices > MAX_VERTICES:
                return Decoded.fail("invalid_answer", f"over {MAX_VERTICES} polygon vertices in one answer: not "
                                    f"decoded: {head(text)}", notes, form="too-large")
            forms.add(poly[0])
            used += sum(draw_polygon(mask, _to_1000(p, point_order, sx, sy), notes) for p in poly[1])
            continue
        box = _box_1000(e, sx, sy) if isinstance(e, dict) else None
        if box == []:
            forms.add("box")
            notes.append("box with a coordinate that is not a finite number skipped")
        elif box is not None:
            forms.add("box")
            bounds = box_pixels(box, h, w, notes)
            if bounds is not None:
                mask[bounds[0]:bounds[2], bounds[1]:bounds[3]] = True
                used += 1
        else:
            notes.append("entry in no known form skipped")
    form = "+".join(sorted(forms)) or "unknown"
    if used == 0:
        if not forms:
            return Decoded.fail("unknown_form", f"JSON in no known answer form: {head(text)}", notes, form=form)
        return Decoded.fail("invalid_answer", f"none of {len(entries)} entries held a usable mask: {head(text)}",
                            notes, form=form)
    return Decoded(mask, notes=notes, instances=used, form=form)


def to_prediction(reply: "Reply", h: int, w: int, *, threshold: int = THRESHOLD, point_order: str = "xy",
                  expect_image: bool = False, requested_aspect: float | None = None, coords: str = "norm1000",
                  sent_size: tuple[int, int] | None = None, redact: Callable[[str], str] = str) -> Prediction:
    """A provider's reply as a prediction: blocks and empty candidates first, then the detected form.

    ``meta`` records what the API and the decoder said (docs/outputs.md); ``meta["tokens"]`` is
    the reply's usage, for the caller to book and remove.
    """
    meta: dict[str, Any] = {"model_version": reply.model_version, "response_id": reply.response_id,
                            "finish_reason": reply.finish, "decoder_version": DECODER_VERSION, "tokens": reply.tokens}
    if reply.blocked:
        return Prediction.failed(reply.blocked, status="blocked", **meta)
    if not reply.has_candidates:
        return Prediction.failed("the response has no candidates", status="api_error", **meta)
    if not reply.text and reply.image is None and reply.finish not in ("STOP", "MAX_TOKENS", ""):
        return Prediction.failed(f"no answer: finish reason {reply.finish}", status="blocked", **meta)
    d = decode_answer(reply.text, reply.image, h, w, threshold=threshold, point_order=point_order,
                      expect_image=expect_image, requested_aspect=requested_aspect, coords=coords, sent_size=sent_size)
    meta.update(answer_form=d.form, notes=d.notes, instances=d.instances,
                answer_head=head(reply.text, 60) if reply.text else "")
    if "polygon" in d.form:
        meta["point_order"] = point_order
    if "polygon" in d.form or "box" in d.form.split("+"):
        meta["coords"] = coords
    if reply.finish == "MAX_TOKENS":
        meta["notes"] = d.notes + ["answer cut at the output-token cap"]
    if d.status != "ok":
        return Prediction(mask=None, status=d.status, reason=redact(d.reason), meta=meta)
    return Prediction(mask=d.mask, reason="; ".join(d.notes), meta=meta)

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

from ...redaction import redact
from ..base import Prediction
from . import tagged
from .frames import ResizeRule, rule_of, scale_to_1000
from .types import sent_size
from .decoders import (
    ASPECT_RATIOS,
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
    strip_fences,
)

if TYPE_CHECKING:
    from .types import RemoteOptions, Reply

DECODER_VERSION = "7"  # 7: the boxes and points an answer located kept in meta.located (a chain's prompts),
# PaliGemma's <seg> tokens drawn with the codebook named by seg_codebook; 6: the tagged and tokenized forms of open
# models (tagged.py), points, Florence-2's Python
# literals (no longer salvaged as truncated JSON), Qwen2.5-VL's own frame, colour-coded mask pictures;
# 5: a crop's box read as a mask-less box is (key, order, coordinates); 4: NaN/infinite
# coordinates skipped, bounds on entries and vertices; 3: boxes, coordinates

FORMS = {
    "png-crops": "entries with a box (box_2d [y0, x0, y1, x1] in 0..1000 from Gemini 2.5, or any key of BOX_KEYS, read "
                 "as a box without a mask is) and a PNG probability crop under mask",
    "polygon/<key>": "entries whose <key> (mask, points, polygon, vertices, ...) holds [[x, y], ...] in 0..1000 "
                     "(Gemini 3.x, Robotics-ER: under mask for the documented prompt); bare, per entry or wrapped",
    "polygon/bare": "a list of [x, y] points, or a list of such lists",
    "seg-tokens": "<seg_N> mask tokens: no public decoder, never guessed (status unsupported_format)",
    "image": "a mask picture in an image part (image-output models); a colour-coded one (one colour per class) has "
             "every colour but the background's as foreground",
    "empty": "an empty list: the model found nothing (a valid empty prediction)",
    "box": "boxes without masks, filled as crude masks (status ok; reports can separate them by form)",
    "point": "points (point_2d [x, y], or entries {x, y}): one pixel each; a location, not a region (Qwen, Moondream)",
    "paligemma/loc": "PaliGemma's four <locNNNN> tokens per object: y0 x0 y1 x1 on 0..1023, filled as boxes",
    "paligemma/seg": "PaliGemma's <locNNNN> and 16 <segNNN> tokens: drawn in the box with its VQ-VAE codebook "
                     "(the option seg_codebook: .paligemma_masks); without it status unsupported_format naming it",
    "florence/loc": "Florence-2's raw <loc_N> tokens on 0..999 bins: four after a label are a box",
    "florence/loc-polygon": "Florence-2's raw <loc_N> tokens: an even run of six or more is a polygon",
    "florence/literal": "Florence-2's post-processed Python literal {'<TASK>': {'bboxes': ..., 'polygons': ...}} in "
                        "pixels of the image as sent",
    "internvl/box": "InternVL's <ref>label</ref><box>[[x1, y1, x2, y2]]</box> on 0..1000",
    "deepseek/box": "DeepSeek-VL2's <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|> on 0..999",
    "molmo/points": "Molmo's <point x=.. y=..> and <points x1=.. y1=.. ...> tags in percent: one pixel each",
    "svg-path": "Moondream's segmentation: an SVG path in 0..1 of the image",
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
#: forms that locate without drawing a shape: boxes filled as crude masks, points drawn as a pixel each (reports
#: name the models that answered only so, and show their localisation beside their Dice)
BOX_FORMS = frozenset({"box", "paligemma/loc", "florence/loc", "internvl/box", "deepseek/box"})
POINT_FORMS = frozenset({"point", "molmo/points"})
#: keys under which an entry holds one point [x, y] (Qwen's point_2d)
POINT_KEYS = ("point_2d", "point")
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
        points = value.get("points")  # Moondream's {"points": [{"x": .., "y": ..}, ...]}; else a polygon's key
        if isinstance(points, list) and points and all(isinstance(p, dict) for p in points):
            return points
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


def _point(entry: dict) -> list | None:
    """An entry's single point as given ([x, y] under point_2d / point, or the keys x and y), or None."""
    for key in POINT_KEYS:
        if is_point(entry.get(key)):
            return list(entry[key])
    if is_number(entry.get("x")) and is_number(entry.get("y")) and len(entry) <= 3:  # {x, y} and perhaps a label
        return [entry["x"], entry["y"]]
    return None


def _corner_box(entry: dict) -> list | None:
    """A box given by its corners' keys (x_min, y_min, x_max, y_max: Moondream) as [x0, y0, x1, y1], or None."""
    v = [entry.get(k) for k in ("x_min", "y_min", "x_max", "y_max")]
    return v if all(is_number(c) for c in v) else None


def draw_point(mask: np.ndarray, point: list, notes: list[str], located: dict | None = None) -> bool:
    """Mark the pixel holding a point [x, y] in 0..1000; False (with a note) when it is outside the image.
    ``located`` collects the point in pixels."""
    h, w = mask.shape
    x, y = point[0] / 1000 * w, point[1] / 1000 * h
    if not (0 <= x <= w and 0 <= y <= h):
        notes.append("point outside the image skipped")
        return False
    mask[min(int(y), h - 1), min(int(x), w - 1)] = True
    if located is not None:
        located.setdefault("points", []).append([round(x, 2), round(y, 2)])
    return True


def fill_box(mask: np.ndarray, box: object, notes: list[str], located: dict | None = None) -> bool:
    """Fill a box ([y0, x0, y1, x1] in 0..1000) as a crude mask; False (with a note) when unusable. ``located``
    collects it as [x0, y0, x1, y1] pixel edges."""
    bounds = box_pixels(box, *mask.shape, notes)
    if bounds is None:
        return False
    y0, x0, y1, x1 = bounds
    mask[y0:y1, x0:x1] = True
    if located is not None:
        located.setdefault("boxes", []).append([x0, y0, x1, y1])
    return True


def draw_shapes(shapes: "tagged.Shapes", h: int, w: int, text: str, seg_codebook: str | None = None) -> Decoded:
    """A tagged answer's boxes (filled), points (a pixel each), polygons and PaliGemma masks (drawn with
    ``seg_codebook``) as one mask."""
    notes = list(shapes.notes)
    if shapes.unsupported:
        return Decoded.fail("unsupported_format", f"{shapes.unsupported}: {head(text)}", notes, form=shapes.form)
    if shapes.masks and not seg_codebook:
        return Decoded.fail("unsupported_format", "the mask came as PaliGemma <seg> tokens, which only the VQ-VAE "
                            "codebook of big_vision (vae-oid.npz) draws: set the model's option seg_codebook to that "
                            f"file: {head(text)}", notes, form=shapes.form)
    mask = np.zeros((h, w), bool)
    located: dict = {}
    used = sum(fill_box(mask, [y0, x0, y1, x1], notes, located) for x0, y0, x1, y1 in shapes.boxes)
    used += sum(draw_point(mask, p, notes, located) for p in shapes.points)
    used += sum(draw_polygon(mask, p, notes) for p in shapes.polygons)
    if shapes.masks:
        used += draw_codebook_masks(mask, shapes.masks, seg_codebook, notes, located)
    if used == 0:
        return Decoded.fail("invalid_answer", f"none of {shapes.count()} shapes was usable: {head(text)}", notes,
                            form=shapes.form)
    return Decoded(mask, notes=notes, instances=used, form=shapes.form, located=located)


def draw_codebook_masks(mask: np.ndarray, masks: list, codebook: str, notes: list[str], located: dict) -> int:
    """PaliGemma's masks (box, 16 codebook indices) decoded and pasted into their boxes; how many were drawn."""
    from . import paligemma_masks

    h, w = mask.shape
    n = paligemma_masks.entries(codebook)
    usable = []
    for (x0, y0, x1, y1), idx in masks:
        bounds = box_pixels([y0, x0, y1, x1], h, w, notes)
        if bounds is None:
            continue
        if max(idx) >= n:
            notes.append(f"a <seg> index past the codebook's {n} entries: the object skipped")
            continue
        usable.append((bounds, idx))
    if not usable:
        return 0
    for (py0, px0, py1, px1), m64 in zip((b for b, _ in usable), paligemma_masks.decode(codebook, [i for _, i in usable])):
        mask[py0:py1, px0:px1] |= paligemma_masks.in_box(m64, py1 - py0, px1 - px0)
        located.setdefault("boxes", []).append([px0, py0, px1, py1])
    return len(usable)


def decode_answer(text: str, image: bytes | None, h: int, w: int, *, threshold: int = THRESHOLD,
                  point_order: str = "xy", expect_image: bool = False, requested_aspect: float | None = None,
                  coords: str = "norm1000", sent_size: tuple[int, int] | None = None,
                  resize_rule: ResizeRule | None = None, seg_codebook: str | None = None) -> Decoded:
    """Detect the answer's form and decode it into an ``h`` x ``w`` mask (or a failure status).

    ``coords`` is the convention of points and boxes in JSON answers (:data:`omniseg.models.api.frames.COORDS`);
    ``sent_size`` the (width, height) of the image as sent, for pixel coordinates; ``resize_rule`` how the model
    resized it, for its own pixels. Tagged and tokenized answers (:mod:`.tagged`) carry their own frame.
    """
    if image is not None:
        return decode_image_mask(image, h, w, requested_aspect, threshold)
    if "<seg_" in text:
        return Decoded.fail("unsupported_format", f"mask given as <seg_..> tokens: {head(text)}", form="seg-tokens")
    shapes = tagged.read(text)
    if shapes is not None:
        return draw_shapes(shapes, h, w, text, seg_codebook)
    literal = tagged.python_literal(strip_fences(text))
    if literal is not None:  # a Python literal (Florence-2), read whole: never salvaged as truncated JSON
        value, notes = literal, []
        shapes = tagged.florence_literal(value, sent_size)
        if shapes is not None:
            return draw_shapes(shapes, h, w, text)
    else:
        try:
            value, notes = parse_json(text)
        except ValueError as e:
            if expect_image:
                return Decoded.fail("no_image", f"the response held no image, and its text is no mask: {head(text)}",
                                    form="prose")
            return Decoded.fail("unparseable", f"{e}: {head(text)}", form="prose")
    shapes = tagged.moondream_path(value)
    if shapes is not None:
        return draw_shapes(shapes, h, w, text)
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
    located: dict = {}
    used = vertices = 0
    sx, sy = scale_to_1000(coords, sent_size, resize_rule)
    for e in entries:
        crop = e.get("mask") if isinstance(e, dict) else None
        if isinstance(crop, str):
            forms.add("png-crops")
            # the box by the rules of a box without a mask: its key's order, the coordinate convention
            box = _box_1000(e, sx, sy)
            if paste_crop(mask, box, crop, threshold, notes):
                used += 1
                y0, x0, y1, x1 = box_pixels(box, h, w, [])  # usable, or the crop was not pasted
                located.setdefault("boxes", []).append([x0, y0, x1, y1])  # the crop's box: where the model put it
            continue
        point = _point(e) if isinstance(e, dict) else None
        if point is not None:
            forms.add("point")
            used += draw_point(mask, _to_1000([point], point_order, sx, sy)[0], notes, located)
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
        corners = _corner_box(e) if isinstance(e, dict) and box is None else None
        if corners is not None:
            box = [corners[1] * sy, corners[0] * sx, corners[3] * sy, corners[2] * sx]
        if box == []:
            forms.add("box")
            notes.append("box with a coordinate that is not a finite number skipped")
        elif box is not None:
            forms.add("box")
            used += fill_box(mask, box, notes, located)
        else:
            notes.append("entry in no known form skipped")
    form = "+".join(sorted(forms)) or "unknown"
    if used == 0:
        if not forms:
            return Decoded.fail("unknown_form", f"JSON in no known answer form: {head(text)}", notes, form=form)
        return Decoded.fail("invalid_answer", f"none of {len(entries)} entries held a usable mask: {head(text)}",
                            notes, form=form)
    return Decoded(mask, notes=notes, instances=used, form=form, located=located)


def to_prediction(reply: "Reply", h: int, w: int, *, threshold: int = THRESHOLD, point_order: str = "xy",
                  expect_image: bool = False, requested_aspect: float | None = None, coords: str = "norm1000",
                  sent_size: tuple[int, int] | None = None, redact: Callable[[str], str] = str,
                  resize_rule: ResizeRule | None = None, seg_codebook: str | None = None) -> Prediction:
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
                      expect_image=expect_image, requested_aspect=requested_aspect, coords=coords, sent_size=sent_size,
                      resize_rule=resize_rule, seg_codebook=seg_codebook)
    meta.update(answer_form=d.form, notes=d.notes, instances=d.instances,
                answer_head=head(reply.text, 60) if reply.text else "")
    if "polygon/" in d.form or "point" in d.form.split("+"):
        meta["point_order"] = point_order
    if "polygon/" in d.form or {"box", "point"} & set(d.form.split("+")):  # JSON forms read in the model's frame
        meta["coords"] = coords
        if coords == "model-pixels":
            meta["resize_rule"] = (resize_rule or ResizeRule()).model_dump()
    if d.located:
        meta["located"] = d.located
    if reply.finish == "MAX_TOKENS":
        meta["notes"] = d.notes + ["answer cut at the output-token cap"]
    if d.status != "ok":
        return Prediction(mask=None, status=d.status, reason=redact(d.reason), meta=meta)
    return Prediction(mask=d.mask, reason="; ".join(d.notes), meta=meta)


def from_body(read: Callable[[str], "Reply"], raw: str, h: int, w: int, gen: dict[str, Any],
              options: "RemoteOptions") -> Prediction:
    """A provider's raw body (``read`` turns it into a reply) as a prediction for an ``h`` x ``w`` image asked with
    the generation settings ``gen``. Never raises: whatever an answer holds ends as a row with a status."""
    o = options
    if len(raw) > o.max_answer_mb * 1e6:
        return Prediction.failed(f"the answer is {len(raw) / 1e6:.1f} MB, over max_answer_mb {o.max_answer_mb:g}: kept "
                                 "in the archive, not decoded", status="invalid_answer", decoder_version=DECODER_VERSION)
    try:
        reply = read(raw)
    except Exception as e:  # a body shaped like nothing the provider knows (or nested past any sense)
        return Prediction.failed(redact(f"cannot read the response: {type(e).__name__}: {str(e)[:200]}"),
                                 status="invalid_answer", decoder_version=DECODER_VERSION)
    try:
        return to_prediction(reply, h, w, threshold=o.threshold, point_order=o.point_order,
                             expect_image=o.mode == "image-mask",
                             requested_aspect=ASPECT_RATIOS.get(gen.get("aspect_ratio", "")),
                             coords=getattr(o, "coords", "norm1000"), sent_size=sent_size(h, w, o.max_side),
                             resize_rule=rule_of(getattr(o, "resize_rule", None)),
                             seg_codebook=getattr(o, "seg_codebook", None), redact=redact)
    except Exception as e:  # a decoder bug or an answer no rule foresaw: a row, never a crash
        return Prediction.failed(redact(f"the answer could not be decoded: {type(e).__name__}: {str(e)[:200]}"),
                                 status="invalid_answer", decoder_version=DECODER_VERSION,
                                 model_version=reply.model_version if isinstance(reply.model_version, str) else None)

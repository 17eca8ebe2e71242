"""Answers that are not JSON: the tags and tokens open vision-language models answer with, each in its own frame.

Each grammar below is read by a pure function into :class:`Shapes` (boxes, points and polygons as [x, y] in
0..1000 of the image); :mod:`.answers` draws them. Sources (docs/omnimodels.md has the table):

* **PaliGemma / PaliGemma 2** (big_vision's PaliGemma README and its demo's parser): per object four
  ``<locNNNN>`` tokens, y0 x0 y1 x1 on 0..1023 (a coordinate is ``N / 1024`` of the side), optionally 16
  ``<segNNN>`` tokens, then the label; objects separated by ``;``. The seg tokens index a VQ-VAE codebook
  (``vae-oid.npz``, drawn by :mod:`.paligemma_masks`): without it they cannot be drawn (status
  ``unsupported_format``, naming the option ``seg_codebook``).
* **Florence-2** raw output: ``<loc_N>`` tokens on 0..999 bins (a bin's centre is ``(N + 0.5) / 1000``), four
  after a label for a box (x1 y1 x2 y2), an even run of six or more for a polygon (x y pairs).
  Its processor's post-processed answers are Python literals: see :func:`florence_literal`.
* **InternVL 2.5 / 3**: ``<ref>label</ref><box>[[x1, y1, x2, y2], ...]</box>`` on 0..1000.
* **DeepSeek-VL2**: ``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>`` on 0..999.
* **Molmo**: ``<point x="61.5" y="40.6" alt="...">label</point>`` and ``<points x1=".." y1=".." x2=".." ...>``,
  in percent of the width and height.
* **Moondream**: a segmentation is an SVG path (``M x y L x y ... Z``, also ``H V C S Q T`` and their relative
  forms; curves by their points along the way) in 0..1 of the image.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field

#: bounds on what one answer may ask of this module (a runaway answer is refused, not parsed for minutes)
MAX_TOKENS = 200_000
MAX_SHAPES = 1000


@dataclass
class Shapes:
    form: str
    boxes: list[list[float]] = field(default_factory=list)  # [x0, y0, x1, y1] in 0..1000
    points: list[list[float]] = field(default_factory=list)  # [x, y] in 0..1000
    polygons: list[list[list[float]]] = field(default_factory=list)  # [[x, y], ...] in 0..1000
    #: PaliGemma masks: ([x0, y0, x1, y1] in 0..1000, 16 codebook indices), drawn with the codebook (.paligemma_masks)
    masks: list[tuple[list[float], list[int]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsupported: str = ""  # why the answer cannot be drawn (seg tokens without their codebook)

    def count(self) -> int:
        return len(self.boxes) + len(self.points) + len(self.polygons) + len(self.masks)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


_PALI_OBJECT = re.compile(r"((?:<loc\d{4}>){4})((?:<seg\d{3}>){0,16})")
_PALI_LOC = re.compile(r"<loc(\d{4})>")
_PALI_SEG = re.compile(r"<seg(\d{3})>")


def paligemma(text: str) -> Shapes | None:
    """PaliGemma's detection and segmentation tokens."""
    if "<loc" not in text or not _PALI_LOC.search(text):
        return None
    out = Shapes("paligemma/loc")
    for m in _PALI_OBJECT.finditer(text):
        y0, x0, y1, x1 = (int(v) / 1024 * 1000 for v in _PALI_LOC.findall(m.group(1)))
        seg = [int(v) for v in _PALI_SEG.findall(m.group(2))]
        if len(seg) == 16:
            out.form = "paligemma/seg"
            out.masks.append(([x0, y0, x1, y1], seg))
        else:
            if seg:
                out.notes.append(f"{len(seg)} <seg> tokens, not 16: the object read as its box")
            out.boxes.append([x0, y0, x1, y1])
        if out.count() > MAX_SHAPES:
            break
    return out if out.count() else None


_FLORENCE_LOC = re.compile(r"<loc_(\d{1,3})>")
_FLORENCE_RUN = re.compile(r"(?:<loc_\d{1,3}>)+")


def florence_tokens(text: str) -> Shapes | None:
    """Florence-2's raw ``<loc_N>`` tokens: four after a label is a box, an even run of six or more a polygon."""
    if "<loc_" not in text:
        return None
    out = Shapes("florence/loc")
    for run in _FLORENCE_RUN.finditer(text):
        bins = [int(v) + 0.5 for v in _FLORENCE_LOC.findall(run.group(0))]  # a bin's centre, on 0..1000
        if len(bins) == 4:
            x0, y0, x1, y1 = bins
            out.boxes.append([x0, y0, x1, y1])
        elif len(bins) >= 6 and len(bins) % 2 == 0:
            out.form = "florence/loc-polygon"
            out.polygons.append([[bins[i], bins[i + 1]] for i in range(0, len(bins), 2)])
        else:
            out.notes.append(f"a run of {len(bins)} <loc_> tokens is neither a box nor a polygon: skipped")
        if out.count() > MAX_SHAPES:
            break
    return out if out.count() or out.notes else None


def florence_literal(value: object, sent_size: tuple[int, int] | None) -> Shapes | None:
    """Florence-2's post-processed answer, ``{'<TASK>': {'bboxes': [[x1, y1, x2, y2], ...], 'polygons':
    [[[x1, y1, x2, y2, ...], ...], ...], ...}}``, in pixels of the image it was given (the image as sent)."""
    if not (isinstance(value, dict) and len(value) == 1):
        return None
    (task, body), = value.items()
    if not (isinstance(task, str) and task.startswith("<") and task.endswith(">") and isinstance(body, dict)):
        return None
    if not sent_size:
        return None
    sx, sy = 1000.0 / sent_size[0], 1000.0 / sent_size[1]
    out = Shapes("florence/literal")
    for box in body.get("bboxes") or []:
        if _numbers(box, 4):
            x0, y0, x1, y1 = box
            out.boxes.append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
        else:
            out.notes.append("a Florence-2 box without four finite numbers skipped")
    for instance in body.get("polygons") or []:
        for flat in instance if isinstance(instance, list) else []:
            if isinstance(flat, list) and len(flat) >= 6 and len(flat) % 2 == 0 and _numbers(flat, len(flat)):
                out.polygons.append([[flat[i] * sx, flat[i + 1] * sy] for i in range(0, len(flat), 2)])
            else:
                out.notes.append("a Florence-2 polygon that is no even list of six or more numbers skipped")
    if out.count() > MAX_SHAPES:
        return Shapes("florence/literal", unsupported=f"over {MAX_SHAPES} shapes in one answer")
    return out if (out.count() or "bboxes" in body or "polygons" in body) else None


def _numbers(values: object, n: int) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


_BOX_TAG = {"internvl": (re.compile(r"<box>\s*(\[.*?\])\s*</box>", re.S), 1000.0 / 1000.0),
            "deepseek": (re.compile(r"<\|det\|>\s*(\[.*?\])\s*<\|/det\|>", re.S), 1000.0 / 999.0)}


def box_tags(text: str) -> Shapes | None:
    """InternVL's ``<box>`` (0..1000) and DeepSeek-VL2's ``<|det|>`` (0..999) lists of [x1, y1, x2, y2]."""
    for name, (pattern, scale) in _BOX_TAG.items():
        found = pattern.findall(text)
        if not found:
            continue
        out = Shapes(f"{name}/box")
        for payload in found:
            try:
                value = json.loads(payload)
            except (ValueError, RecursionError):
                out.notes.append(f"an unreadable {name} box list skipped")
                continue
            boxes = value if value and all(isinstance(b, list) for b in value) else [value]
            for b in boxes:
                if _numbers(b, 4):
                    out.boxes.append([v * scale for v in b])
                else:
                    out.notes.append(f"a {name} box without four finite numbers skipped")
            if len(out.boxes) > MAX_SHAPES:
                break
        return out if out.boxes else Shapes(f"{name}/box", notes=out.notes, unsupported="no usable box in the tags")
    return None


_MOLMO_TAG = re.compile(r"<points?\b([^>]*)>", re.I)
_ATTR = re.compile(r'\b(x\d*|y\d*)\s*=\s*"([^"]*)"')


def molmo(text: str) -> Shapes | None:
    """Molmo's ``<point x=".." y="..">`` and ``<points x1=".." y1=".." ...>``, in percent."""
    tags = _MOLMO_TAG.findall(text)
    if not tags:
        return None
    out = Shapes("molmo/points")
    for attrs in tags:
        values = {}
        for k, v in _ATTR.findall(attrs):
            try:
                values[k.lower()] = float(v)
            except ValueError:
                pass
        keys = sorted({k[1:] for k in values if k[:1] == "x"}, key=lambda s: int(s or 0))
        for suffix in keys:
            x, y = values.get("x" + suffix), values.get("y" + suffix)
            if x is not None and y is not None and _finite(x, y):
                out.points.append([x * 10.0, y * 10.0])
            else:
                out.notes.append("a Molmo point without a finite x and y skipped")
        if len(out.points) > MAX_SHAPES:
            break
    return out if out.points else None


_PATH_TOKEN = re.compile(r"[MmLlHhVvCcSsQqTtZz]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ARGS = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "Z": 0}


def _bezier(p: list[tuple[float, float]], steps: int = 8) -> list[list[float]]:
    """Points along a quadratic or cubic Bezier curve (control polygon ``p``), its start left out."""
    out = []
    for k in range(1, steps + 1):
        t = k / steps
        if len(p) == 3:
            c = [(1 - t) ** 2, 2 * (1 - t) * t, t ** 2]
        else:
            c = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3]
        out.append([sum(w * q[0] for w, q in zip(c, p)), sum(w * q[1] for w, q in zip(c, p))])
    return out


def svg_path(d: str) -> list[list[list[float]]]:
    """The rings of an SVG path's ``d`` (absolute and relative M L H V C S Q T Z, curves sampled along the way), in
    the path's own units; a ring is closed by Z or by the next M."""
    tokens = _PATH_TOKEN.findall(d)
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"an SVG path of over {MAX_TOKENS} tokens")
    rings: list[list[list[float]]] = []
    ring: list[list[float]] = []
    x = y = 0.0
    start = (0.0, 0.0)
    last_ctrl: tuple[float, float] | None = None  # of the previous C/S (cubic) or Q/T (quadratic), for reflection
    cmd, i = None, 0

    def close():
        nonlocal ring
        if len(ring) >= 3:
            rings.append(ring)
        ring = []

    while i < len(tokens):
        t = tokens[i]
        if t.isalpha():
            cmd, i = t, i + 1
            if cmd in "Zz":
                close()
                x, y = start
                last_ctrl = None
                continue
        if cmd is None or cmd in "Zz":
            raise ValueError("numbers in an SVG path without a command before them")
        n = _ARGS[cmd.upper()]
        args = [float(v) for v in tokens[i:i + n]]
        if len(args) < n or not _finite(*args):
            break
        i += n
        up, dx, dy = cmd.upper(), (x if cmd.islower() else 0.0), (y if cmd.islower() else 0.0)
        if up == "H":
            x = args[0] + dx
        elif up == "V":
            y = args[0] + dy
        if up in "HV":
            ring.append([x, y])
            last_ctrl = None
            continue
        pts = [(args[k] + dx, args[k + 1] + dy) for k in range(0, n, 2)]
        if up == "M":
            close()
            start = pts[0]
            ring.append(list(pts[0]))
            cmd = "l" if cmd == "m" else "L"  # further pairs after a moveto are linetos
            last_ctrl = None
        elif up == "L":
            ring.append(list(pts[0]))
            last_ctrl = None
        elif up in "CS":
            c1 = pts[0] if up == "C" else ((2 * x - last_ctrl[0], 2 * y - last_ctrl[1]) if last_ctrl else (x, y))
            c2, end = (pts[1], pts[2]) if up == "C" else (pts[0], pts[1])
            ring.extend(_bezier([(x, y), c1, c2, end]))
            last_ctrl = c2
        else:  # Q, T
            c = pts[0] if up == "Q" else ((2 * x - last_ctrl[0], 2 * y - last_ctrl[1]) if last_ctrl else (x, y))
            end = pts[1] if up == "Q" else pts[0]
            ring.extend(_bezier([(x, y), c, end]))
            last_ctrl = c
        x, y = ring[-1]
    close()
    return rings


def moondream_path(value: object) -> Shapes | None:
    """Moondream's segmentation: an SVG path in 0..1 of the image (a string, or under ``path`` / ``svg``)."""
    d = value if isinstance(value, str) else (value.get("path") or value.get("svg")) if isinstance(value, dict) else None
    if not (isinstance(d, str) and re.match(r"\s*[Mm]\s*[-+.\d]", d)):
        return None
    try:
        rings = svg_path(d)
    except ValueError as e:
        return Shapes("svg-path", unsupported=str(e))
    out = Shapes("svg-path", polygons=[[[px * 1000.0, py * 1000.0] for px, py in r] for r in rings[:MAX_SHAPES]])
    return out if out.polygons else Shapes("svg-path", unsupported="an SVG path without a closed ring of 3 points")


def python_literal(text: str) -> object | None:
    """A Python literal answer (Florence-2's processor prints dicts with single quotes): its value, or None. Only
    literals are read (``ast.literal_eval``), never code."""
    body = text.strip()
    if not body[:2] in ("{'", "{\"", "[(", "('") or len(body) > 10_000_000:
        return None
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def read(text: str) -> Shapes | None:
    """The tagged or tokenized answer in ``text``, in the first grammar that finds something; None for none."""
    for parse in (paligemma, florence_tokens, box_tags, molmo, moondream_path):
        shapes = parse(text)
        if shapes is not None:
            return shapes
    return None

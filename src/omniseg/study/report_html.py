"""`report.html`: every case, browsable from disk (no server, no network), beside report.md.

One HTML file holds the summary tables and, as embedded JSON, one row per (task, sample, model) with
Dice, IoU, status, reason, subset and the raw-answer excerpt; the page's own script (no build step,
no external file) sorts and filters that table and shows, for a chosen case, the image with the
reference outline and each model's mask over it, side by side. Those pictures are small JPEGs in
``thumbs/`` named by a hash of what they show (sample, reference, the mask file's bytes), so a later
report reuses them without reading the dataset again, and files no longer shown are removed. Nothing
depends on the clock or on set order: the same store gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import results
from ..store.database import Store
from .document import spans
from .figures import overlay
from .recorded import recorded_samples
from .views import views
from ..store import masks as store_masks
from ..store import runs as store_runs

THUMB_SIDE = 200  # pixels, the longer side
THUMB_VERSION = "1"  # part of each thumbnail's name: bump when the drawing changes
TEMPLATE = Path(__file__).with_name("templates") / "report.html.j2"


def write(store: Store, out: Path, rep) -> Path:
    """Write ``out/report.html`` and ``out/thumbs/`` for ``rep`` (a :class:`omniseg.study.report.Report`); returns
    the HTML's path. Each task's blocks (cautions, tables, routing, Findings, figures: report.md's document) are
    drawn by the template above the cases."""
    import jinja2

    df, split = rep.per_image, rep.options.split
    thumbs_dir = out / "thumbs"
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    heads = _answer_heads(store, df)
    pictures, notes = {}, {}
    for task in sorted(df["task"].unique()):
        got = _thumbnails(store, task, df[df["task"] == task], thumbs_dir)
        if isinstance(got, str):
            notes[task] = got
        else:
            pictures.update(got)
    used = {p for v in pictures.values() for p in v.values()}
    for f in thumbs_dir.iterdir():  # pictures of cases no longer in the report
        if f.is_file() and f"thumbs/{f.name}" not in used:
            f.unlink()
    rows = []
    for r in df.itertuples(index=False):
        subset = "easiest" if pd.notna(r.easiest_rank) else "hardest" if pd.notna(r.hardest_rank) else ""
        rows.append({"task": r.task, "sample": r.sample_id, "split": r.split, "model": r.model, "status": r.status,
                     "reason": r.reason if isinstance(r.reason, str) else "", "subset": subset,
                     "rank": _int(r.easiest_rank if subset == "easiest" else r.hardest_rank),
                     "dice": _num(r.dice), "iou": _num(r.iou), "form": r.answer_form if isinstance(r.answer_form, str) else "",
                     "answer": heads.get((r.task, r.sample_id, r.model), "")})
    models = {t: sorted(df.loc[df["task"] == t, "model"].unique()) for t in sorted(df["task"].unique())}
    data = {"rows": rows, "models": models, "pictures": {f"{t}\x1f{s}": v for (t, s), v in sorted(pictures.items())},
            "notes": notes}
    payload = embeddable_json(data)
    env = jinja2.Environment(autoescape=True, keep_trailing_newline=True)
    env.filters["inline"] = inline
    html = env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        split=split, data=payload, n_rows=len(rows),
        tasks=list(models), notes=notes, sections=rep.sections, title=rep.title, preamble=rep.preamble)
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


#: characters that must never appear raw in JSON inside a <script> element: `<` could close it (`</script>`) or
#: open a comment that swallows the page's own script (`<!--<script>`); `>` and `&` likewise in old parsers; U+2028
#: and U+2029 end a line in JavaScript source
_UNSAFE_IN_SCRIPT = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}


def embeddable_json(data) -> str:
    """JSON to embed in a ``<script type="application/json">`` block: every unsafe character escaped, so no
    sample id, reason or answer text can end the block or open a comment (JSON.parse reads them back as is)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_UNSAFE_IN_SCRIPT)


def inline(text: str):
    """A block's text as safe HTML: each piece escaped, then styled (:func:`omniseg.study.document.spans`; one
    ``<b>`` around a bold run, code inside it too): sample ids and answers that hold HTML stay text."""
    from markupsafe import Markup, escape

    out, bold = [], False
    for style, piece in spans(text):
        if bold != style.startswith("bold"):
            out.append("</b>" if bold else "<b>")
            bold = not bold
        out.append(f"<code>{escape(piece)}</code>" if style.endswith("code") else str(escape(piece)))
    return Markup("".join(out) + ("</b>" if bold else ""))


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v) else round(float(v), 6)


def _int(v) -> int | None:
    return None if pd.isna(v) else int(v)


def _answer_heads(store: Store, df: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """The start of each API model's raw answer (as the row recorded it), for the case view."""
    got = results.answer_heads(store)
    return {(r.task, r.sample_id, r.model): r.head for r in got.itertuples(index=False) if r.head}


def _thumb_name(*parts: str) -> str:
    return "thumbs/" + hashlib.sha256(json.dumps([THUMB_VERSION, THUMB_SIDE, *parts]).encode()).hexdigest()[:24] + ".jpg"


def _thumbnails(store: Store, task: str, g: pd.DataFrame, folder: Path) -> dict | str:
    """{(task, sample): {"image": path, model: path}} for the task's cases; a string says why none."""
    from PIL import Image

    dataset = (store_runs.last_config(store, task) or {}).get("dataset") or {}
    if not dataset.get("name"):
        return "pictures skipped: no run with a dataset recorded"
    root = str(dataset.get("root"))
    wanted: dict[str, dict[str, tuple[str, str | None]]] = {}  # sample -> key -> (thumb path, mask file or None)
    for r in g.itertuples(index=False):
        entry = wanted.setdefault(r.sample_id, {"image": (_thumb_name(task, r.sample_id, root, "reference"), None)})
        if r.status == "ok" and isinstance(r.mask_path, str) and (store.root / r.mask_path).is_file():
            digest = hashlib.sha256((store.root / r.mask_path).read_bytes()).hexdigest()
            entry[r.model] = (_thumb_name(task, r.sample_id, root, r.model, digest), r.mask_path)
    missing = [s for s, e in wanted.items() if any(not (folder.parent / p).is_file() for p, _ in e.values())]
    if missing:
        loader = recorded_samples(store, task)
        if isinstance(loader, str):
            return f"pictures skipped: {loader}"
        slicing = (store_runs.last_config(store, task) or {}).get("slices")
        for sid in missing:
            sample = loader(sid)
            if sample is None:
                continue
            files = {key: mask_file for key, (_, mask_file) in wanted[sid].items() if mask_file is not None}
            # a volume: the slice through its largest reference area (views), every model's mask on the same slice
            view = views(sample, {key: store_masks.load_mask(store, f) for key, f in files.items()}, slicing, worst=False)[0]
            image, truth = _small(view.image, view.truth)
            for key, (rel, mask_file) in wanted[sid].items():
                if (folder.parent / rel).is_file():
                    continue
                mask = None
                if mask_file is not None and view.masks.get(key) is not None:
                    mask = np.asarray(Image.fromarray(view.masks[key]).resize(truth.shape[::-1], Image.NEAREST))
                _save_jpeg(overlay(image, mask, ref=truth), folder.parent / rel)
    return {(task, sid): {k: p for k, (p, _) in e.items() if (folder.parent / p).is_file()} for sid, e in wanted.items()}


def _small(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    h, w = mask.shape
    scale = min(1.0, THUMB_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
    small = np.asarray(Image.fromarray(img[..., :3].astype(np.uint8)).resize(size, Image.BILINEAR))
    return small, np.asarray(Image.fromarray(mask.astype(bool)).resize(size, Image.NEAREST))


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=82, optimize=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)

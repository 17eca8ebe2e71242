"""The review page: one HTML file, served by :mod:`.server` or exported with every item inside it.

What the page receives for an item (:func:`payload`) is its opaque id, its side, the two pictures and the
region's box: never the models it is credited to, so no name or kind of a model reaches the page or its
requests. The exported page keeps answers in the browser (localStorage) and gives them as a CSV file, which
:func:`import_csv` reads back after checking every row against the item list.
"""

from __future__ import annotations

import base64
import csv
import math
from pathlib import Path

from ...errors import OmnisegError
from ...store.database import Store
from ...store.schema import file_name
from ..report_html import embeddable_json
from . import items as items_mod
from .claim import VERDICTS
from ...store import reviews as store_reviews

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "review.html.j2"
CSV_COLUMNS = ["task", "item_id", "reviewer", "verdict", "note", "seconds", "answered_at"]


def _data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


class Pictures:
    """Item payloads for one task, the dataset opened once."""

    def __init__(self, store: Store, task: str, data_root=None):
        from ..recorded import recorded_samples

        self.items = items_mod.load(store, task)
        self.loader = recorded_samples(store, task, data_root)
        if isinstance(self.loader, str):
            raise OmnisegError(f"task {task!r}: the review page shows the images: {self.loader}")

    def payload(self, item_id: str) -> dict:
        it = self.items[item_id]
        sample = self.loader(it["sample_id"])
        if sample is None:
            raise OmnisegError(f"sample of review item {item_id} could not be read from the dataset")
        pic = items_mod.render(it, sample.image, sample.mask)
        return {"item": item_id, "side": it["side"], "image": _data_url("image/jpeg", pic["image"]),
                "overlay": _data_url("image/png", pic["overlay"]), "size": list(pic["size"]), "box": pic["box"]}


def html(task: str, reviewer: str, embedded: dict | None = None) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, keep_trailing_newline=True)
    return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        task=task, reviewer=reviewer, embedded=embeddable_json(embedded or {}))


def export(store: Store, task: str, reviewer: str, folder: Path, seed: int | None = None,
           data_root=None, progress: bool = False) -> Path:
    """``folder/review-<task>-<reviewer>.html``: the reviewer's items in their recorded order, self-contained
    (pictures inside, no network), answers kept in the browser and downloaded as CSV."""
    from ...progress import bar

    used_seed, order = items_mod.order(store, task, reviewer, seed)
    pictures = Pictures(store, task, data_root)
    embedded = {"task": task, "reviewer": reviewer, "seed": used_seed,
                "items": [pictures.payload(i) for i in bar(order, desc=f"{task}: pictures", disable=not progress)]}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"review-{file_name(task)}-{file_name(reviewer)}.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html(task, reviewer, embedded), encoding="utf-8")
    tmp.replace(path)
    return path


def import_csv(store: Store, path: Path, task: str | None = None) -> dict[str, int]:
    """Read an exported page's CSV into the store (every row checked first; nothing is written when one is
    wrong); returns answers per task. Importing the same file again changes nothing."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("task", "item_id", "reviewer", "verdict") if c not in (reader.fieldnames or [])]
            if missing:
                raise OmnisegError(f"{path}: not a review CSV: missing column(s) {', '.join(missing)} "
                                   f"(expected {','.join(CSV_COLUMNS)})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise OmnisegError(f"{path}: cannot read: {e}") from None
    known: dict[str, dict] = {}
    problems = []
    answers: dict[tuple[str, str, str], tuple[int, tuple]] = {}  # (task, item, reviewer) -> (line, answer)
    for n, r in enumerate(rows, start=2):
        t = (r.get("task") or "").strip()
        if task and t != task:
            problems.append(f"line {n}: task {t!r}, expected {task!r}")
            continue
        if t not in known:
            known[t] = items_mod.load(store, t)
        item_id, who = (r.get("item_id") or "").strip(), (r.get("reviewer") or "").strip()
        it = known[t].get(item_id)
        verdict = (r.get("verdict") or "").strip()
        if it is None:
            problems.append(f"line {n}: item {r.get('item_id')!r} is not a review item of task {t!r} in {store.path}")
        elif verdict not in VERDICTS:
            problems.append(f"line {n}: verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
        elif verdict == "finding" and it["side"] == "reference-only":
            problems.append(f"line {n}: 'finding' on a region the annotation marks (reference-only)")
        elif not who:
            problems.append(f"line {n}: no reviewer")
        numbers = {}
        for col in ("seconds", "answered_at"):
            text = (r.get(col) or "").strip()
            try:
                numbers[col] = float(text) if text else None
            except ValueError:
                problems.append(f"line {n}: {col} {r.get(col)!r} is not a number")
                continue
            if numbers[col] is not None and not (math.isfinite(numbers[col]) and numbers[col] >= 0):
                problems.append(f"line {n}: {col} {r.get(col)!r} is not a time (a finite number of seconds, 0 or more)")
        answer = (verdict, r.get("note") or "", numbers.get("seconds"), numbers.get("answered_at"))
        first = answers.setdefault((t, item_id, who), (n, answer))
        if first[1][:2] != answer[:2]:
            problems.append(f"lines {first[0]} and {n}: two answers of {who!r} on item {item_id!r} "
                            f"({first[1][0]} and {verdict}); keep one")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise OmnisegError(f"{path}: nothing imported:\n  " + "\n  ".join(problems[:10]) + more)
    store_reviews.put_reviews(store, [(t, item_id, who, *answer) for (t, item_id, who), (_, answer) in answers.items()],
                      source="import")
    done: dict[str, int] = {}
    for t, _, _ in answers:
        done[t] = done.get(t, 0) + 1
    return done

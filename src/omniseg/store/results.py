"""Reads of the results (tables ``predictions``, ``scores``, ``samples``, with the models' roles and the curated
ranks): the rows the report, curation, the review and redecode are built from."""

from __future__ import annotations

import json
import re
import time
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import OmnisegError
from ..redaction import redact
from ..scoring.metrics import NAME
from . import bookings, masks
from .database import Store
from .schema import META_COLUMNS, field


def per_image(store: Store, task: str | None = None, split: str = "test") -> pd.DataFrame:
    """One row per (task, sample, model) of ``split`` ('all': every split): status, curated ranks, every score
    column, the answer form and confidence the model reported, time, mask file, kind, role and privilege."""
    score_cols = score_columns(store)
    cond, params = [], []
    if task:
        cond.append("p.task = ?")
        params.append(task)
    if split != "all":
        cond.append("s.split = ?")
        params.append(split)
    where = ("WHERE " + " AND ".join(cond)) if cond else ""
    return store.query(
        f"""SELECT p.task, s.split, p.sample_id, p.model, p.status, p.reason,
                   e.rank AS easiest_rank, h.rank AS hardest_rank,
                   {", ".join("c." + c for c in score_cols)},
                   {field(store, "answer_form")} AS answer_form,
                   {field(store, "confidence")} AS confidence, p.elapsed_s, p.mask_path,
                   mo.kind AS kind, mo.role AS role,
                   {field(store, "privileged", "mo")} AS privileged
            FROM predictions p
            LEFT JOIN models mo ON mo.task = p.task AND mo.model = p.model
            JOIN samples s ON s.task = p.task AND s.sample_id = p.sample_id
            LEFT JOIN scores c ON c.task = p.task AND c.sample_id = p.sample_id AND c.model = p.model
            LEFT JOIN subsets e ON e.task = p.task AND e.sample_id = p.sample_id AND e.subset = 'easiest'
            LEFT JOIN subsets h ON h.task = p.task AND h.sample_id = p.sample_id AND h.subset = 'hardest'
            {where}
            ORDER BY p.task, p.model, p.sample_id""",
        tuple(params),
    )


def scored_splits(store: Store, task: str, model: str) -> list[str]:
    """The splits ``model``'s scores of the task cover."""
    return store.query("SELECT DISTINCT s.split FROM scores c JOIN samples s ON s.task = c.task AND"
                       " s.sample_id = c.sample_id WHERE c.task = ? AND c.model = ?", (task, model))["split"].tolist()


def metric_of(store: Store, task: str, model: str, metric: str, split: str) -> pd.DataFrame:
    """sample_id, split and ``metric`` (as ``value``) of ``model``'s scores on ``split`` ('all': every split);
    ``metric`` is a score column (the caller checks it against Store.score_columns)."""
    where = "" if split == "all" else "AND s.split = ?"
    params = (task, model) + (() if split == "all" else (split,))
    return store.query(
        f"SELECT c.sample_id, s.split, c.{metric} AS value FROM scores c JOIN samples s"
        f" ON s.task = c.task AND s.sample_id = c.sample_id WHERE c.task = ? AND c.model = ? {where}",
        params,
    )


def scored_models(store: Store, task: str) -> list[str]:
    return store.query("SELECT DISTINCT model FROM scores WHERE task = ?", (task,))["model"].tolist()


def predicted_models(store: Store, task: str) -> set[str]:
    return set(store.query("SELECT DISTINCT model FROM predictions WHERE task = ?", (task,))["model"])


def answer_heads(store: Store) -> pd.DataFrame:
    """task, sample_id, model and the start of the raw answer, for the rows of API models that kept one."""
    head = field(store, "answer_head", "")
    return store.query(f"SELECT task, sample_id, model, {head} AS head FROM predictions WHERE {head} IS NOT NULL")


def endpoints(store: Store, task: str) -> list[tuple[str, str]]:
    """(model, endpoint) pairs the task's answers came from, as the rows recorded them."""
    endpoint = field(store, "endpoint", "")
    return store.db.execute(f"SELECT DISTINCT model, {endpoint} FROM predictions WHERE task = ? AND {endpoint} IS NOT NULL"
                            " ORDER BY 1, 2", (task,)).fetchall()


def metas(store: Store, task: str, model: str) -> pd.DataFrame:
    """sample_id, status and meta (JSON text; '{}' where the row has none) of every row of ``model``."""
    return store.query("SELECT sample_id, status, COALESCE(meta, '{}') AS meta FROM predictions WHERE task = ? AND "
                       "model = ? ORDER BY sample_id", (task, model))


def ok_masks(store: Store, task: str, models: list[str], subset: str | None, split: str) -> pd.DataFrame:
    """sample_id, model, mask_path and created_at of the ``ok`` rows of ``models``, on the curated ``subset`` when
    given, else on ``split`` ('all': every split)."""
    where, params = ["p.task = ?", "p.status = 'ok'", f"p.model IN ({','.join('?' * len(models))})"], [task, *models]
    if subset:
        where.append("p.sample_id IN (SELECT sample_id FROM subsets WHERE task = ? AND subset = ?)")
        params += [task, subset]
    elif split != "all":
        where.append("s.split = ?")
        params.append(split)
    return store.query(f"SELECT p.sample_id, p.model, p.mask_path, p.created_at FROM predictions p JOIN samples s "
                       f"ON s.task = p.task AND s.sample_id = p.sample_id WHERE {' AND '.join(where)} "
                       "ORDER BY p.sample_id, p.model", tuple(params))


def tasks(store: Store) -> list[str]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    return [r[0] for r in store.db.execute("SELECT DISTINCT task FROM predictions ORDER BY task")]


def add_samples(store: Store, task: str, rows: Iterable[tuple[str, str, str | None, dict]]) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """(sample_id, split, problem, meta) for every sample a run was asked to cover."""
    with store.transaction():
        store.db.executemany(
            "INSERT INTO samples VALUES (?,?,?,?,?) ON CONFLICT(task, sample_id) DO UPDATE SET"
            " split=excluded.split, problem=excluded.problem, meta=excluded.meta",
            [(task, sid, split, problem, json.dumps(meta, sort_keys=True, default=str)) for sid, split, problem, meta in rows],
        )


def pairs_recorded(store: Store) -> int:
    """How many (task, sample, model) rows the store holds (a sharded run's progress)."""
    return store.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


def done_pairs(store: Store, task: str, redo: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    """(sample, model) pairs with a row, except rows whose status is in ``redo``."""
    rows = store.db.execute("SELECT sample_id, model, status FROM predictions WHERE task=?", (task,))
    return {(r[0], r[1]) for r in rows if r[2] not in redo}


def delete_model(store: Store, task: str, model: str) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    with store.transaction():
        store.db.execute("DELETE FROM predictions WHERE task=? AND model=?", (task, model))
        store.db.execute("DELETE FROM scores WHERE task=? AND model=?", (task, model))


def score_columns(store: Store) -> list[str]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """The score columns this store has: counts, then metrics in the order they were added."""
    return [c for c in store.columns("scores") if c not in ("task", "sample_id", "model")]


def _put_scores(store: Store, task: str, sample_id: str, model: str, scores: dict | None) -> None:
    store.db.execute("DELETE FROM scores WHERE task=? AND sample_id=? AND model=?", (task, sample_id, model))
    if scores is None:
        return
    known = set(score_columns(store))
    for name in [c for c in scores if c not in known]:
        # a metric registered after the store was made (a plugin): its column is added, once
        if not re.fullmatch(NAME, name):
            raise OmnisegError(f"metric name {name!r}: use lower-case letters, digits and '_' (a store column)")
        store.db.execute(f"ALTER TABLE scores ADD COLUMN {name} REAL")
    names = list(scores)
    store.db.execute(f"INSERT INTO scores (task, sample_id, model, {', '.join(names)}) VALUES "
                    f"(?,?,?,{','.join('?' * len(names))})", (task, sample_id, model, *[scores[c] for c in names]))


def _meta_fields(kept: str) -> dict:
    """The columns the study reads (schema.META_COLUMNS), from the row's meta as stored (keys redacted)."""
    meta = json.loads(kept)
    out = {}
    for column, decl in META_COLUMNS.items():
        v = meta.get(column)
        if decl == "REAL":
            out[column] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        else:
            out[column] = v if isinstance(v, str) else None
    return out


def record(store: Store, run_id: int, task: str, sample_id: str, model: str, *, status: str, reason: str = "",
           mask: np.ndarray | None = None, prob: np.ndarray | None = None, scores: dict | None = None,
           elapsed_s: float | None = None, meta: dict | None = None, calls: list[dict] | None = None,
           grid: np.ndarray | None = None) -> None:
    """Write one pair: files first, then prediction and scores in one transaction. A volume's mask (3-D) is
    written as NIfTI on ``grid``, its image's voxel-to-world matrix (height and width are a slice's)."""
    mask_path = prob_path = None
    h = w = None
    if mask is not None:
        h, w = mask.shape[-2:]
        mask_path = masks.write_mask(store, task, model, sample_id, mask, grid)
    if prob is not None:
        q = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)  # 8-bit: 1/255 steps are plenty
        prob_path = masks.write_atomic(store, masks.mask_file(task, model, sample_id, ".prob.png"),
                                       lambda p: Image.fromarray(q).save(p, format="PNG", compress_level=1))
    kept = redact(json.dumps(meta or {}, sort_keys=True, default=str))
    fields = _meta_fields(kept)
    with store.transaction():
        store.db.execute(
            "INSERT OR REPLACE INTO predictions (task, sample_id, model, run_id, status, reason, mask_path, prob_path,"
            f" height, width, elapsed_s, created_at, meta, {', '.join(fields)}) VALUES ({','.join('?' * (13 + len(fields)))})",
            (task, sample_id, model, run_id, status, redact(reason), mask_path, prob_path, h, w, elapsed_s, time.time(),
             kept, *fields.values()),
        )
        _put_scores(store, task, sample_id, model, scores)
        bookings.add_calls(store, run_id, task, sample_id, model, calls or [])


def rewrite(store: Store, task: str, sample_id: str, model: str, *, status: str, reason: str, mask: np.ndarray | None,
            scores: dict | None, meta: dict) -> None:
    """Replace a pair's outcome after decoding its kept answer again (``omniseg redecode``).

    The run, creation time, timing and API calls of the row stay: no new call was made.
    """
    mask_path = masks.write_mask(store, task, model, sample_id, mask) if mask is not None else None
    h, w = mask.shape if mask is not None else (None, None)
    kept = redact(json.dumps(meta, sort_keys=True, default=str))
    fields = _meta_fields(kept)
    with store.transaction():
        store.db.execute(
            "UPDATE predictions SET status=?, reason=?, mask_path=?, height=?, width=?, meta=?, "
            + ", ".join(f"{c}=?" for c in fields) + " WHERE task=? AND sample_id=? AND model=?",
            (status, redact(reason), mask_path, h, w, kept, *fields.values(), task, sample_id, model),
        )
        _put_scores(store, task, sample_id, model, scores)

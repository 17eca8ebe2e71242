"""Reads of the results (tables ``predictions``, ``scores``, ``samples``, with the models' roles and the curated
ranks): the rows the report, curation, the review and redecode are built from."""

from __future__ import annotations

import pandas as pd

from .database import Store


def per_image(store: Store, task: str | None = None, split: str = "test") -> pd.DataFrame:
    """One row per (task, sample, model) of ``split`` ('all': every split): status, curated ranks, every score
    column, the answer form and confidence the model reported, time, mask file, kind, role and privilege."""
    score_cols = store.score_columns()
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
                   json_extract(p.meta, '$.answer_form') AS answer_form,
                   json_extract(p.meta, '$.confidence') AS confidence, p.elapsed_s, p.mask_path,
                   mo.kind AS kind, mo.role AS role,
                   COALESCE(json_extract(mo.signature, '$.privileged'), 0) AS privileged
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
    return store.query("SELECT task, sample_id, model, json_extract(meta, '$.answer_head') AS head FROM predictions"
                       " WHERE json_extract(meta, '$.answer_head') IS NOT NULL")


def endpoints(store: Store, task: str) -> list[tuple[str, str]]:
    """(model, endpoint) pairs the task's answers came from, as the rows recorded them."""
    return store.db.execute("SELECT DISTINCT model, json_extract(meta, '$.endpoint') FROM predictions WHERE task = ?"
                            " AND json_extract(meta, '$.endpoint') IS NOT NULL ORDER BY 1, 2", (task,)).fetchall()


def metas(store: Store, task: str, model: str) -> pd.DataFrame:
    """sample_id, status and meta (JSON text) of every row of ``model``."""
    return store.query("SELECT sample_id, status, meta FROM predictions WHERE task = ? AND model = ? ORDER BY sample_id",
                       (task, model))


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

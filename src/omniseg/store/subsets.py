"""Reads of the curated subsets (table ``subsets``, written by Store.set_subsets through `omniseg curate`)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from .database import Store


def members(store: Store, task: str) -> pd.DataFrame:
    """subset, sample id and the reference that chose it, in rank order per subset."""
    return store.query("SELECT subset, sample_id, reference FROM subsets WHERE task = ? ORDER BY subset, rank", (task,))


def summary(store: Store, task: str) -> pd.DataFrame:
    """Per subset, reference, metric and split: how many cases."""
    return store.query("SELECT subset, reference, metric, split, COUNT(*) n FROM subsets WHERE task = ?"
                       " GROUP BY 1, 2, 3, 4 ORDER BY 1", (task,))


def references(store: Store, task: str) -> list[str]:
    """The models that picked the task's easiest cases (one, unless the store holds a stale mix)."""
    return store.query("SELECT DISTINCT reference FROM subsets WHERE task = ? AND subset = 'easiest'",
                       (task,))["reference"].tolist()


def exists(store: Store, task: str, subset: str) -> bool:
    return bool(len(store.query("SELECT 1 FROM subsets WHERE task = ? AND subset = ? LIMIT 1", (task, subset))))


def set_subsets(store: Store, task: str, rows: list[dict[str, Any]]) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Replace a task's easiest/hardest lists (curation is redone as a whole)."""
    with store.transaction():
        store.db.execute("DELETE FROM subsets WHERE task=?", (task,))
        now = time.time()
        store.db.executemany(
            "INSERT INTO subsets VALUES (?,?,?,?,?,?,?,?,?)",
            [(task, r["subset"], r["rank"], r["sample_id"], r["split"], r["reference"], r["metric"], r["value"], now)
             for r in rows],
        )


def curated(store: Store, task: str) -> tuple[int, str] | None:
    """How many easiest cases the task's stored lists hold and which model picked them; None before curation."""
    row = store.db.execute("SELECT COUNT(*), MIN(reference) FROM subsets WHERE task=? AND subset='easiest'",
                          (task,)).fetchone()
    return (row[0], row[1]) if row and row[0] else None


def set_difficulty(store: Store, task: str, values: dict[str, dict[str, float]]) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Image-based difficulty per sample (omniseg.study.difficulty), replaced as a whole per task."""
    with store.transaction():
        store.db.execute("DELETE FROM difficulty WHERE task=?", (task,))
        store.db.executemany("INSERT INTO difficulty VALUES (?,?,?,?)",
                            [(task, sid, v["lesion_share"], None if v["contrast"] != v["contrast"] else v["contrast"])
                             for sid, v in values.items()])

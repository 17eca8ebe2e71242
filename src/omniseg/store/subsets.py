"""Reads of the curated subsets (table ``subsets``, written by Store.set_subsets through `omniseg curate`)."""

from __future__ import annotations

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

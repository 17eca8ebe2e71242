"""Reads of the expert review (tables ``review_sets``, ``review_items``, ``review_credits``, ``reviews``; written
through Store's review methods): what the review commands, its server and claim 4 go by."""

from __future__ import annotations

import pandas as pd

from .database import Store

ANSWER_COLUMNS = ["item_id", "reviewer", "verdict", "note", "seconds", "sample_id", "side"]


def answers(store: Store, task: str) -> pd.DataFrame:
    """Every answer given on the task's items, with the item's sample and side (none in a store older than the
    review tables)."""
    if not store.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviews'").fetchone():
        return pd.DataFrame(columns=ANSWER_COLUMNS)
    return store.query("SELECT r.item_id, r.reviewer, r.verdict, r.note, r.seconds, i.sample_id, i.side "
                       "FROM reviews r JOIN review_items i ON i.task = r.task AND i.item_id = r.item_id "
                       "WHERE r.task = ? ORDER BY r.item_id, r.reviewer", (task,))


def answers_of(store: Store, task: str, reviewer: str) -> dict[str, dict]:
    """item id -> the verdict and note ``reviewer`` gave."""
    rows = store.db.execute("SELECT item_id, verdict, note FROM reviews WHERE task=? AND reviewer=?",
                            (task, reviewer)).fetchall()
    return {r[0]: {"verdict": r[1], "note": r[2]} for r in rows}


def answer_count(store: Store, task: str, reviewer: str | None = None) -> int:
    """How many answers the task's items have (by ``reviewer`` alone when given)."""
    if reviewer is None:
        return int(store.db.execute("SELECT COUNT(*) FROM reviews WHERE task = ?", (task,)).fetchone()[0])
    return int(store.db.execute("SELECT COUNT(*) FROM reviews WHERE task=? AND reviewer=?", (task, reviewer)).fetchone()[0])


def built_options(store: Store, task: str) -> str | None:
    """The options (JSON text) the task's items were built with, or None when there are none."""
    have = store.query("SELECT options FROM review_sets WHERE task = ?", (task,))
    return have["options"][0] if len(have) else None


def sides(store: Store, task: str) -> dict[str, int]:
    """side -> how many items."""
    rows = store.query("SELECT side, COUNT(*) AS n FROM review_items WHERE task = ? GROUP BY side", (task,))
    return dict(zip(rows["side"], rows["n"].astype(int)))


def item_ids(store: Store, task: str) -> list[str]:
    return store.query("SELECT item_id FROM review_items WHERE task = ? ORDER BY item_id", (task,))["item_id"].tolist()


def items(store: Store, task: str) -> tuple[list, dict[str, list[str]]]:
    """The task's item rows (sqlite3.Row) and item id -> the models it is credited to."""
    rows = store.db.execute("SELECT * FROM review_items WHERE task = ?", (task,)).fetchall()
    credits: dict[str, list[str]] = {}
    for r in store.db.execute("SELECT item_id, model FROM review_credits WHERE task = ? ORDER BY model", (task,)):
        credits.setdefault(r[0], []).append(r[1])
    return rows, credits

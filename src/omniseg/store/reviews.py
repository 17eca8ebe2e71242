"""Reads of the expert review (tables ``review_sets``, ``review_items``, ``review_credits``, ``reviews``; written
through Store's review methods): what the review commands, its server and claim 4 go by."""

from __future__ import annotations

import json
import time

import pandas as pd

from .bookings import finite
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


def set_review_items(store: Store, task: str, options: dict, items: list[dict]) -> None:
    """Replace a task's review items (each with its ``models``, the models it is credited to), and with them
    the reviewers' orders and answers: the caller refuses to drop answers unless told to."""
    with store.transaction():
        for table in ("reviews", "review_orders", "review_credits", "review_items", "review_sets"):
            store.db.execute(f"DELETE FROM {table} WHERE task=?", (task,))
        store.db.execute("INSERT INTO review_sets VALUES (?,?,?)", (task, json.dumps(options, sort_keys=True), time.time()))
        store.db.executemany(
            "INSERT INTO review_items VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(task, it["item_id"], it["sample_id"], it["side"], it["area"], *it["bbox"], it["height"], it["width"],
              it["region"]) for it in items])
        store.db.executemany("INSERT INTO review_credits VALUES (?,?,?)",
                            [(task, it["item_id"], m) for it in items for m in sorted(it["models"])])


def review_order(store: Store, task: str, reviewer: str, seed: int, items: list[str]) -> tuple[int, list[str]]:
    """A reviewer's order of the items: the one recorded at their first start, else ``items`` (shuffled by the
    caller with ``seed``), recorded now. Returns the recorded seed and order."""
    with store.transaction():
        store.db.execute("INSERT OR IGNORE INTO review_orders VALUES (?,?,?,?,?)",
                        (task, reviewer, int(seed), json.dumps(items), time.time()))
        row = store.db.execute("SELECT seed, items FROM review_orders WHERE task=? AND reviewer=?",
                              (task, reviewer)).fetchone()
    return int(row["seed"]), json.loads(row["items"])


def put_review(store: Store, task: str, item_id: str, reviewer: str, verdict: str, note: str = "",
               seconds: float | None = None, source: str = "page", answered_at: float | None = None) -> None:
    """One reviewer's answer on one item, committed at once (a second answer replaces the first)."""
    with store.transaction():
        store.db.execute("INSERT OR REPLACE INTO reviews VALUES (?,?,?,?,?,?,?,?)",
                        (task, item_id, reviewer, verdict, note or "", finite(seconds),
                         time.time() if answered_at is None else answered_at, source))


def put_reviews(store: Store, answers: list[tuple], source: str) -> None:
    """Answers (task, item, reviewer, verdict, note, seconds, answered_at or None), all in one transaction: an
    import is stored whole or not at all."""
    now = time.time()
    with store.transaction():
        store.db.executemany("INSERT OR REPLACE INTO reviews VALUES (?,?,?,?,?,?,?,?)",
                            [(t, i, r, v, note or "", finite(sec), now if at is None else at, source)
                             for t, i, r, v, note, sec, at in answers])


def undo_review(store: Store, task: str, reviewer: str) -> str | None:
    """Delete the reviewer's latest answer; returns its item (None when there was none)."""
    with store.transaction():
        row = store.db.execute("SELECT item_id FROM reviews WHERE task=? AND reviewer=? "
                              "ORDER BY answered_at DESC, rowid DESC LIMIT 1", (task, reviewer)).fetchone()
        if row is not None:
            store.db.execute("DELETE FROM reviews WHERE task=? AND reviewer=? AND item_id=?",
                            (task, reviewer, row["item_id"]))
    return None if row is None else row["item_id"]

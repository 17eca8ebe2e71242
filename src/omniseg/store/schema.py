"""The store's schema (tables, migrations are in omniseg.store.database), its file names and its transactions."""

from __future__ import annotations

import hashlib
import sqlite3

from ..errors import OmnisegError
from ..scoring.metrics import SCORE_COLUMNS

SCHEMA_VERSION = 6  # 2: models.role; 3: batch_jobs, batch_requests; 4: workers, runs.host/pid, api_calls.cost_known;
# 5: the expert review tables (review_sets, review_items, review_credits, review_orders, reviews); 6: the fields the
# study reads as columns (predictions.answer_form, confidence, answer_head, endpoint; models.privileged, api_model)
# (score columns are added as metrics are registered)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL, split TEXT NOT NULL, models TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
    config TEXT NOT NULL, config_hash TEXT NOT NULL, split_fingerprint TEXT,
    omniseg_version TEXT NOT NULL, argv TEXT, summary TEXT,
    host TEXT, pid INTEGER, pid_started TEXT
);
CREATE TABLE IF NOT EXISTS models (
    task TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,
    signature TEXT NOT NULL, signature_hash TEXT NOT NULL, role TEXT,
    privileged INTEGER NOT NULL DEFAULT 0, api_model TEXT,
    PRIMARY KEY (task, model)
);
CREATE TABLE IF NOT EXISTS samples (
    task TEXT NOT NULL, sample_id TEXT NOT NULL, split TEXT NOT NULL,
    problem TEXT, meta TEXT,
    PRIMARY KEY (task, sample_id)
);
CREATE TABLE IF NOT EXISTS predictions (
    task TEXT NOT NULL, sample_id TEXT NOT NULL, model TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    mask_path TEXT, prob_path TEXT, height INTEGER, width INTEGER,
    elapsed_s REAL, created_at REAL NOT NULL, meta TEXT,
    answer_form TEXT, confidence REAL, answer_head TEXT, endpoint TEXT,
    PRIMARY KEY (task, sample_id, model)
);
CREATE TABLE IF NOT EXISTS scores (
    task TEXT NOT NULL, sample_id TEXT NOT NULL, model TEXT NOT NULL,
    {", ".join(f"{c} {'INTEGER' if c in ('tp', 'fp', 'fn', 'tn', 'pred_px', 'ref_px') else 'REAL'}" for c in SCORE_COLUMNS)},
    PRIMARY KEY (task, sample_id, model)
);
CREATE TABLE IF NOT EXISTS api_calls (
    call_id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL, sample_id TEXT NOT NULL, model TEXT NOT NULL, run_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL, outcome TEXT NOT NULL, http_status INTEGER, error TEXT,
    latency_s REAL, prompt_tokens INTEGER, output_tokens INTEGER, thoughts_tokens INTEGER,
    cost_usd REAL NOT NULL DEFAULT 0, model_version TEXT, cache_key TEXT, created_at REAL NOT NULL,
    cost_known INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS workers (
    task TEXT NOT NULL, model TEXT NOT NULL, command TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, pid_started TEXT, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL,
    PRIMARY KEY (task, model)
);
CREATE TABLE IF NOT EXISTS difficulty (
    task TEXT NOT NULL, sample_id TEXT NOT NULL, lesion_share REAL, contrast REAL,
    PRIMARY KEY (task, sample_id)
);
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_key TEXT PRIMARY KEY, task TEXT NOT NULL, model TEXT NOT NULL, display_name TEXT NOT NULL,
    name TEXT, input TEXT NOT NULL, input_file TEXT, state TEXT NOT NULL, requests INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, collected_at REAL, message TEXT
);
CREATE TABLE IF NOT EXISTS batch_requests (
    job_key TEXT NOT NULL REFERENCES batch_jobs(job_key), cache_key TEXT NOT NULL, sample_id TEXT NOT NULL,
    status TEXT, error TEXT,
    PRIMARY KEY (job_key, cache_key)
);
CREATE TABLE IF NOT EXISTS subsets (
    task TEXT NOT NULL, subset TEXT NOT NULL, rank INTEGER NOT NULL,
    sample_id TEXT NOT NULL, split TEXT NOT NULL, reference TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (task, subset, rank)
);
CREATE TABLE IF NOT EXISTS review_sets (
    task TEXT PRIMARY KEY, options TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS review_items (
    task TEXT NOT NULL, item_id TEXT NOT NULL, sample_id TEXT NOT NULL, side TEXT NOT NULL,
    area INTEGER NOT NULL, y0 INTEGER NOT NULL, x0 INTEGER NOT NULL, y1 INTEGER NOT NULL, x1 INTEGER NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL, region BLOB NOT NULL,
    PRIMARY KEY (task, item_id)
);
CREATE TABLE IF NOT EXISTS review_credits (
    task TEXT NOT NULL, item_id TEXT NOT NULL, model TEXT NOT NULL,
    PRIMARY KEY (task, item_id, model)
);
CREATE TABLE IF NOT EXISTS review_orders (
    task TEXT NOT NULL, reviewer TEXT NOT NULL, seed INTEGER NOT NULL, items TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (task, reviewer)
);
CREATE TABLE IF NOT EXISTS reviews (
    task TEXT NOT NULL, item_id TEXT NOT NULL, reviewer TEXT NOT NULL, verdict TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '', seconds REAL, answered_at REAL NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (task, item_id, reviewer)
);
"""


#: schema 6's columns, each a field of the row's JSON (a prediction's ``meta``, a model's ``signature``) that the
#: study reads; filled on every write, and from the JSON for rows an older omniseg wrote (:data:`FILL_COLUMNS`)
META_COLUMNS = {"answer_form": "TEXT", "confidence": "REAL", "answer_head": "TEXT", "endpoint": "TEXT"}
SIGNATURE_COLUMNS = {"privileged": ("INTEGER NOT NULL DEFAULT 0", "$.privileged"), "api_model": ("TEXT", "$.options.model")}


def _from_json(name: str, prefix: str = "") -> str:
    """The SQL reading column ``name``'s value from its row's JSON, typed as a write types it (a number that is no
    number, a text that is no text: NULL; privileged: 0 or 1)."""
    if name in META_COLUMNS:
        want = "('real', 'integer')" if META_COLUMNS[name] == "REAL" else "('text')"
        return (f"(CASE WHEN json_type({prefix}meta, '$.{name}') IN {want} "
                f"THEN json_extract({prefix}meta, '$.{name}') END)")
    path = SIGNATURE_COLUMNS[name][1]
    if name == "privileged":
        return f"(COALESCE(json_extract({prefix}signature, '{path}'), 0) != 0)"
    return f"(CASE WHEN json_type({prefix}signature, '{path}') = 'text' THEN json_extract({prefix}signature, '{path}') END)"


FILL_COLUMNS = (
    "UPDATE predictions SET " + ", ".join(f"{c} = {_from_json(c)}" for c in META_COLUMNS)
    + " WHERE meta IS NOT NULL AND json_valid(meta)",
    "UPDATE models SET " + ", ".join(f"{c} = {_from_json(c)}" for c in SIGNATURE_COLUMNS) + " WHERE json_valid(signature)",
)


def field(store, name: str, alias: str = "p") -> str:
    """The SQL expression that reads schema 6's column ``name`` (of ``predictions`` or ``models``, as ``alias``):
    the column; in a store from before it that is open read-only (so not migrated), the same value from its JSON."""
    table = "predictions" if name in META_COLUMNS else "models"
    prefix = f"{alias}." if alias else ""
    return prefix + name if name in store.columns(table) else _from_json(name, prefix)


#: the longest name :func:`file_name` gives, in UTF-8 bytes: file systems allow 255, and a file's suffixes
#: (``.prob.png``), a writer's temporary suffix and a report's two or three names in one file name need the rest
NAME_BYTES = 100


def file_name(part: str, limit: int = NAME_BYTES) -> str:
    """A file-name-safe rendering of an id, distinct for distinct ids, at most ``limit`` bytes in UTF-8.

    Ids keep their spaces and brackets (``benign (12)``); any other character is replaced, and then
    a short hash of the original id is appended, so ``x;1``, ``x:1`` and ``x_1`` get three files.
    A leading dot is replaced too: no name can be ``.`` or ``..`` or hidden. A longer id is cut (at a
    character boundary) and given the hash, so any id fits the file system (the id itself stays in the store).
    """
    name = "".join(ch if ch.isalnum() or ch in "-_.() " else "_" for ch in part)
    if name.startswith("."):
        name = "_" + name[1:]
    if name != part or not name or len(name.encode()) > limit:
        tag = "~" + hashlib.sha256(part.encode(errors="surrogatepass")).hexdigest()[:8]
        name = name.encode()[:limit - len(tag)].decode(errors="ignore") + tag
    return name


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; a full disk or a read-only file is one message
    (:func:`omniseg.store.sqlite.unusable`, shared with the answer archive)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._unwritable(e) from None
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.OperationalError as e:
                exc = e
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise self._unwritable(exc) from None
        return False

    def _unwritable(self, e: sqlite3.OperationalError) -> OmnisegError:
        from pathlib import Path

        from .sqlite import unusable

        return unusable(Path(self.db.execute("PRAGMA database_list").fetchone()[2]), "store", e)

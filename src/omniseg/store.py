"""The one SQLite store that is the source of truth: runs, samples, predictions, scores, subsets.

A (task, sample, model) pair has at most one prediction row (primary key), and its
prediction and score rows are written in one transaction, so a run killed at any instant
leaves each pair either complete or absent. Masks are PNG files beside the database,
written (atomically, by rename) before the row that points to them is committed.
docs/outputs.md documents every table and column.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from ._schema import SCHEMA, SCHEMA_VERSION, Transaction, file_name
from .cache import readonly_uri
from .errors import OmnisegError

DEFAULT_PATH = Path("runs") / "omniseg.sqlite"
class Store:
    """One SQLite database plus the mask files beside it."""

    def __init__(self, path: str | Path = DEFAULT_PATH, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not self.path.is_file():
            raise OmnisegError(f"{self.path}: no store there; run `omniseg run --task <task>` first, or pass --store")
        try:
            if readonly:  # for looking only (--dry-run): nothing is created or changed
                self.db = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=30,
                                          isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # The runner writes from one background thread while the main thread predicts; the two
                # never use the connection at the same time (the main thread waits for the writer).
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self._check_integrity()
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a killed process; FULL would also survive power loss.
                self.db.execute("PRAGMA synchronous=NORMAL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, SCHEMA_VERSION):
                raise OmnisegError(f"{self.path}: store schema {version} is newer than this omniseg's "
                                   f"({SCHEMA_VERSION}); upgrade omniseg or use a new --store")
            if not readonly:
                self.db.executescript(SCHEMA)
                self._migrate()
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            what = "the store is corrupted" if "malformed" in str(e) else "not a usable omniseg store"
            raise OmnisegError(f"{self.path}: {what} ({e}); pass another --store, or move this file away to start "
                               "a new one") from None

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def _migrate(self) -> None:
        """Bring a store written by an older omniseg up to this schema (columns are only ever added)."""
        if "role" not in self._columns("models"):  # schema 1
            self.db.execute("ALTER TABLE models ADD COLUMN role TEXT")

    def _check_integrity(self) -> None:
        """A damaged database is named as such instead of failing later in a query (or reading as empty)."""
        problems = [r[0] for r in self.db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            first = " ".join(problems[0].replace("*** in database main ***", "").split())[:120]
            raise OmnisegError(f"{self.path}: the store is corrupted ({first}); restore a copy, or salvage its rows "
                               f"with `sqlite3 {self.path} .recover`, or move it away to start a new one")

    @property
    def root(self) -> Path:
        return self.path.parent

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, task: str, split: str, models: list[str], config: dict, config_hash: str,
                  split_fingerprint: str | None, argv: list[str] | None = None) -> int:
        from . import __version__

        cur = self.db.execute(
            "INSERT INTO runs (task, split, models, started_at, status, config, config_hash, split_fingerprint,"
            " omniseg_version, argv) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (task, split, json.dumps(models), time.time(), "running", json.dumps(config, sort_keys=True),
             config_hash, split_fingerprint, __version__, json.dumps(argv or [])),
        )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at=?, status=?, summary=? WHERE run_id=?",
            (time.time(), status, json.dumps(summary, sort_keys=True), run_id),
        )

    def last_config(self, task: str) -> dict | None:
        row = self.db.execute("SELECT config FROM runs WHERE task=? ORDER BY run_id DESC LIMIT 1", (task,)).fetchone()
        return json.loads(row["config"]) if row else None

    def tasks(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT task FROM predictions ORDER BY task")]

    # -- models and samples -------------------------------------------------------------------
    def model_signature(self, task: str, model: str) -> str | None:
        row = self.db.execute("SELECT signature_hash FROM models WHERE task=? AND model=?", (task, model)).fetchone()
        return row[0] if row else None

    def set_model(self, task: str, model: str, kind: str, signature: dict, signature_hash: str,
                  role: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO models VALUES (?,?,?,?,?,?) ON CONFLICT(task, model) DO UPDATE SET kind=excluded.kind,"
            " signature=excluded.signature, signature_hash=excluded.signature_hash, role=excluded.role",
            (task, model, kind, json.dumps(signature, sort_keys=True), signature_hash, role),
        )

    def roles(self, task: str) -> dict[str, str]:
        """Model -> role for a task (a store written before roles were recorded: the kind's role)."""
        from .models import role_of

        rows = self.db.execute("SELECT model, kind, role FROM models WHERE task = ?", (task,)).fetchall()
        return {r[0]: role_of(r[1], r[2]) for r in rows}

    def add_samples(self, task: str, rows: Iterable[tuple[str, str, str | None, dict]]) -> None:
        """(sample_id, split, problem, meta) for every sample a run was asked to cover."""
        with self.transaction():
            self.db.executemany(
                "INSERT INTO samples VALUES (?,?,?,?,?) ON CONFLICT(task, sample_id) DO UPDATE SET"
                " split=excluded.split, problem=excluded.problem, meta=excluded.meta",
                [(task, sid, split, problem, json.dumps(meta, sort_keys=True, default=str)) for sid, split, problem, meta in rows],
            )

    def done_pairs(self, task: str, redo: tuple[str, ...] = ()) -> set[tuple[str, str]]:
        """(sample, model) pairs with a row, except rows whose status is in ``redo``."""
        rows = self.db.execute("SELECT sample_id, model, status FROM predictions WHERE task=?", (task,))
        return {(r[0], r[1]) for r in rows if r[2] not in redo}

    def delete_model(self, task: str, model: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM predictions WHERE task=? AND model=?", (task, model))
            self.db.execute("DELETE FROM scores WHERE task=? AND model=?", (task, model))

    # -- predictions --------------------------------------------------------------------------
    def transaction(self):
        return Transaction(self.db)

    def mask_file(self, task: str, model: str, sample_id: str, suffix: str = ".png") -> Path:
        return Path("masks") / file_name(task) / file_name(model) / (file_name(sample_id) + suffix)

    def _write_atomic(self, rel: Path, write) -> str:
        dest = self.root / rel
        if not dest.resolve().is_relative_to(self.root.resolve()):  # never outside the store's folder
            raise OmnisegError(f"refusing to write {dest}: it is outside the store folder {self.root}")
        tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, dest)
        except OSError as e:
            tmp.unlink(missing_ok=True) if tmp.parent.is_dir() else None
            raise OmnisegError(f"cannot write {dest}: {e.strerror or e}; free disk space or make {dest.parent} "
                               "writable, then rerun the same command to resume (finished pairs are kept)") from None
        return rel.as_posix()

    def _write_mask(self, task: str, model: str, sample_id: str, mask: np.ndarray) -> str:
        return self._write_atomic(
            self.mask_file(task, model, sample_id),
            lambda p: Image.fromarray(mask.astype(bool)).save(p, format="PNG", compress_level=1),
        )

    def score_columns(self) -> list[str]:
        """The score columns this store has: counts, then metrics in the order they were added."""
        return [c for c in self._columns("scores") if c not in ("task", "sample_id", "model")]

    def _put_scores(self, task: str, sample_id: str, model: str, scores: dict | None) -> None:
        self.db.execute("DELETE FROM scores WHERE task=? AND sample_id=? AND model=?", (task, sample_id, model))
        if scores is None:
            return
        known = set(self.score_columns())
        for name in [c for c in scores if c not in known]:
            # a metric registered after the store was made (a plugin): its column is added, once
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
                raise OmnisegError(f"metric name {name!r}: use lower-case letters, digits and '_' (a store column)")
            self.db.execute(f"ALTER TABLE scores ADD COLUMN {name} REAL")
        names = list(scores)
        self.db.execute(f"INSERT INTO scores (task, sample_id, model, {', '.join(names)}) VALUES "
                        f"(?,?,?,{','.join('?' * len(names))})", (task, sample_id, model, *[scores[c] for c in names]))


    def record(self, run_id: int, task: str, sample_id: str, model: str, *, status: str, reason: str = "",
               mask: np.ndarray | None = None, prob: np.ndarray | None = None, scores: dict | None = None,
               elapsed_s: float | None = None, meta: dict | None = None, calls: list[dict] | None = None) -> None:
        """Write one pair: files first, then prediction and scores in one transaction."""
        mask_path = prob_path = None
        h = w = None
        if mask is not None:
            h, w = mask.shape
            mask_path = self._write_mask(task, model, sample_id, mask)
        if prob is not None:
            q = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)  # 8-bit: 1/255 steps are plenty
            prob_path = self._write_atomic(
                self.mask_file(task, model, sample_id, ".prob.png"),
                lambda p: Image.fromarray(q).save(p, format="PNG", compress_level=1),
            )
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (task, sample_id, model, run_id, status, reason, mask_path, prob_path, h, w, elapsed_s, time.time(),
                 json.dumps(meta or {}, sort_keys=True, default=str)),
            )
            self._put_scores(task, sample_id, model, scores)
            self.add_calls(run_id, task, sample_id, model, calls or [])

    def rewrite(self, task: str, sample_id: str, model: str, *, status: str, reason: str, mask: np.ndarray | None,
                scores: dict | None, meta: dict) -> None:
        """Replace a pair's outcome after decoding its kept answer again (``omniseg redecode``).

        The run, creation time, timing and API calls of the row stay: no new call was made.
        """
        mask_path = self._write_mask(task, model, sample_id, mask) if mask is not None else None
        h, w = mask.shape if mask is not None else (None, None)
        with self.transaction():
            self.db.execute(
                "UPDATE predictions SET status=?, reason=?, mask_path=?, height=?, width=?, meta=?"
                " WHERE task=? AND sample_id=? AND model=?",
                (status, reason, mask_path, h, w, json.dumps(meta, sort_keys=True, default=str), task, sample_id, model),
            )
            self._put_scores(task, sample_id, model, scores)

    def add_calls(self, run_id: int, task: str, sample_id: str, model: str, calls: list[dict]) -> None:
        """API calls behind one prediction (successes, retried errors and cache hits alike).

        A cache hit carries the ``booking`` of the call that once paid for its answer. If no row
        ever booked that answer (the run that received it was interrupted before recording it), it
        is booked now as 'recovered', once: the cost of every answer received reaches the store. An answer
        of a batch job (:mod:`omniseg.batch`) is booked as 'batch' by the first row that uses it.
        """
        now = time.time()
        calls = list(calls)
        for c in [c for c in calls if c.get("booking") and c.get("cache_key")]:
            booked = self.db.execute("SELECT 1 FROM api_calls WHERE cache_key = ? AND outcome IN ('answered', 'recovered',"
                                     " 'batch') LIMIT 1", (c["cache_key"],)).fetchone()
            if booked:
                continue
            if c["booking"].get("outcome") == "batch":  # a batch job's answer: booked as such by its first row
                calls[calls.index(c)] = {**c["booking"], "cache_key": c["cache_key"]}
            else:
                calls.insert(0, {**c["booking"], "outcome": "recovered", "cache_key": c["cache_key"]})
        self.db.executemany(
            "INSERT INTO api_calls (task, sample_id, model, run_id, attempt, outcome, http_status, error, latency_s,"
            " prompt_tokens, output_tokens, thoughts_tokens, cost_usd, model_version, cache_key, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(task, sample_id, model, run_id, c.get("attempt", 0), c.get("outcome", ""), c.get("http_status"),
              c.get("error"), c.get("latency_s"), c.get("prompt_tokens"), c.get("output_tokens"),
              c.get("thoughts_tokens"), c.get("cost_usd", 0.0), c.get("model_version"), c.get("cache_key"), now)
             for c in calls],
        )

    # -- subsets ------------------------------------------------------------------------------
    def set_subsets(self, task: str, rows: list[dict[str, Any]]) -> None:
        """Replace a task's easiest/hardest lists (curation is redone as a whole)."""
        with self.transaction():
            self.db.execute("DELETE FROM subsets WHERE task=?", (task,))
            now = time.time()
            self.db.executemany(
                "INSERT INTO subsets VALUES (?,?,?,?,?,?,?,?,?)",
                [(task, r["subset"], r["rank"], r["sample_id"], r["split"], r["reference"], r["metric"], r["value"], now)
                 for r in rows],
            )

    def set_difficulty(self, task: str, values: dict[str, dict[str, float]]) -> None:
        """Image-based difficulty per sample (omniseg.difficulty), replaced as a whole per task."""
        with self.transaction():
            self.db.execute("DELETE FROM difficulty WHERE task=?", (task,))
            self.db.executemany("INSERT INTO difficulty VALUES (?,?,?,?)",
                                [(task, sid, v["lesion_share"], None if v["contrast"] != v["contrast"] else v["contrast"])
                                 for sid, v in values.items()])

    # -- reading ------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple = ()):
        import pandas as pd

        return pd.read_sql_query(sql, self.db, params=params)

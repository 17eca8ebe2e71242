"""The one SQLite store that is the source of truth: runs, samples, predictions, scores, subsets.

A (task, sample, model) pair has at most one prediction row (primary key), and its
prediction and score rows are written in one transaction, so a run killed at any instant
leaves each pair either complete or absent. Masks are PNG files beside the database,
written (atomically, by rename) before the row that points to them is committed.
docs/outputs.md documents every table and column.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from .schema import SCHEMA, SCHEMA_VERSION, Transaction, file_name
from .sqlite import check_database, readonly_uri, unusable
from ..errors import OmnisegError
from ..scoring.metrics import NAME
from ..redaction import redact

DEFAULT_PATH = Path("runs") / "omniseg.sqlite"
#: a worker on another machine that has not written for this long is taken to be gone (its claim lapses)
STALE_S = 3600.0


def _started(pid: int) -> str | None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """When a process started (Linux: clock ticks after boot), so a reused pid is not taken for the old process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> tuple[str, int, str | None]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    pid = os.getpid()
    return socket.gethostname(), pid, _started(pid)


def process_alive(host: str | None, pid: int | None, started: str | None) -> bool | None:
    """Whether the recorded process still runs: None when it ran on another machine (cannot tell)."""
    if host is None or pid is None:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return started is None or _started(int(pid)) in (None, started)


class Store:
    """One SQLite database plus the mask files beside it."""

    def __init__(self, path: str | Path = DEFAULT_PATH, readonly: bool = False):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not self.path.is_file():
            raise OmnisegError(f"{self.path}: no store there; run `omniseg run --task <task>` first, or pass --store")
        try:
            if readonly:  # for looking only (--dry-run, report): nothing is created or changed
                self.db = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=30,
                                          isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # The runner writes from one background thread while the main thread predicts; the two
                # never use the connection at the same time (the main thread waits for the writer).
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            check_database(self.db, self.path, "store")
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a killed process; FULL would also survive power loss.
                self.db.execute("PRAGMA synchronous=NORMAL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, 3, 4, SCHEMA_VERSION):
                raise OmnisegError(f"{self.path}: store schema {version} is newer than this omniseg's "
                                   f"({SCHEMA_VERSION}); upgrade omniseg or use a new --store")
            if not readonly and version != SCHEMA_VERSION:
                with self.transaction():  # one process creates or migrates; another waits, then finds it done
                    if self.db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        for statement in SCHEMA.split(";"):
                            if statement.strip():
                                self.db.execute(statement)
                        self._migrate()
                        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise unusable(self.path, "store", e) from None

    def columns(self, table: str) -> list[str]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def _migrate(self) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Bring a store written by an older omniseg up to this schema (columns are only ever added)."""
        for table, column, decl in (("models", "role", "TEXT"), ("runs", "host", "TEXT"), ("runs", "pid", "INTEGER"),
                                    ("runs", "pid_started", "TEXT"),
                                    ("api_calls", "cost_known", "INTEGER NOT NULL DEFAULT 1")):
            if column not in self.columns(table):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @property
    def root(self) -> Path:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return self.path.parent

    def close(self) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.db.close()

    def __enter__(self) -> "Store":
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return self

    def __exit__(self, *exc) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.close()

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, task: str, split: str, models: list[str], config: dict, config_hash: str,
                  split_fingerprint: str | None, argv: list[str] | None = None) -> int:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        from .. import __version__

        cur = self.db.execute(
            "INSERT INTO runs (task, split, models, started_at, status, config, config_hash, split_fingerprint,"
            " omniseg_version, argv, host, pid, pid_started) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (task, split, json.dumps(models), time.time(), "running", json.dumps(config, sort_keys=True),
             config_hash, split_fingerprint, __version__, redact(json.dumps(argv or [])), *this_process()),
        )
        return int(cur.lastrowid)

    def run_states(self, task: str) -> dict[int, str]:
        """run id -> how the run ended: finished, stopped, interrupted, failed; or, for a run still marked
        running, 'running' (its process is alive) or 'did not end' (its process is gone: killed)."""
        out = {}
        who = "host, pid, pid_started" if "host" in self.columns("runs") else "NULL AS host, NULL AS pid, NULL AS pid_started"
        for r in self.db.execute(f"SELECT run_id, status, {who} FROM runs WHERE task=?", (task,)):
            state = r["status"]
            if state == "running":
                alive = process_alive(r["host"], r["pid"], r["pid_started"])
                state = "running" if alive else "running elsewhere?" if alive is None else "did not end"
            out[int(r["run_id"])] = state
        return out

    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.db.execute(
            "UPDATE runs SET finished_at=?, status=?, summary=? WHERE run_id=?",
            (time.time(), status, json.dumps(summary, sort_keys=True), run_id),
        )

    def last_config(self, task: str) -> dict | None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        row = self.db.execute("SELECT config FROM runs WHERE task=? ORDER BY run_id DESC LIMIT 1", (task,)).fetchone()
        return json.loads(row["config"]) if row else None

    def tasks(self) -> list[str]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return [r[0] for r in self.db.execute("SELECT DISTINCT task FROM predictions ORDER BY task")]

    # -- workers: one process at a time works on a (task, model) -------------------------------
    def claim(self, task: str, models: list[str], command: str) -> None:
        """Make this process the one worker of each (task, model); refused, naming the other process, while
        another live one holds any of them. Two runs of one model (online, --batch, batch wait, redecode)
        would otherwise ask, and pay, for the same answers twice. A claim of a process that is gone lapses."""
        host, pid, started = this_process()
        now = time.time()
        with self.transaction():
            for model in models:
                row = self.db.execute("SELECT * FROM workers WHERE task=? AND model=?", (task, model)).fetchone()
                if row is not None and (row["host"], row["pid"]) != (host, pid):
                    alive = process_alive(row["host"], row["pid"], row["pid_started"])
                    if alive or (alive is None and now - row["heartbeat_at"] < STALE_S):
                        raise OmnisegError(
                            f"model {model!r} of task {task!r} is being worked on by another process: "
                            f"`omniseg {row['command']}` (pid {row['pid']} on {row['host']}, since "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['started_at']))}); wait for it "
                            "to end, or stop it, then rerun (each pair is done once either way)")
                self.db.execute("INSERT OR REPLACE INTO workers VALUES (?,?,?,?,?,?,?,?)",
                                (task, model, redact(command), host, pid, started, now, now))

    def release(self, task: str, models: list[str]) -> None:
        """Give up this process's claims (at the end of a run, however it ended). A store that cannot be
        written (a full disk) keeps them: they lapse with this process, and the error that matters is raised."""
        host, pid, _ = this_process()
        try:
            with self.transaction():
                self.db.executemany("DELETE FROM workers WHERE task=? AND model=? AND host=? AND pid=?",
                                    [(task, m, host, pid) for m in models])
        except OmnisegError:
            pass

    def heartbeat(self, task: str) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """This process still works on its models of ``task`` (what another machine goes by). Best effort: a
        store that cannot be written says so at the next row instead."""
        host, pid, _ = this_process()
        try:
            self.db.execute("UPDATE workers SET heartbeat_at=? WHERE task=? AND host=? AND pid=?",
                            (time.time(), task, host, pid))
        except sqlite3.Error:
            pass

    # -- models and samples -------------------------------------------------------------------
    def model_signature(self, task: str, model: str) -> str | None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        row = self.db.execute("SELECT signature_hash FROM models WHERE task=? AND model=?", (task, model)).fetchone()
        return row[0] if row else None

    def set_model(self, task: str, model: str, kind: str, signature: dict, signature_hash: str,
                  role: str | None = None) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.db.execute(
            "INSERT INTO models VALUES (?,?,?,?,?,?) ON CONFLICT(task, model) DO UPDATE SET kind=excluded.kind,"
            " signature=excluded.signature, signature_hash=excluded.signature_hash, role=excluded.role",
            (task, model, kind, json.dumps(signature, sort_keys=True), signature_hash, role),
        )

    def roles(self, task: str) -> dict[str, str]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Model -> role for a task (a store written before roles were recorded: the kind's role)."""
        from ..models import role_of

        rows = self.db.execute("SELECT model, kind, role FROM models WHERE task = ?", (task,)).fetchall()
        return {r[0]: role_of(r[1], r[2]) for r in rows}

    def privileged(self, task: str) -> set[str]:
        """The task's models told something a fair contender is not (SAM 3's box-oracle): never in claims, routing,
        curation or review, whatever their role."""
        rows = self.db.execute("SELECT model FROM models WHERE task = ? AND "
                               "COALESCE(json_extract(signature, '$.privileged'), 0)", (task,)).fetchall()
        return {r[0] for r in rows}

    def signatures(self, task: str) -> dict[str, dict]:
        """Model -> its recorded signature (kind, options, and what each kind adds: a chain's source, SAM 3's mode)."""
        rows = self.db.execute("SELECT model, kind, signature FROM models WHERE task = ?", (task,)).fetchall()
        return {r[0]: {"kind": r[1], **(json.loads(r[2]) if r[2] else {})} for r in rows}

    def add_samples(self, task: str, rows: Iterable[tuple[str, str, str | None, dict]]) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """(sample_id, split, problem, meta) for every sample a run was asked to cover."""
        with self.transaction():
            self.db.executemany(
                "INSERT INTO samples VALUES (?,?,?,?,?) ON CONFLICT(task, sample_id) DO UPDATE SET"
                " split=excluded.split, problem=excluded.problem, meta=excluded.meta",
                [(task, sid, split, problem, json.dumps(meta, sort_keys=True, default=str)) for sid, split, problem, meta in rows],
            )

    def pairs_recorded(self) -> int:
        """How many (task, sample, model) rows the store holds (a sharded run's progress)."""
        return self.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    def done_pairs(self, task: str, redo: tuple[str, ...] = ()) -> set[tuple[str, str]]:
        """(sample, model) pairs with a row, except rows whose status is in ``redo``."""
        rows = self.db.execute("SELECT sample_id, model, status FROM predictions WHERE task=?", (task,))
        return {(r[0], r[1]) for r in rows if r[2] not in redo}

    def delete_model(self, task: str, model: str) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        with self.transaction():
            self.db.execute("DELETE FROM predictions WHERE task=? AND model=?", (task, model))
            self.db.execute("DELETE FROM scores WHERE task=? AND model=?", (task, model))

    # -- predictions --------------------------------------------------------------------------
    def transaction(self):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return Transaction(self.db)

    def mask_file(self, task: str, model: str, sample_id: str, suffix: str = ".png") -> Path:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return Path("masks") / file_name(task) / file_name(model) / (file_name(sample_id) + suffix)

    def _write_atomic(self, rel: Path, write) -> str:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        dest = self.root / rel
        if not dest.resolve().is_relative_to(self.root.resolve()):  # never outside the store's folder
            raise OmnisegError(f"refusing to write {dest}: it is outside the store folder {self.root}")
        tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, dest)
        except OSError as e:
            with contextlib.suppress(OSError):  # the cleanup must not hide the error it cleans up after
                tmp.unlink(missing_ok=True)
            raise OmnisegError(f"cannot write {dest}: {e.strerror or e}; free disk space or make {dest.parent} "
                               "writable, then rerun the same command to resume (finished pairs are kept)") from None
        return rel.as_posix()

    def _write_mask(self, task: str, model: str, sample_id: str, mask: np.ndarray, grid: np.ndarray | None = None) -> str:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        if mask.ndim == 3:  # a volume: NIfTI on its image's grid (``grid``, the canonical affine), 0/1 in uint8
            return self._write_atomic(self.mask_file(task, model, sample_id, ".nii.gz"),
                                      lambda p: write_volume_mask(p, mask, grid))
        return self._write_atomic(
            self.mask_file(task, model, sample_id),
            lambda p: Image.fromarray(mask.astype(bool)).save(p, format="PNG", compress_level=1),
        )

    def load_mask(self, rel: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A stored mask file (``mask_path`` of a prediction) as a boolean array: an image's (resized to ``shape`` by
        nearest neighbour when it differs) or a volume's (depth, height, width)."""
        path = self.root / rel
        if path.name.endswith(".nii.gz"):
            import nibabel as nib

            return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0) > 0
        img = Image.open(path).convert("L")
        if shape is not None and img.size != (shape[1], shape[0]):
            img = img.resize((shape[1], shape[0]), Image.NEAREST)
        return np.asarray(img) > 127

    def score_columns(self) -> list[str]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """The score columns this store has: counts, then metrics in the order they were added."""
        return [c for c in self.columns("scores") if c not in ("task", "sample_id", "model")]

    def _put_scores(self, task: str, sample_id: str, model: str, scores: dict | None) -> None:
        self.db.execute("DELETE FROM scores WHERE task=? AND sample_id=? AND model=?", (task, sample_id, model))
        if scores is None:
            return
        known = set(self.score_columns())
        for name in [c for c in scores if c not in known]:
            # a metric registered after the store was made (a plugin): its column is added, once
            if not re.fullmatch(NAME, name):
                raise OmnisegError(f"metric name {name!r}: use lower-case letters, digits and '_' (a store column)")
            self.db.execute(f"ALTER TABLE scores ADD COLUMN {name} REAL")
        names = list(scores)
        self.db.execute(f"INSERT INTO scores (task, sample_id, model, {', '.join(names)}) VALUES "
                        f"(?,?,?,{','.join('?' * len(names))})", (task, sample_id, model, *[scores[c] for c in names]))


    def record(self, run_id: int, task: str, sample_id: str, model: str, *, status: str, reason: str = "",
               mask: np.ndarray | None = None, prob: np.ndarray | None = None, scores: dict | None = None,
               elapsed_s: float | None = None, meta: dict | None = None, calls: list[dict] | None = None,
               grid: np.ndarray | None = None) -> None:
        """Write one pair: files first, then prediction and scores in one transaction. A volume's mask (3-D) is
        written as NIfTI on ``grid``, its image's voxel-to-world matrix (height and width are a slice's)."""
        mask_path = prob_path = None
        h = w = None
        if mask is not None:
            h, w = mask.shape[-2:]
            mask_path = self._write_mask(task, model, sample_id, mask, grid)
        if prob is not None:
            q = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)  # 8-bit: 1/255 steps are plenty
            prob_path = self._write_atomic(
                self.mask_file(task, model, sample_id, ".prob.png"),
                lambda p: Image.fromarray(q).save(p, format="PNG", compress_level=1),
            )
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (task, sample_id, model, run_id, status, redact(reason), mask_path, prob_path, h, w, elapsed_s, time.time(),
                 redact(json.dumps(meta or {}, sort_keys=True, default=str))),
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
                (status, redact(reason), mask_path, h, w, redact(json.dumps(meta, sort_keys=True, default=str)), task,
                 sample_id, model),
            )
            self._put_scores(task, sample_id, model, scores)

    def add_calls(self, run_id: int, task: str, sample_id: str, model: str, calls: list[dict]) -> None:
        """API calls behind one prediction (successes, retried errors and cache hits alike).

        A cache hit carries the ``booking`` of the call that once paid for its answer. If no row
        ever booked that answer (the run that received it was interrupted before recording it), it
        is booked now as 'recovered', once: the cost of every answer received reaches the store. An answer
        of a batch job (:mod:`omniseg.evaluation.batch`) is booked as 'batch' by the first row that uses it.
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
            " prompt_tokens, output_tokens, thoughts_tokens, cost_usd, model_version, cache_key, created_at, cost_known)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(task, sample_id, model, run_id, c.get("attempt", 0), c.get("outcome", ""), _count(c.get("http_status")),
              redact(str(c["error"])) if c.get("error") is not None else None, _finite(c.get("latency_s")),
              *(_count(c.get(k)) for k in ("prompt_tokens", "output_tokens", "thoughts_tokens")),
              _finite(c.get("cost_usd")) or 0.0, c.get("model_version") if isinstance(c.get("model_version"), str) else None,
              c.get("cache_key"), now, int(_cost_known(c)))
             for c in calls],
        )

    # -- subsets ------------------------------------------------------------------------------
    def set_subsets(self, task: str, rows: list[dict[str, Any]]) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Replace a task's easiest/hardest lists (curation is redone as a whole)."""
        with self.transaction():
            self.db.execute("DELETE FROM subsets WHERE task=?", (task,))
            now = time.time()
            self.db.executemany(
                "INSERT INTO subsets VALUES (?,?,?,?,?,?,?,?,?)",
                [(task, r["subset"], r["rank"], r["sample_id"], r["split"], r["reference"], r["metric"], r["value"], now)
                 for r in rows],
            )

    def curated(self, task: str) -> tuple[int, str] | None:
        """How many easiest cases the task's stored lists hold and which model picked them; None before curation."""
        row = self.db.execute("SELECT COUNT(*), MIN(reference) FROM subsets WHERE task=? AND subset='easiest'",
                              (task,)).fetchone()
        return (row[0], row[1]) if row and row[0] else None

    def set_difficulty(self, task: str, values: dict[str, dict[str, float]]) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Image-based difficulty per sample (omniseg.study.difficulty), replaced as a whole per task."""
        with self.transaction():
            self.db.execute("DELETE FROM difficulty WHERE task=?", (task,))
            self.db.executemany("INSERT INTO difficulty VALUES (?,?,?,?)",
                                [(task, sid, v["lesion_share"], None if v["contrast"] != v["contrast"] else v["contrast"])
                                 for sid, v in values.items()])

    # -- expert review (omniseg.study.review) ---------------------------------------------------
    def set_review_items(self, task: str, options: dict, items: list[dict]) -> None:
        """Replace a task's review items (each with its ``models``, the models it is credited to), and with them
        the reviewers' orders and answers: the caller refuses to drop answers unless told to."""
        with self.transaction():
            for table in ("reviews", "review_orders", "review_credits", "review_items", "review_sets"):
                self.db.execute(f"DELETE FROM {table} WHERE task=?", (task,))
            self.db.execute("INSERT INTO review_sets VALUES (?,?,?)", (task, json.dumps(options, sort_keys=True), time.time()))
            self.db.executemany(
                "INSERT INTO review_items VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(task, it["item_id"], it["sample_id"], it["side"], it["area"], *it["bbox"], it["height"], it["width"],
                  it["region"]) for it in items])
            self.db.executemany("INSERT INTO review_credits VALUES (?,?,?)",
                                [(task, it["item_id"], m) for it in items for m in sorted(it["models"])])

    def review_order(self, task: str, reviewer: str, seed: int, items: list[str]) -> tuple[int, list[str]]:
        """A reviewer's order of the items: the one recorded at their first start, else ``items`` (shuffled by the
        caller with ``seed``), recorded now. Returns the recorded seed and order."""
        with self.transaction():
            self.db.execute("INSERT OR IGNORE INTO review_orders VALUES (?,?,?,?,?)",
                            (task, reviewer, int(seed), json.dumps(items), time.time()))
            row = self.db.execute("SELECT seed, items FROM review_orders WHERE task=? AND reviewer=?",
                                  (task, reviewer)).fetchone()
        return int(row["seed"]), json.loads(row["items"])

    def put_review(self, task: str, item_id: str, reviewer: str, verdict: str, note: str = "",
                   seconds: float | None = None, source: str = "page", answered_at: float | None = None) -> None:
        """One reviewer's answer on one item, committed at once (a second answer replaces the first)."""
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO reviews VALUES (?,?,?,?,?,?,?,?)",
                            (task, item_id, reviewer, verdict, note or "", _finite(seconds),
                             time.time() if answered_at is None else answered_at, source))

    def put_reviews(self, answers: list[tuple], source: str) -> None:
        """Answers (task, item, reviewer, verdict, note, seconds, answered_at or None), all in one transaction: an
        import is stored whole or not at all."""
        now = time.time()
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO reviews VALUES (?,?,?,?,?,?,?,?)",
                                [(t, i, r, v, note or "", _finite(sec), now if at is None else at, source)
                                 for t, i, r, v, note, sec, at in answers])

    def undo_review(self, task: str, reviewer: str) -> str | None:
        """Delete the reviewer's latest answer; returns its item (None when there was none)."""
        with self.transaction():
            row = self.db.execute("SELECT item_id FROM reviews WHERE task=? AND reviewer=? "
                                  "ORDER BY answered_at DESC, rowid DESC LIMIT 1", (task, reviewer)).fetchone()
            if row is not None:
                self.db.execute("DELETE FROM reviews WHERE task=? AND reviewer=? AND item_id=?",
                                (task, reviewer, row["item_id"]))
        return None if row is None else row["item_id"]

    # -- reading ------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple = ()):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        import pandas as pd

        return pd.read_sql_query(sql, self.db, params=params)


def _count(v) -> int | None:
    """A token count or HTTP status as stored: a non-negative integer, else NULL."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 else None


def _cost_known(call: dict) -> bool:
    """False for a call whose cost could not be read from its usage (or is not a non-negative number)."""
    if call.get("outcome") not in ("answered", "recovered", "batch"):
        return True
    return bool(call.get("cost_known", True)) and _finite(call.get("cost_usd")) is not None


def write_volume_mask(path: Path, mask: np.ndarray, grid: np.ndarray | None) -> None:
    """A (depth, height, width) mask as a NIfTI file (nibabel's x, y, z order) on ``grid`` (identity: none given)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)),
                          np.eye(4) if grid is None else np.asarray(grid, float))
    nib.save(img, str(path.with_name(path.name + ".nii.gz")))
    os.replace(path.with_name(path.name + ".nii.gz"), path)  # nibabel picks gzip by the name's ending


def count_rows(path: Path, tables: tuple[str, ...]) -> int | None:
    """Rows in ``tables`` of the SQLite file at ``path`` together; None when it cannot be read as one (a command
    removes the store and archive it created but never wrote to)."""
    try:
        with sqlite3.connect(path) as db:
            return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
    except sqlite3.Error:
        return None

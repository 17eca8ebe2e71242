"""The answer archive: every raw API answer, kept by content; it is also the response cache.

Every answer the API gave (HTTP 200: a mask, prose, tokens, a block) is kept, decoded or not,
so that nothing is paid for twice: a rerun answers from the archive, and ``omniseg redecode``
re-applies newer decoders to kept answers without an API call. Answers are stored once per
content (zlib-compressed, named by the sha256 of the raw JSON) and looked up by a key that hashes
everything that changes the answer: model, API version, mode, prompt text, image pixels and
generation settings. Decoding (decoder version, threshold, point order) is not part of the key.
With each answer the archive keeps the booking of the call that paid for it, so an answer received
by a run killed before recording it is booked (once) by the run that first uses it.

SQLite in WAL mode with ``synchronous=FULL``: an answer is on disk before the prediction that
uses it is recorded, so a run killed at any instant never pays for the same answer twice. The
API key is never part of a key or of the stored data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import OmnisegError
from ..redaction import redact
from .sqlite import check_database, readonly_uri, unusable

FILE_NAME = "answers.sqlite"  # beside the store, unless a model's `cache` option names another file


@dataclass
class _Queued:
    """An answer waiting in :meth:`AnswerArchive.put`'s queue, and what its commit did."""

    blob: tuple
    row: tuple
    settled: bool = False
    error: BaseException | None = None


SCHEMA = ("CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);"
          "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, model_version TEXT,"
          " sha256 TEXT NOT NULL REFERENCES blobs(sha256), created_at REAL NOT NULL, call TEXT);")


def _create(path: Path) -> None:
    """Make a new archive appear whole: built under a temporary name, then linked into place. SQLite starts a file
    at 0 bytes, which another process opening it that moment (a shard beside this one) would take for a lost
    archive; a link never shows a half-made file, and the process that loses the race uses the winner's."""
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()  # the WAL is checkpointed into the file and removed
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: its archive is the one
        except OSError:  # a file system without hard links: the plain way, as before
            pass
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


class AnswerArchive:
    def __init__(self, path: str | Path, readonly: bool = False):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Open (or create) the archive; ``readonly`` opens an existing one for looking only."""
        self.path = Path(path)
        # read by the runner's thread, written by the model's event-loop thread: one lock serializes them
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []  # answers waiting for the next group commit (see put)
        self._queue_lock = threading.Lock()
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take it for a new, empty archive: every answer it held would be paid for again
            raise OmnisegError(f"{self.path}: the answer archive is an empty file (0 bytes): the answers it kept are "
                               "gone (a copy cut short, a full disk?). Restore it from a copy; or delete it to start "
                               "a new archive, and every answer not in the store is asked for (and paid) again")
        try:
            if readonly:
                self.db = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=30,
                                          isolation_level=None, check_same_thread=False)
                check_database(self.db, self.path, "answer archive")
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                _create(self.path)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            check_database(self.db, self.path, "answer archive")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise unusable(self.path, "answer archive", e) from None

    def get(self, key: str) -> str | None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """The raw answer (JSON text) kept under ``key``, or None."""
        kept = self.get_with_call(key)
        return kept[0] if kept else None

    def get_with_call(self, key: str) -> tuple[str, dict] | None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """The raw answer and the booking of the call that paid for it (tokens, cost, latency)."""
        with self._lock:
            row = self.db.execute("SELECT b.data, a.call FROM answers a JOIN blobs b USING (sha256) WHERE a.key = ?",
                                  (key,)).fetchone()
        return (zlib.decompress(row[0]).decode(), json.loads(row[1] or "{}")) if row else None

    def put(self, key: str, model: str, model_version: str | None, response: str, call: dict | None = None) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Keep an answer (redacted: a server may echo the key) with the booking of the call that paid for it.

        Returns once the answer is on disk. Answers that arrive together share one commit (group commit):
        each caller queues its rows, and whoever holds the write lock commits everything queued so far, so
        16 answers landing at once cost one fsync, not 16 in a row while their request slots wait.
        """
        raw = redact(response).encode()
        sha = hashlib.sha256(raw).hexdigest()
        item = _Queued(blob=(sha, zlib.compress(raw, 6)),
                       row=(key, model, model_version, sha, time.time(), redact(json.dumps(call or {}))))
        with self._queue_lock:
            self._queue.append(item)
        with self._lock:
            if not item.settled:  # not committed by another caller's group yet: commit every queued one
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit(group)
        if item.error is not None:
            raise item.error

    def _commit(self, group: list["_Queued"]) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """One transaction for a group of queued answers; every one of them learns its outcome."""
        error: BaseException | None = None
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?)", [q.blob for q in group])
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?)", [q.row for q in group])
            self.db.execute("COMMIT")
        except BaseException as e:
            if self.db.in_transaction:  # a failed COMMIT (a full disk) may have rolled back already
                self.db.execute("ROLLBACK")
            error = unusable(self.path, "answer archive", e) if isinstance(e, sqlite3.Error) else e
        for q in group:
            q.error, q.settled = error, True

    def __len__(self) -> int:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.db.close()

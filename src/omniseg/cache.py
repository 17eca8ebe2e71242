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
import sqlite3
import threading
import time
import zlib
from pathlib import Path

from .errors import OmnisegError

FILE_NAME = "answers.sqlite"  # beside the store, unless a model's `cache` option names another file


def readonly_uri(path: Path) -> str:
    """An SQLite URI that reads ``path`` without creating anything beside it.

    A cleanly closed WAL database has no -wal file: it is opened ``immutable`` (no -wal or -shm is
    created). When a -wal exists (a run in progress, or killed), it holds committed rows, so the
    database is opened read-only through it; its -shm exists already.
    """
    resolved = path.resolve()
    wal = resolved.with_name(resolved.name + "-wal")
    return f"file:{resolved}?mode=ro" + ("" if wal.exists() else "&immutable=1")


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class AnswerArchive:
    def __init__(self, path: str | Path, readonly: bool = False):
        """Open (or create) the archive; ``readonly`` opens an existing one for looking only."""
        self.path = Path(path)
        # read by the runner's thread, written by the model's event-loop thread: one lock serializes them
        self._lock = threading.Lock()
        try:
            if readonly:
                self.db = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=30,
                                          isolation_level=None, check_same_thread=False)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(
                "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);"
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, model_version TEXT,"
                " sha256 TEXT NOT NULL REFERENCES blobs(sha256), created_at REAL NOT NULL, call TEXT);"
            )
        except sqlite3.DatabaseError as e:
            raise OmnisegError(f"{self.path}: not a usable answer archive ({e}); move it away to start a new one") from None

    def get(self, key: str) -> str | None:
        """The raw answer (JSON text) kept under ``key``, or None."""
        kept = self.get_with_call(key)
        return kept[0] if kept else None

    def get_with_call(self, key: str) -> tuple[str, dict] | None:
        """The raw answer and the booking of the call that paid for it (tokens, cost, latency)."""
        with self._lock:
            row = self.db.execute("SELECT b.data, a.call FROM answers a JOIN blobs b USING (sha256) WHERE a.key = ?",
                                  (key,)).fetchone()
        return (zlib.decompress(row[0]).decode(), json.loads(row[1] or "{}")) if row else None

    def put(self, key: str, model: str, model_version: str | None, response: str, call: dict | None = None) -> None:
        raw = response.encode()
        sha = hashlib.sha256(raw).hexdigest()
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (sha, zlib.compress(raw, 6)))
                self.db.execute("INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?)",
                                (key, model, model_version, sha, time.time(), json.dumps(call or {})))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()

"""The answer archive: every raw API answer, kept by content; it is also the response cache.

Every answer the API gave (HTTP 200: a mask, prose, tokens, a block) is kept, decoded or not,
so that nothing is paid for twice: a rerun answers from the archive, and ``omniseg redecode``
re-applies newer decoders to kept answers without an API call. Answers are stored once per
content (zlib-compressed, named by the sha256 of the raw JSON) and looked up by a key that hashes
everything that changes the answer: model, API version, mode, prompt text, image pixels and
generation settings. Decoding (decoder version, threshold, point order) is not part of the key.

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


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class AnswerArchive:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # read by the runner's thread, written by the model's event-loop thread: one lock serializes them
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(
                "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);"
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, model_version TEXT,"
                " sha256 TEXT NOT NULL REFERENCES blobs(sha256), created_at REAL NOT NULL);"
            )
        except sqlite3.DatabaseError as e:
            raise OmnisegError(f"{self.path}: not a usable answer archive ({e}); move it away to start a new one") from None

    def get(self, key: str) -> str | None:
        """The raw answer (JSON text) kept under ``key``, or None."""
        with self._lock:
            row = self.db.execute("SELECT b.data FROM answers a JOIN blobs b USING (sha256) WHERE a.key = ?",
                                  (key,)).fetchone()
        return zlib.decompress(row[0]).decode() if row else None

    def put(self, key: str, model: str, model_version: str | None, response: str) -> None:
        raw = response.encode()
        sha = hashlib.sha256(raw).hexdigest()
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (sha, zlib.compress(raw, 6)))
                self.db.execute("INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?)",
                                (key, model, model_version, sha, time.time()))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()

"""The response cache: API answers keyed by a hash of everything that changes them.

SQLite in WAL mode with ``synchronous=FULL``: an answer is on disk before the prediction that
uses it is recorded, so a run killed at any instant never pays for the same answer twice. Only
answers that decoded to a usable mask are stored (errors, blocks and malformed answers are
retried on the next run). The key covers model, API version, mode, prompt text, image bytes,
generation settings and decoder version; the API key is never part of it or of the stored data.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # read by the runner's thread, written by the model's event-loop thread: one lock serializes them
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT NOT NULL,"
            " model_version TEXT, response TEXT NOT NULL, created_at REAL NOT NULL)"
        )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, model_version: str | None, response: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?)",
                            (key, model, model_version, response, time.time()))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()

"""The store's record of batch jobs (tables ``batch_jobs`` and ``batch_requests``): what was asked for, under which
name, and what came back (omniseg.inference.batch decides what to do with them)."""

from __future__ import annotations

import time

from .database import Store


class JobBook:
    """The store's record of batch jobs: what was asked for, under which name, and what came back."""

    def __init__(self, store: Store):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.store, self.db = store, store.db

    def open(self, task: str, model: str) -> list[dict]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        rows = self.db.execute("SELECT * FROM batch_jobs WHERE task=? AND model=? AND collected_at IS NULL"
                               " AND state NOT IN ('ABANDONED', 'LOST') ORDER BY created_at", (task, model))
        return [dict(r) for r in rows]

    def all(self, task: str | None = None) -> list[dict]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        rows = self.db.execute(
            "SELECT j.*, SUM(r.status IS NULL AND j.collected_at IS NOT NULL) AS unanswered,"
            " SUM(r.status = 'answered') AS answered, SUM(r.status = 'api_error') AS failed"
            " FROM batch_jobs j LEFT JOIN batch_requests r USING (job_key)"
            + (" WHERE j.task = ?" if task else "") + " GROUP BY j.job_key ORDER BY j.created_at", (task,) if task else ())
        return [dict(r) for r in rows]

    def jobs_like(self, base: str) -> int:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        return self.db.execute("SELECT COUNT(*) FROM batch_jobs WHERE job_key LIKE ?", (base + "%",)).fetchone()[0]

    def add(self, job_key: str, task: str, model: str, display_name: str, source: str,
            requests: list[tuple[str, str]]) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        now = time.time()
        with self.store.transaction():
            self.db.execute("INSERT INTO batch_jobs (job_key, task, model, display_name, input, state, requests,"
                            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                            (job_key, task, model, display_name, source, "SUBMITTING", len(requests), now, now))
            self.db.executemany("INSERT INTO batch_requests (job_key, cache_key, sample_id) VALUES (?,?,?)",
                                [(job_key, k, s) for k, s in requests])

    def update(self, job_key: str, **cols) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        cols["updated_at"] = time.time()
        with self.store.transaction():
            self.db.execute(f"UPDATE batch_jobs SET {', '.join(f'{c}=?' for c in cols)} WHERE job_key=?",
                            (*cols.values(), job_key))

    def keys(self, job_key: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT cache_key FROM batch_requests WHERE job_key=? ORDER BY rowid",
                                              (job_key,))]

    def set_outcomes(self, job_key: str, outcomes: list[tuple[str, str | None, str]]) -> None:
        """``(status, error, cache key)`` of the requests a job answered, with the job marked collected."""
        with self.store.transaction():
            self.db.executemany("UPDATE batch_requests SET status=?, error=? WHERE job_key=? AND cache_key=?",
                                [(s, e, job_key, k) for s, e, k in outcomes])
            self.db.execute("UPDATE batch_jobs SET collected_at=?, updated_at=? WHERE job_key=?",
                            (time.time(), time.time(), job_key))

    def failures(self, task: str, model: str) -> dict[str, tuple[str, str]]:
        rows = self.db.execute("SELECT r.cache_key, r.status, r.error FROM batch_requests r JOIN batch_jobs j"
                               " USING (job_key) WHERE j.task=? AND j.model=? AND r.status IS NOT NULL"
                               " ORDER BY j.created_at", (task, model))
        out: dict[str, tuple[str, str]] = {}
        for k, status, error in rows:  # a later job's outcome replaces an earlier one's
            if status == "answered":
                out.pop(k, None)
            else:
                out[k] = (status, error or "")
        return out

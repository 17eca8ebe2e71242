"""What both SQLite databases (the store and the answer archive) need of a file: opened read-only without
creating anything beside it, damage named on open, one message for a file that cannot be written."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import OmnisegError


def readonly_uri(path: Path) -> str:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """An SQLite URI that reads ``path`` without creating anything beside it.

    A cleanly closed WAL database has no -wal file: it is opened ``immutable`` (no -wal or -shm is
    created). When a -wal exists (a run in progress, or killed), it holds committed rows, so the
    database is opened read-only through it; its -shm exists already.
    """
    resolved = path.resolve()
    wal = resolved.with_name(resolved.name + "-wal")
    return f"file:{resolved}?mode=ro" + ("" if wal.exists() else "&immutable=1")


def check_database(db: sqlite3.Connection, path: Path, what: str) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """A damaged database is named as such on open, instead of failing later in a query (or reading as empty)."""
    problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        first = " ".join(problems[0].replace("*** in database main ***", "").split())[:120]
        raise OmnisegError(f"{path}: the {what} is corrupted ({first}); restore a copy, or salvage its rows "
                           f"with `sqlite3 {path} .recover`, or move it away to start a new one")


def unusable(path: Path, what: str, e: sqlite3.Error) -> OmnisegError:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """One message for a database file that cannot be opened or written: read-only, full, damaged or foreign."""
    text = str(e)
    if "readonly" in text or "read-only" in text or (path.exists() and not os.access(path, os.W_OK)):
        return OmnisegError(f"{path}: the {what} is read-only; make it writable (chmod u+w, or its folder), or copy it "
                            "somewhere writable and pass that path")
    if "full" in text:
        return OmnisegError(f"cannot write the {what} {path}: {text}; free disk space, then rerun the same command "
                            "to resume (what was kept stays)")
    if "malformed" in text or "corrupt" in text:
        return OmnisegError(f"{path}: the {what} is corrupted ({text}); restore a copy, or move it away to start a new one")
    return OmnisegError(f"{path}: not a usable {what} ({text}); pass another path, or move this file away to start "
                        "a new one")

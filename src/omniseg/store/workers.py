"""Which process works on a (task, model) now (table ``workers``): one at a time, so two runs of one model never ask,
and pay, for the same answers twice; a claim of a process that is gone lapses."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from pathlib import Path

from ..errors import OmnisegError
from ..redaction import redact
from .database import Store

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


def claim(store: Store, task: str, models: list[str], command: str) -> None:
    """Make this process the one worker of each (task, model); refused, naming the other process, while
    another live one holds any of them. Two runs of one model (online, --batch, batch wait, redecode)
    would otherwise ask, and pay, for the same answers twice. A claim of a process that is gone lapses."""
    host, pid, started = this_process()
    now = time.time()
    with store.transaction():
        for model in models:
            row = store.db.execute("SELECT * FROM workers WHERE task=? AND model=?", (task, model)).fetchone()
            if row is not None and (row["host"], row["pid"]) != (host, pid):
                alive = process_alive(row["host"], row["pid"], row["pid_started"])
                if alive or (alive is None and now - row["heartbeat_at"] < STALE_S):
                    raise OmnisegError(
                        f"model {model!r} of task {task!r} is being worked on by another process: "
                        f"`omniseg {row['command']}` (pid {row['pid']} on {row['host']}, since "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['started_at']))}); wait for it "
                        "to end, or stop it, then rerun (each pair is done once either way)")
            store.db.execute("INSERT OR REPLACE INTO workers VALUES (?,?,?,?,?,?,?,?)",
                            (task, model, redact(command), host, pid, started, now, now))


def release(store: Store, task: str, models: list[str]) -> None:
    """Give up this process's claims (at the end of a run, however it ended). A store that cannot be
    written (a full disk) keeps them: they lapse with this process, and the error that matters is raised."""
    host, pid, _ = this_process()
    try:
        with store.transaction():
            store.db.executemany("DELETE FROM workers WHERE task=? AND model=? AND host=? AND pid=?",
                                [(task, m, host, pid) for m in models])
    except OmnisegError:
        pass


def heartbeat(store: Store, task: str) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """This process still works on its models of ``task`` (what another machine goes by). Best effort: a
    store that cannot be written says so at the next row instead."""
    host, pid, _ = this_process()
    try:
        store.db.execute("UPDATE workers SET heartbeat_at=? WHERE task=? AND host=? AND pid=?",
                        (time.time(), task, host, pid))
    except sqlite3.Error:
        pass

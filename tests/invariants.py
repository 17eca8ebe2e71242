"""The promises omniseg makes, checked on a store after any sequence of commands, kills and faults.

`check(...)` is called by every kill, concurrency and fault test after its last command:

1. every (sample, model) pair asked for has exactly one row (and no row is for a pair never asked for);
2. every answer received was booked once: each answer in the archive has exactly one booking
   (answered, recovered or batch) in api_calls, and no booking lacks its kept answer (in the archive, or,
   where a full disk refused it, in its row);
3. with a fake server's log: no answer was paid for twice beyond the answers in flight at a kill
   (``repeats_allowed``), and every answer the server sent is booked unless it was lost that way;
4. no file under the store's folder, or the report folder, holds the API key;
5. no batch input or results file is left in the scratch folder;
6. ``omniseg curate`` and ``omniseg report`` succeed on the store.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner


def pairs(db: sqlite3.Connection, task: str | None = None) -> dict[tuple[str, str], int]:
    q = "SELECT sample_id, model, COUNT(*) FROM predictions" + (" WHERE task = ?" if task else "") + " GROUP BY 1, 2"
    return {(s, m): n for s, m, n in db.execute(q, (task,) if task else ())}


def bookings(db: sqlite3.Connection) -> dict[str, int]:
    rows = db.execute("SELECT cache_key, COUNT(*) FROM api_calls WHERE outcome IN ('answered', 'recovered', 'batch')"
                      " GROUP BY 1")
    return {k: n for k, n in rows}


def archived(archive: Path) -> set[str]:
    if not archive.is_file():
        return set()
    with sqlite3.connect(f"file:{archive}?mode=ro", uri=True) as db:
        return {k for (k,) in db.execute("SELECT key FROM answers")}


def files_holding(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` whose bytes contain ``secret`` (databases, their journals, masks, reports)."""
    needle = secret.encode()
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def check(store: Path, *, asked: set[tuple[str, str]], key: str | None = None, archive: Path | None = None,
          served_ok: int | None = None, repeats_allowed: int = 0, answers_expected: int | None = None,
          report: bool = True, curate_n: int = 2, task: str | None = None) -> dict:
    """Assert the promises; returns the figures it measured (for the test's printout)."""
    archive = archive or store.parent / "answers.sqlite"
    with sqlite3.connect(store) as db:
        got = pairs(db, task)
        booked = bookings(db)
        in_rows = {k for (k,) in db.execute("SELECT json_extract(meta, '$.cache_key') FROM predictions"
                                            " WHERE json_extract(meta, '$.unkept_answer') IS NOT NULL")}
    kept = archived(archive) | in_rows  # an answer a full disk kept out of the archive travels in its row
    assert set(got) == asked, (f"pairs without a row: {sorted(asked - set(got))[:5]}; rows never asked for: "
                               f"{sorted(set(got) - asked)[:5]}")
    assert all(n == 1 for n in got.values())
    twice = {k: n for k, n in booked.items() if n != 1}
    assert not twice, f"answers booked more than once: {twice}"
    assert set(booked) == kept, (f"kept but not booked: {len(kept - set(booked))}; booked but not kept: "
                                 f"{len(set(booked) - kept)}")
    if answers_expected is not None:
        assert len(kept) == answers_expected, (len(kept), answers_expected)
    if served_ok is not None:
        # every answer the server sent is kept once, except those lost on the wire at a kill (asked again)
        assert len(kept) <= served_ok <= len(kept) + repeats_allowed, (len(kept), served_ok, repeats_allowed)
    if key is not None:
        leaks = files_holding(store.parent, key)
        assert not leaks, f"the key is in {leaks}"
    scratch = store.parent / "batch"
    left = sorted(p.name for p in scratch.iterdir()) if scratch.is_dir() else []
    assert not left, f"batch scratch files left behind: {left}"
    figures = {"rows": len(got), "answers_kept": len(kept), "bookings": sum(booked.values())}
    if report:
        from omniseg.cli import app

        runner = CliRunner()
        r = runner.invoke(app, ["curate", "--store", str(store), "-n", str(curate_n), "-q"])
        assert r.exit_code == 0, r.output
        out = store.parent / "invariant-report"
        r = runner.invoke(app, ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-figures"])
        assert r.exit_code == 0, r.output
        manifest = json.loads((out / "manifest.json").read_text())
        figures["runs"] = [run["ended"] for t in manifest["tasks"].values() for run in t["runs"]]
        if key is not None:
            leaks = files_holding(out, key)
            assert not leaks, f"the key is in {leaks}"
    return figures

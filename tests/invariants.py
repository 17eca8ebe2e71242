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


def bookings(db: sqlite3.Connection, per_run: bool = False) -> dict:
    """Bookings per answer (cache key), or per (answer, run) with ``per_run``: a --refresh run asks for an answer
    it has again, and pays and books the new one (the archive keeps the newest)."""
    by = "cache_key, run_id" if per_run else "cache_key"
    rows = db.execute(f"SELECT {by}, COUNT(*) FROM api_calls WHERE outcome IN ('answered', 'recovered', 'batch')"
                      f" GROUP BY {by}")
    return {tuple(r[:-1]) if per_run else r[0]: r[-1] for r in rows}


def archived(archive: Path) -> set[str]:
    if not archive.is_file():
        return set()
    with sqlite3.connect(f"file:{archive}?mode=ro", uri=True) as db:
        return {k for (k,) in db.execute("SELECT key FROM answers")}


def files_holding(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` whose bytes contain ``secret`` (databases, their journals, masks, reports)."""
    needle = secret.encode()
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def booked_once(store: Path, archive: Path | None = None, task: str | None = None,
                per_run: bool = False) -> tuple[dict, dict, set]:
    """Promise 2 on its own: every kept answer booked exactly once (``per_run``: once in each run that booked it,
    as after --refresh), no booking without its kept answer. Returns (rows per pair, bookings, answers kept)."""
    archive = archive or store.parent / "answers.sqlite"
    with sqlite3.connect(store) as db:
        got = pairs(db, task)
        booked = bookings(db, per_run)
        in_rows = {k for (k,) in db.execute("SELECT json_extract(meta, '$.cache_key') FROM predictions"
                                            " WHERE json_extract(meta, '$.unkept_answer') IS NOT NULL")}
    kept = archived(archive) | in_rows  # an answer a full disk kept out of the archive travels in its row
    assert all(n == 1 for n in got.values())
    twice = {k: n for k, n in booked.items() if n != 1}
    assert not twice, f"answers booked more than once: {twice}"
    keys = {k[0] for k in booked} if per_run else set(booked)
    assert keys == kept, f"kept but not booked: {len(kept - keys)}; booked but not kept: {len(keys - kept)}"
    return got, booked, kept


def booked_once_together(stores: list[Path]) -> None:
    """Promise 2 for stores that share one answer archive (side by side in a folder): within each store every
    answer is booked once per run that paid for it, none without being kept, and every kept answer is booked in
    one of them."""
    booked: set[str] = set()
    for store in stores:
        with sqlite3.connect(store) as db:
            per_run = bookings(db, per_run=True)
        twice = {k: n for k, n in per_run.items() if n != 1}
        assert not twice, f"{store}: answers booked more than once in a run: {twice}"
        booked |= {k for k, _ in per_run}
    with sqlite3.connect(stores[0]) as db:
        in_rows = {k for (k,) in db.execute("SELECT json_extract(meta, '$.cache_key') FROM predictions"
                                            " WHERE json_extract(meta, '$.unkept_answer') IS NOT NULL")}
    kept = archived(stores[0].parent / "answers.sqlite") | in_rows
    assert booked <= kept, f"booked but not kept: {len(booked - kept)}"
    assert kept <= booked, f"kept but booked in none of {[s.name for s in stores]}: {len(kept - booked)}"


def no_key(folder: Path, key: str) -> None:
    """Promise 4: no file under ``folder`` holds ``key``."""
    leaks = files_holding(folder, key)
    assert not leaks, f"the key is in {leaks}"


def no_scratch(store: Path) -> None:
    """Promise 5: no batch input or results file is left in the scratch folder."""
    scratch = store.parent / "batch"
    left = sorted(p.name for p in scratch.iterdir()) if scratch.is_dir() else []
    assert not left, f"batch scratch files left behind: {left}"


def curate_and_report(store: Path, curate_n: int = 2, out: Path | None = None, html: bool = True,
                      by: str | None = None) -> dict:
    """Promise 6: `omniseg curate` (by the configured reference, or ``by``) and `omniseg report` succeed on the
    store; returns the manifest."""
    from omniseg.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["curate", "--store", str(store), "-n", str(curate_n), "--replace", "-q",
                            *(["--by", by] if by else [])])
    assert r.exit_code == 0, r.output
    out = out or store.parent / "invariant-report"
    r = runner.invoke(app, ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-figures",
                            *([] if html else ["--no-html"])])
    assert r.exit_code == 0, r.output
    return json.loads((out / "manifest.json").read_text())


def check(store: Path, *, asked: set[tuple[str, str]], key: str | None = None, archive: Path | None = None,
          served_ok: int | None = None, repeats_allowed: int = 0, answers_expected: int | None = None,
          report: bool = True, curate_n: int = 2, task: str | None = None, html: bool = True) -> dict:
    """Assert the promises; returns the figures it measured (for the test's printout)."""
    got, booked, kept = booked_once(store, archive, task)
    assert set(got) == asked, (f"pairs without a row: {sorted(asked - set(got))[:5]}; rows never asked for: "
                               f"{sorted(set(got) - asked)[:5]}")
    if answers_expected is not None:
        assert len(kept) == answers_expected, (len(kept), answers_expected)
    if served_ok is not None:
        # every answer the server sent is kept once, except those lost on the wire at a kill (asked again)
        assert len(kept) <= served_ok <= len(kept) + repeats_allowed, (len(kept), served_ok, repeats_allowed)
    if key is not None:
        no_key(store.parent, key)
    no_scratch(store)
    figures = {"rows": len(got), "answers_kept": len(kept), "bookings": sum(booked.values())}
    if report:
        out = store.parent / "invariant-report"
        manifest = curate_and_report(store, curate_n, out, html)
        figures["runs"] = [run["ended"] for t in manifest["tasks"].values() for run in t["runs"]]
        if key is not None:
            no_key(out, key)
    return figures

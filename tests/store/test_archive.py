"""omniseg.store.archive, the answer archive: damage named on open, a full disk never costs an answer twice."""

from __future__ import annotations

import os
import re
import sqlite3

import pytest
from typer.testing import CliRunner

import invariants
from conftest import API_KEY, gemini_yaml, make_kvasir, omniseg_with_fault
import warm_start
from omniseg.store.archive import AnswerArchive
from omniseg.cli import app
from omniseg.errors import OmnisegError
from omniseg.standins import fake_gemini as fg
from omniseg.standins import gemini_answers as ga

runner = CliRunner()


@pytest.fixture(autouse=True)
def _key(api_key):
    return api_key


def _archive_with_answers(path, n=300):
    a = AnswerArchive(path)
    for i in range(n):
        a.put(f"k{i}", "m", None, '{"text": "%s"}' % ("x" * 300 + str(i)), call={"cost_usd": 0.001})
    a.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    a.close()


def test_a_corrupted_archive_is_one_message_naming_it(tmp_path):
    """Defect 9: a corrupted answer archive (a page overwritten) gave sqlite3.DatabaseError with a traceback."""
    root = make_kvasir(tmp_path / "k", n=3)
    store = tmp_path / "runs" / "s.sqlite"
    archive = store.parent / "answers.sqlite"
    _archive_with_answers(archive)
    data = bytearray(archive.read_bytes())
    for off in range(2 * 4096, len(data) - 4096, 4096):  # every interior page, the header left alone
        data[off + 8: off + 600] = b"\xa5" * 592
    archive.write_bytes(bytes(data))
    with fg.FakeGemini() as srv:
        path = gemini_yaml(tmp_path, root, srv.url)
        for args in (["run", "--config", str(path), "--store", str(store), "-q"],
                     ["run", "--config", str(path), "--store", str(store), "-q", "--dry-run"]):
            r = runner.invoke(app, args)
            assert r.exit_code == 2, r.output
            assert "answer archive is corrupted" in r.output and str(archive) in r.output, r.output
            assert r.output.count("\n") == 1 and "Traceback" not in r.output
        assert len(srv.log) == 0  # nothing was asked (and paid for) while the archive was unreadable


def test_an_empty_archive_file_is_refused_before_anything_is_paid(tmp_path):
    """Defect 9: a 0-byte archive was silently treated as new, and every answer was paid again."""
    root = make_kvasir(tmp_path / "k", n=3)
    store = tmp_path / "runs" / "s.sqlite"
    store.parent.mkdir(parents=True)
    (store.parent / "answers.sqlite").write_bytes(b"")
    with fg.FakeGemini() as srv:
        r = runner.invoke(app, ["run", "--config", str(gemini_yaml(tmp_path, root, srv.url)), "--store", str(store), "-q"])
        assert r.exit_code == 2, r.output
        assert "empty file (0 bytes)" in r.output and "Restore it from a copy" in r.output, r.output
        assert len(srv.log) == 0
    with pytest.raises(OmnisegError, match="0 bytes"):
        AnswerArchive(store.parent / "answers.sqlite")


def test_a_failed_write_rolls_back_and_says_what_to_do(tmp_path):
    """Defect 10: a full disk gave `cannot rollback - no transaction is active` on top of the real error."""
    a = AnswerArchive(tmp_path / "a.sqlite")
    pages = a.db.execute("PRAGMA page_count").fetchone()[0]
    a.db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own 'database or disk is full' from here on
    with pytest.raises(OmnisegError, match=r"cannot write the answer archive .*full.*free disk space"):
        a.put("k", "m", None, os.urandom(60_000).hex())  # does not compress
    assert not a.db.in_transaction and len(a) == 0
    a.db.execute(f"PRAGMA max_page_count = {10 * pages + 1000}")
    a.put("k", "m", None, "y")  # the connection is usable again
    assert a.get("k") == "y"


def _held_first_commit(a: AnswerArchive, queued: int):
    """Make the first group commit wait until ``queued`` more answers wait behind it (a code point, no timer);
    returns the list of group sizes committed."""
    import threading

    sizes: list[int] = []
    commit = a._commit
    first = threading.Event()

    def held(group):
        if not first.is_set():
            first.set()
            while True:  # the other callers queue while this one holds the write lock
                with a._queue_lock:
                    if len(a._queue) >= queued:
                        break
        sizes.append(len(group))
        commit(group)

    a._commit = held
    return sizes, first


def test_answers_arriving_together_share_one_commit_and_each_is_on_disk_when_put_returns(tmp_path):
    """Group commit: 8 answers put at once cost 2 commits (the first, then the 7 that queued behind it), and
    every put returns only once its own answer is committed."""
    from concurrent.futures import ThreadPoolExecutor

    a = AnswerArchive(tmp_path / "a.sqlite")
    sizes, first = _held_first_commit(a, queued=7)

    def put(i):
        if i:
            first.wait()  # the first put holds the lock before the others arrive
        a.put(f"k{i}", "m", None, '{"n": %d}' % i, call={"cost_usd": 0.001 * i})
        return a.get_with_call(f"k{i}")  # on disk by now, from another connection too

    with ThreadPoolExecutor(8) as ex:
        kept = list(ex.map(put, range(8)))
    assert sizes == [1, 7]
    assert [k[0] for k in kept] == ['{"n": %d}' % i for i in range(8)]
    assert [k[1]["cost_usd"] for k in kept] == pytest.approx([0.001 * i for i in range(8)])
    a.close()
    other = AnswerArchive(tmp_path / "a.sqlite", readonly=True)
    assert len(other) == 8


def test_a_failed_group_commit_fails_every_answer_in_it_and_keeps_none(tmp_path):
    """A commit that fails (a full disk) tells each caller of its group, so each row keeps its answer instead."""
    from concurrent.futures import ThreadPoolExecutor

    a = AnswerArchive(tmp_path / "a.sqlite")
    a.put("before", "m", None, "kept")
    sizes, first = _held_first_commit(a, queued=3)
    pages = a.db.execute("PRAGMA page_count").fetchone()[0]

    def put(i):
        if i:
            first.wait()  # the first commit succeeds; the disk fills while the next three wait
        try:
            a.put(f"k{i}", "m", None, os.urandom(30_000).hex() if i else "small")
            return "kept"
        except OmnisegError as e:
            return str(e)

    real = a._commit

    def filling(group):
        if len(sizes) == 1:  # after the first group: SQLite's own 'database or disk is full'
            a.db.execute(f"PRAGMA max_page_count = {pages + 1}")
        real(group)

    a._commit = filling
    with ThreadPoolExecutor(4) as ex:
        outcomes = list(ex.map(put, range(4)))
    assert sizes == [1, 3]
    assert outcomes[0] == "kept"
    assert all(re.search(r"cannot write the answer archive .*full", o) for o in outcomes[1:]), outcomes
    assert not a.db.in_transaction
    assert a.get("k0") == "small" and a.get("before") == "kept"
    assert all(a.get(f"k{i}") is None for i in (1, 2, 3))


def _served_ok(srv) -> int:
    return sum(1 for e in srv.log if e["kind"] == "ok")


def test_a_full_disk_under_the_archive_stops_the_run_and_no_answer_is_paid_twice(tmp_path):
    """Defect 10: a disk filling while the archive was written: 30 answers received, 13 archived, 0 rows, and
    the rerun paid 17 again. Now the run stops sending requests at the first answer it cannot keep, every
    answer received has its row (the archive's refusals travel in the row), and the rerun pays for no answer
    twice: 30 images, 30 answers served in all."""
    root = make_kvasir(tmp_path / "k", n=30, size=(48, 64))
    store = tmp_path / "runs" / "s.sqlite"
    with fg.FakeGemini(ga.chaos(0, 0, 0, delay=0.01)) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, max_in_flight=4)
        args = ["run", "--config", path, "--store", store, "-q", "--batch-size", "8"]
        full = omniseg_with_fault(args, "omniseg.store.archive:AnswerArchive.__init__", 1, "sql",
                                  sql="PRAGMA max_page_count = {more}", more=2)
        assert full.returncode == 2, full.stderr
        err = full.stderr.strip().splitlines()
        assert "cannot write the answer archive" in err[0] and "full" in err[0], full.stderr
        assert "free disk space" in err[0] and "Traceback" not in full.stderr
        assert err[1:] == [f"{err[1].split()[0]} pairs were recorded this run"]  # the stop's message, nothing else
        with sqlite3.connect(store) as db:
            rows_then = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        served_then = _served_ok(srv)
        assert 0 < rows_then == served_then < 30  # every answer received became a row, and the run stopped
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
        served = _served_ok(srv)
    print(f"\ndisk full after {served_then} answers ({rows_then} rows); after freeing space {served} answers in all")
    assert served == 30
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(30)}, key=API_KEY, served_ok=served)


def test_a_full_disk_under_the_store_keeps_every_answer_for_the_rerun(tmp_path):
    """Defect 10, the store's side: rows cannot be written, the answers are in the archive already, the run
    ends with one message, and the rerun makes no API call for them."""
    root = make_kvasir(tmp_path / "k", n=24, size=(48, 64))
    store = tmp_path / "runs" / "s.sqlite"
    with fg.FakeGemini(ga.chaos(0, 0, 0, delay=0.01)) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, max_in_flight=4)
        args = ["run", "--config", path, "--store", store, "-q", "--batch-size", "8"]
        full = omniseg_with_fault(args, "omniseg.store.results:add_samples", 1, "sql",
                                  sql="PRAGMA max_page_count = {more}", more=2)
        assert full.returncode == 2, full.stderr
        err = full.stderr.strip().splitlines()
        assert len(err) == 1 and "cannot write the store" in err[0] and "full" in err[0], full.stderr
        served_then = _served_ok(srv)
        kept = invariants.archived(store.parent / "answers.sqlite")
        assert served_then == len(kept) > 0
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
        served = _served_ok(srv)
    assert served == 24  # the answers kept before the store filled were not asked for again
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(24)}, key=API_KEY, served_ok=served)


def test_a_process_opening_a_new_archive_as_another_creates_it_finds_it_whole(tmp_path, monkeypatch):
    """Shards share one archive: the one that creates it must never show the 0-byte file SQLite starts with, which the
    others would refuse as a lost archive (a CI run saw `omniseg run --executor local --shards 3` fail so)."""
    import sqlite3

    from omniseg.store import archive as archive_mod

    path = tmp_path / "answers.sqlite"
    real = sqlite3.connect
    seen = []

    def connect(target, *a, **kw):
        db = real(target, *a, **kw)
        if not seen and str(target) == str(path):  # the moment the archive exists under its own name
            seen.append(path.stat().st_size)
            archive_mod.AnswerArchive(path).close()  # another process opens it right then
        return db

    monkeypatch.setattr(archive_mod.sqlite3, "connect", connect)
    archive_mod.AnswerArchive(path).close()
    assert seen and seen[0] > 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")]  # no scratch left

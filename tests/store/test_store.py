"""omniseg.store.database: one file per sample whatever its id, no path outside the store, damage named as such."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omniseg import config
from omniseg.cli import app
from omniseg.errors import ConfigError, OmnisegError
from omniseg.store.database import Store

from conftest import OTSU, REPO, make_kvasir, write_config
from omniseg.store import bookings as store_bookings
from omniseg.store import masks as store_masks
from omniseg.store import results as store_results
from omniseg.store import reviews as store_reviews
from omniseg.store import runs as store_runs
from omniseg.store import workers as store_workers


def test_ids_differing_only_in_punctuation_get_their_own_mask_files(tmp_path):
    """Hardening defect 2: x;1, x:1 and x_1 shared masks/.../x_1.png, which held one of them."""
    st = Store(tmp_path / "s.sqlite")
    masks = {}
    for i, sid in enumerate(["x;1", "x:1", "x_1", "x/1", ".."]):
        m = np.zeros((4, 5), bool)
        m[0, i] = True
        masks[sid] = m
        store_results.record(st, 1, "t", sid, "m", status="ok", mask=m)
    rows = st.query("SELECT sample_id, mask_path FROM predictions")
    assert rows["mask_path"].is_unique
    for sid, path in zip(rows["sample_id"], rows["mask_path"]):
        assert (st.root / path).resolve().is_relative_to((st.root / "masks").resolve())
        assert np.array_equal(np.asarray(Image.open(st.root / path)) > 0, masks[sid]), sid
    assert st.query("SELECT mask_path FROM predictions WHERE sample_id = 'x_1'")["mask_path"][0].endswith("/x_1.png")


def test_names_cannot_reach_outside_the_store_or_the_report(tmp_path):
    """Hardening defect 3: a model named '..' with task '..' wrote masks outside the store folder,
    and a task '../../evil' made `report` write a figure outside --out."""
    root = make_kvasir(tmp_path / "k", n=2)
    for task, model in (("..", "otsu"), ("../../evil", "otsu"), ("polyp", ".."), ("polyp", ".hidden")):
        path = write_config(tmp_path / "c.yaml", task, "kvasir-seg", root, OTSU.replace("name: otsu", f"name: '{model}'"))
        with pytest.raises(ConfigError, match="not starting with '.'|letters, digits"):
            config.load(path)
    st = Store(tmp_path / "runs" / "s.sqlite")
    store_results.record(st, 1, "..", "a", "..", status="ok", mask=np.ones((3, 3), bool))  # a store written by other means
    assert all(p.resolve().is_relative_to((tmp_path / "runs").resolve()) for p in tmp_path.rglob("*.png"))
    with pytest.raises(OmnisegError, match="outside the store folder"):
        store_masks.write_atomic(st, __import__("pathlib").Path("..") / "x.png", lambda p: p.write_bytes(b""))
    run_id = store_runs.start_run(st, "../../evil", "test", ["m"], {"dataset": {"name": "kvasir-seg", "root": str(root)}}, "h", None)
    store_results.add_samples(st, "../../evil", [("a", "test", None, {})])
    store_results.record(st, run_id, "../../evil", "a", "m", status="ok", mask=np.ones((3, 3), bool), scores={"dice": 1.0, "iou": 1.0})
    st.close()
    r = CliRunner().invoke(app, ["report", "--store", str(tmp_path / "runs" / "s.sqlite"), "--out", str(tmp_path / "a" / "b" / "rep")])
    assert r.exit_code == 0, r.output
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "evil" in p.name]
    assert written and all(p.resolve().is_relative_to((tmp_path / "a" / "b" / "rep").resolve()) for p in written)


def _corrupt_interior(path):
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    for off in range(2 * page, len(data) - page, page):  # leave the header page alone
        data[off + 8: off + 600] = b"\xa5" * 592
    path.write_bytes(bytes(data))


def test_a_corrupted_store_is_named_as_such(tmp_path, polyp_config):
    """Hardening defect 9: interior damage gave a pandas DatabaseError in `report`, and `run` said 'nothing new'."""
    root = make_kvasir(tmp_path / "k", n=40)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU)
    store = tmp_path / "s.sqlite"
    r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    assert r.exit_code == 0, r.output
    with Store(store) as st:  # enough rows for several pages, all checkpointed into the main file
        st.db.executemany("INSERT INTO samples VALUES ('polyp', ?, 'test', NULL, ?)",
                          [(f"pad{i:05d}", "x" * 200) for i in range(400)])
        st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _corrupt_interior(store)
    for args in (["report", "--store", str(store), "--out", str(tmp_path / "rep")],
                 ["run", "--config", str(cfg), "--store", str(store), "-q"],
                 ["curate", "--store", str(store)]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "corrupted" in r.output and str(store) in r.output and r.output.count("\n") == 1, r.output


def test_a_full_disk_or_a_blocked_folder_is_one_message_and_resumable(tmp_path, monkeypatch):
    """Hardening defect 9: a read-only masks/ folder or a full disk during `run` gave an OSError traceback."""
    root = make_kvasir(tmp_path / "k", n=6)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU)
    store = tmp_path / "runs" / "s.sqlite"
    (tmp_path / "runs" / "masks").mkdir(parents=True)
    (tmp_path / "runs" / "masks" / "polyp").write_text("a file where a folder should be")
    r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    assert r.exit_code == 2 and "cannot write" in r.output and "masks/polyp" in r.output, r.output
    assert "Traceback" not in r.output
    (tmp_path / "runs" / "masks" / "polyp").unlink()
    real_save = Image.Image.save
    calls = {"n": 0}

    def disk_full(self, fp, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    assert r.exit_code == 2 and "No space left on device" in r.output and "rerun the same command" in r.output, r.output
    monkeypatch.setattr(Image.Image, "save", real_save)
    with Store(store) as st:
        done = len(st.query("SELECT * FROM predictions"))
    assert done == 3  # the pairs written before the disk filled are kept
    r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    assert r.exit_code == 0 and "3 already done" in r.output, r.output
    import invariants

    invariants.check(store, asked={(f"case{i:03d}", "otsu") for i in range(6)})


def test_probability_maps_are_the_documented_8_bit_pngs(tmp_path):
    """Hardening defect 11: docs/outputs.md promised `.prob.npz` float16 maps; the code writes 8-bit PNGs."""
    st = Store(tmp_path / "s.sqlite")
    prob = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    store_results.record(st, 1, "t", "a", "m", status="ok", mask=prob > 0.5, prob=prob)
    path = st.query("SELECT prob_path FROM predictions")["prob_path"][0]
    stored = np.asarray(Image.open(st.root / path))
    assert path.endswith(".prob.png") and stored.dtype == np.uint8
    assert np.abs(stored / 255 - prob).max() <= 0.5 / 255 + 1e-6
    docs = (REPO / "docs" / "outputs.md").read_text()
    assert ".prob.png" in docs and ".npz" not in docs
    readme = (REPO / "README.md").read_text()
    assert "pays for nothing twice" not in readme and "still on the wire" in readme  # what the kill test measured


def test_a_read_only_store_is_named_read_only_and_report_still_works(tmp_path):
    """Defect 12: a read-only store was reported as "not a usable omniseg store ... move this file away", and
    `report` could not read it. As root no file is read-only, so the store's connection is made read-only at
    a code point (SQLite's query_only: the same 'attempt to write a readonly database' error)."""
    import os
    import stat

    from conftest import omniseg_with_fault

    root = make_kvasir(tmp_path / "k", n=4)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU)
    store = tmp_path / "runs" / "s.sqlite"
    assert CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q", "--limit", "2"]).exit_code == 0
    args = ["run", "--config", cfg, "--store", store, "-q"]
    r = omniseg_with_fault(args, "omniseg.store.database:Store.__init__", 1, "sql", sql="PRAGMA query_only = ON")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "the store is read-only" in err and str(store) in err and "chmod" in err, err
    assert "move this file away" not in err
    rep = omniseg_with_fault(["report", "--store", store, "--out", tmp_path / "rep", "--split", "all", "--no-figures"],
                             "omniseg.store.database:Store.__init__", 1, "sql", sql="PRAGMA query_only = ON")
    assert rep.returncode == 0, rep.stderr  # report only reads
    assert (tmp_path / "rep" / "report.md").is_file()
    if os.geteuid() != 0:  # where permissions bind, the real thing too
        store.chmod(stat.S_IRUSR)
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
        assert r.exit_code == 2 and "read-only" in r.output, r.output


def test_one_worker_per_task_and_model_a_gone_one_lapses(tmp_path):
    from omniseg.store import workers as store_mod

    st = Store(tmp_path / "s.sqlite")
    store_workers.claim(st, "polyp", ["a", "b"], "run --task polyp")
    store_workers.claim(st, "polyp", ["a"], "run --task polyp")  # this process again: fine
    other = Store(tmp_path / "s.sqlite")
    other.db.execute("UPDATE workers SET pid = 1, pid_started = NULL WHERE model = 'a'")  # pid 1 lives
    with pytest.raises(OmnisegError, match=r"model 'a' of task 'polyp' is being worked on by another process: "
                                           r"`omniseg run --task polyp` \(pid 1 on "):
        store_workers.claim(st, "polyp", ["a"], "redecode --task polyp")
    dead = 2 ** 22 + 12345  # beyond any pid this machine hands out
    other.db.execute("UPDATE workers SET pid = ? WHERE model = 'a'", (dead,))
    store_workers.claim(st, "polyp", ["a"], "run --task polyp")  # a process that is gone holds nothing
    other.db.execute("UPDATE workers SET host = 'elsewhere', pid = 7, heartbeat_at = ? WHERE model = 'a'",
                     (__import__("time").time(),))
    with pytest.raises(OmnisegError, match="pid 7 on elsewhere"):
        store_workers.claim(st, "polyp", ["a"], "run")  # on another machine: held while it beats
    other.db.execute("UPDATE workers SET heartbeat_at = heartbeat_at - ? WHERE model = 'a'", (store_mod.STALE_S + 1,))
    store_workers.claim(st, "polyp", ["a"], "run")
    store_workers.release(st, "polyp", ["a", "b"])
    assert st.query("SELECT COUNT(*) n FROM workers")["n"][0] == 0
    assert store_mod.process_alive(store_mod.socket.gethostname(), dead, None) is False


def test_two_online_runs_of_one_model_pay_once_and_a_killed_worker_is_replaced(tmp_path, api_key):
    """Defect 2, online: a second run (or a redecode) of a model another process is running is refused,
    naming that process; once it is killed, the next run takes over and pays for no answer twice."""
    import sqlite3

    import invariants
    from conftest import gemini_yaml, start_with_fault, wait_for_file
    from omniseg.standins import fake_gemini as fg
    from omniseg.standins import gemini_answers as ga

    root = make_kvasir(tmp_path / "k", n=10)
    store = tmp_path / "runs" / "s.sqlite"
    flag = tmp_path / "paused"
    with fg.FakeGemini(ga.chaos(0, 0, 0, delay=0.01)) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, max_in_flight=2)
        first = start_with_fault(["run", "--config", cfg, "--store", store, "-q", "--batch-size", "4"],
                                 "omniseg.store.results:record", 2, "pause", file=str(flag))
        try:
            wait_for_file(tmp_path / "paused.reached", first)  # two rows written, the rest to do
            for args in (["run", "--config", str(cfg), "--store", str(store), "-q"],
                         ["redecode", "--store", str(store), "--all", "-q"]):
                r = CliRunner().invoke(app, args)
                assert r.exit_code == 2, r.output
                assert "is being worked on by another process" in r.output and f"pid {first.pid}" in r.output, r.output
            first.kill()  # killed while it holds the model
            first.wait()
        finally:
            (tmp_path / "paused.go").touch()
        with sqlite3.connect(store) as db:
            held = db.execute("SELECT pid FROM workers").fetchall()
        assert held == [(first.pid,)]  # a kill leaves its claim behind ...
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output  # ... and it lapses with the process
        served = sum(1 for e in srv.log if e["kind"] == "ok")
    figures = invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(10)}, key=api_key,
                               served_ok=served, repeats_allowed=2, answers_expected=10)
    assert figures["runs"] == ["did not end", "finished"]


def test_each_answer_is_booked_once_however_its_rows_use_it(tmp_path):
    """The store's bookkeeping of answers: an answer received is booked when its row is written; a row answered
    from the archive adds a cache hit, and books the answer ('recovered') only if no row ever did; a batch job's
    answer is booked as 'batch' by the first row that uses it; counts and costs that are not numbers are never
    stored as such."""
    st = Store(tmp_path / "s.sqlite")

    def calls():
        return [tuple(r) for r in st.db.execute(
            "SELECT sample_id, outcome, cache_key, ROUND(cost_usd, 6), cost_known FROM api_calls ORDER BY call_id")]

    store_results.record(st, 1, "t", "a", "m", status="ok", calls=[{"attempt": 1, "outcome": "answered", "cache_key": "k1", "cost_usd": 0.01}])
    hit = lambda key, booking: {"attempt": 0, "outcome": "cache_hit", "cache_key": key, "cost_usd": 0.0, "booking": booking}  # noqa: E731
    store_results.record(st, 1, "t", "b", "m", status="ok", calls=[hit("k1", {"outcome": "answered", "cost_usd": 0.01})])
    store_results.record(st, 1, "t", "c", "m", status="ok", calls=[hit("k2", {"outcome": "answered", "cost_usd": 0.02})])
    store_results.record(st, 1, "t", "d", "m", status="ok", calls=[hit("k2", {"outcome": "answered", "cost_usd": 0.02})])
    store_results.record(st, 1, "t", "e", "m", status="ok", calls=[hit("k3", {"outcome": "batch", "cost_usd": 0.005, "job": "batches/1"})])
    store_results.record(st, 1, "t", "f", "m", status="ok", calls=[hit("k3", {"outcome": "batch", "cost_usd": 0.005})])
    assert calls() == [("a", "answered", "k1", 0.01, 1), ("b", "cache_hit", "k1", 0.0, 1),
                       ("c", "recovered", "k2", 0.02, 1), ("c", "cache_hit", "k2", 0.0, 1), ("d", "cache_hit", "k2", 0.0, 1),
                       ("e", "batch", "k3", 0.005, 1), ("f", "cache_hit", "k3", 0.0, 1)]
    booked = st.db.execute("SELECT ROUND(SUM(cost_usd), 6) FROM api_calls").fetchone()[0]
    assert booked == pytest.approx(0.035)
    store_results.record(st, 1, "t", "g", "m", status="ok", calls=[
        {"outcome": "answered", "cache_key": "k4", "cost_usd": float("nan"), "prompt_tokens": "300",
         "output_tokens": -5, "thoughts_tokens": True, "http_status": 200, "latency_s": float("inf")},
        {"outcome": "answered", "cache_key": "k5", "cost_usd": 0.0, "cost_known": False, "prompt_tokens": 3}])
    rows = st.db.execute("SELECT cost_usd, cost_known, prompt_tokens, output_tokens, thoughts_tokens, http_status,"
                         " latency_s FROM api_calls WHERE sample_id = 'g' ORDER BY call_id").fetchall()
    assert [tuple(r) for r in rows] == [(0.0, 0, None, None, None, 200, None), (0.0, 0, 3, None, None, None, None)]
    store_results.record(st, 1, "t", "h", "m", status="api_error", reason="503",
              calls=[{"attempt": 1, "outcome": "error", "http_status": 503, "error": "UNAVAILABLE"}])
    assert st.db.execute("SELECT cost_known FROM api_calls WHERE sample_id = 'h'").fetchone()[0] == 1  # no answer: no cost
    assert store_results.done_pairs(st, "t") == {(s, "m") for s in "abcdefgh"}
    assert store_results.done_pairs(st, "t", redo=("api_error",)) == {(s, "m") for s in "abcdefg"}


def test_a_rewrite_keeps_the_pairs_run_time_and_calls(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    m = np.zeros((3, 4), bool)
    store_results.record(st, 7, "t", "a", "m", status="unknown_form", reason="?", scores={"dice": 0.0, "iou": 0.0},
              calls=[{"outcome": "answered", "cache_key": "k", "cost_usd": 0.5}], elapsed_s=1.5, meta={"x": 1})
    before = tuple(st.db.execute("SELECT run_id, created_at, elapsed_s FROM predictions").fetchone())
    m[1, 1] = True
    store_results.rewrite(st, "t", "a", "m", status="ok", reason="", mask=m, scores={"dice": 1.0, "iou": 1.0}, meta={"y": 2})
    row = st.db.execute("SELECT run_id, created_at, elapsed_s, status, meta, mask_path FROM predictions").fetchone()
    assert tuple(row[:3]) == before and row[3] == "ok" and row[4] == '{"y": 2}' and row[5]
    assert st.db.execute("SELECT dice FROM scores").fetchone()[0] == 1.0
    assert st.db.execute("SELECT COUNT(*) FROM api_calls").fetchone()[0] == 1
    store_results.rewrite(st, "t", "a", "m", status="invalid_answer", reason="bad", mask=None, scores={"dice": 0.0, "iou": 0.0}, meta={})
    assert tuple(st.db.execute("SELECT mask_path, height FROM predictions").fetchone()) == (None, None)


def test_run_states_say_which_runs_ended(tmp_path):
    from omniseg.store import workers as store_mod

    st = Store(tmp_path / "s.sqlite")
    ids = [store_runs.start_run(st, "t", "test", ["m"], {}, "h", None) for _ in range(4)]
    store_runs.finish_run(st, ids[0], "finished", {})
    store_runs.finish_run(st, ids[1], "stopped", {})
    st.db.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (2 ** 22 + 999, ids[2]))  # a process that is gone
    st.db.execute("UPDATE runs SET host = 'elsewhere' WHERE run_id = ?", (ids[3],))
    assert store_runs.run_states(st, "t") == {ids[0]: "finished", ids[1]: "stopped", ids[2]: "did not end",
                                  ids[3]: "running elsewhere?"}
    mine = store_runs.start_run(st, "t", "test", ["m"], {}, "h", None)
    assert store_runs.run_states(st, "t")[mine] == "running"  # this process
    assert store_mod.process_alive(None, None, None) is False


def test_zero_counts_and_costs_are_numbers_and_only_answers_need_a_known_cost(tmp_path):
    """0 tokens, 0 s and 0 USD are measurements, not missing values; a call that brought no answer (a retried
    error, a cache hit) has no cost to know, every kind of answer ('answered', 'recovered', 'batch') does."""
    st = Store(tmp_path / "s.sqlite")
    store_results.record(st, 1, "t", "a", "m", status="ok", calls=[
        {"outcome": "answered", "cache_key": "k0", "cost_usd": 0, "prompt_tokens": 0, "output_tokens": 0,
         "thoughts_tokens": 0, "http_status": 0, "latency_s": 0}])
    row = st.db.execute("SELECT cost_usd, cost_known, prompt_tokens, output_tokens, thoughts_tokens, http_status,"
                        " latency_s FROM api_calls").fetchone()
    assert tuple(row) == (0.0, 1, 0, 0, 0, 0, 0.0)
    for outcome in ("answered", "recovered", "batch", "cache_hit", "error"):
        store_results.record(st, 1, "t", outcome, "m", status="ok", calls=[{"outcome": outcome, "cache_key": f"x-{outcome}",
                                                              "cost_usd": float("nan")}])
    known = dict(st.db.execute("SELECT sample_id, cost_known FROM api_calls WHERE sample_id != 'a'").fetchall())
    assert known == {"answered": 0, "recovered": 0, "batch": 0, "cache_hit": 1, "error": 1}


def test_a_rewrite_records_the_masks_size_and_a_meta_that_json_cannot_hold_as_text(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    store_results.record(st, 1, "t", "a", "m", status="unknown_form", reason="?", meta={})
    m = np.zeros((3, 5), bool)
    m[0, 0] = True
    store_results.rewrite(st, "t", "a", "m", status="ok", reason="", mask=m, scores={"dice": 1.0, "iou": 1.0},
               meta={"z": 1, "path": tmp_path / "x.png", "a": np.int64(3)})
    h, w, meta = st.db.execute("SELECT height, width, meta FROM predictions").fetchone()
    assert (h, w) == (3, 5)
    assert meta == '{"a": "3", "path": "' + str(tmp_path / "x.png") + '", "z": 1}'  # keys sorted, the rest as text


def test_a_recorded_process_is_alive_only_on_this_host_with_its_pid_and_start_time():
    import os
    import signal
    import socket
    import subprocess
    import sys

    from omniseg.store.workers import _started, process_alive

    host = socket.gethostname()
    assert process_alive(None, os.getpid(), None) is False and process_alive(host, None, None) is False
    assert process_alive("another-host.invalid", os.getpid(), None) is None  # cannot tell
    # the child blocks every signal it can, so one sent to it stays pending where /proc shows it
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, "
                              "set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}); print('ready', flush=True); "
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert process_alive(host, child.pid, None) is True
        assert process_alive(host, child.pid, _started(child.pid)) is True
        assert process_alive(host, child.pid, "0") is False  # the pid now belongs to another process
        status = dict(line.split(":\t", 1) for line in open(f"/proc/{child.pid}/status").read().splitlines() if ":\t" in line)
        assert int(status["SigPnd"], 16) == 0 and int(status["ShdPnd"], 16) == 0  # asking sent no signal
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert process_alive(host, child.pid, None) is False


def test_a_reused_pid_is_no_running_run_and_a_store_without_process_columns_still_answers(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    reused = store_runs.start_run(st, "t", "test", ["m"], {}, "h", None)  # this process's pid, another process's start time
    st.db.execute("UPDATE runs SET pid_started = 'not-this-start' WHERE run_id = ?", (reused,))
    assert store_runs.run_states(st, "t") == {reused: "did not end"}
    for column in ("host", "pid", "pid_started"):  # a store written before runs recorded their process
        st.db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    assert store_runs.run_states(st, "t") == {reused: "did not end"}


def test_a_review_answer_stores_an_empty_note_and_the_page_as_its_source_by_default(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    store_reviews.put_review(st, "t", "item1", "ann", "agree", answered_at=5.0)
    assert st.db.execute("SELECT * FROM reviews").fetchall()[0][:] == ("t", "item1", "ann", "agree", "", None, 5.0, "page")


def test_a_call_row_keeps_each_field_as_given_and_its_defaults(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    run = store_runs.start_run(st, "t", "test", ["m"], {}, "h", None)
    store_bookings.add_calls(st, run, "t", "a", "m", [{}, {"attempt": 2, "outcome": "http_error", "error": 503, "model_version": 7},
                                      {"outcome": "answered", "model_version": "gemini-x", "cache_key": "k1"}])
    rows = st.db.execute("SELECT attempt, outcome, error, model_version FROM api_calls ORDER BY rowid").fetchall()
    assert [tuple(r) for r in rows] == [(0, "", None, None), (2, "http_error", "503", None), (0, "answered", None, "gemini-x")]
    booking = {"outcome": "answered", "cost_usd": 0.5, "prompt_tokens": 3}
    store_bookings.add_calls(st, run, "t", "b", "m", [{"outcome": "cache_hit", "cache_key": "k1", "booking": booking},
                                      {"outcome": "cache_hit", "cache_key": "k2", "booking": booking}])
    recovered = st.db.execute("SELECT cache_key FROM api_calls WHERE outcome = 'recovered'").fetchall()
    assert [r[0] for r in recovered] == ["k2"]  # k1 was booked already; the one after it still is


def test_a_row_without_a_mask_and_a_probability_map_out_of_range(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    run = store_runs.start_run(st, "t", "test", ["m"], {}, "h", None)
    store_results.record(st, run, "t", "a", "m", status="error", meta={"z": 1, "a": tmp_path / "p"})
    row = st.db.execute("SELECT reason, mask_path, prob_path, height, width, meta FROM predictions").fetchone()
    assert tuple(row) == ("", None, None, None, None, json.dumps({"a": str(tmp_path / "p"), "z": 1}))
    store_results.record(st, run, "t", "b", "m", status="ok", mask=np.ones((2, 3), bool), prob=np.array([[-0.5, 0.5, 1.5]] * 2))
    path = st.db.execute("SELECT prob_path FROM predictions WHERE sample_id = 'b'").fetchone()[0]
    assert np.asarray(Image.open(st.path.parent / path)).tolist() == [[0, 128, 255]] * 2
    store_results.record(st, run, "t", "c", "m", status="ok", mask=np.ones((2, 3), bool), meta={"k": [1]})
    assert st.db.execute("SELECT meta FROM predictions WHERE sample_id = 'c'").fetchone()[0] == '{"k": [1]}'


from hypothesis import given, strategies as hst  # noqa: E402

from omniseg.store.schema import file_name  # noqa: E402


@given(hst.lists(hst.text(max_size=40) | hst.text(min_size=101, max_size=300), min_size=1, max_size=6, unique=True))
def test_a_file_name_fits_any_file_system_and_tells_ids_apart(ids):
    names = [file_name(i) for i in ids]
    for i, n in zip(ids, names):
        raw = n.encode(errors="surrogatepass")
        assert 0 < len(raw) <= 100 and "/" not in n and "\x00" not in n and not n.startswith(".")
        assert len((n + ".prob.png.4194304.tmp").encode(errors="surrogatepass")) <= 255
        if i and len(i.encode(errors="surrogatepass")) <= 100 and all(c.isalnum() or c in "-_.() " for c in i) \
                and not i.startswith("."):
            assert n == i  # a readable id stays as it is
    assert len(set(names)) == len(names)


def test_a_250_byte_id_gets_its_mask_and_probability_files(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    run_id = store_runs.start_run(st, "t", "test", ["m"], {}, "h", None)
    ids = ["x" * 250, "é" * 125, "a/b" * 80]
    store_results.add_samples(st, "t", [(sid, "test", None, {}) for sid in ids])
    for sid in ids:
        store_results.record(st, run_id, "t", sid, "m", status="ok", mask=np.ones((4, 5), bool), prob=np.full((4, 5), 0.7),
                  scores={"dice": 1.0})
    rows = st.query("SELECT sample_id, mask_path, prob_path FROM predictions")
    assert sorted(rows.sample_id) == sorted(ids)
    for p in [*rows.mask_path, *rows.prob_path]:
        assert (tmp_path / p).is_file() and len(Path(p).name.encode()) <= 255
    st.close()


def test_the_fields_the_study_reads_are_columns_written_with_each_row_and_filled_for_older_stores(tmp_path):
    """Schema 6: answer_form, confidence, answer_head and endpoint (a row's meta) and privileged and the asked API
    model (a model's signature) are columns. A store written before them reads the same, open read-only (from the
    JSON) or migrated (the columns filled from it)."""
    import shutil
    import sqlite3

    import pandas as pd

    from omniseg.store.schema import SCHEMA_VERSION

    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        run = store_runs.start_run(st, "t", "test", ["gem", "box"], {"task": "t"}, "h", None)
        store_results.add_samples(st, "t", [("a", "test", None, {}), ("b", "test", None, {})])
        store_runs.set_model(st, "t", "gem", "gemini", {"options": {"model": "gemini-x"}}, "h1", "omnimodel")
        store_runs.set_model(st, "t", "box", "sam3", {"privileged": True, "options": {}}, "h2", "foundation")
        store_results.record(st, run, "t", "a", "gem", status="ok", scores={"dice": 0.5}, meta={
            "answer_form": "boxes", "confidence": 0.25, "answer_head": "[{\"box_2d\"", "endpoint": "http://h/v1",
            "cache_key": "k"})
        store_results.record(st, run, "t", "b", "gem", status="ok", scores={"dice": 0.7}, meta={"confidence": "high"})
        store_results.record(st, run, "t", "a", "box", status="ok", scores={"dice": 0.9}, meta={})
        cols = [list(r) for r in st.db.execute("SELECT sample_id, model, answer_form, confidence, answer_head, endpoint"
                                               " FROM predictions ORDER BY 1, 2")]
        models = [list(r) for r in st.db.execute("SELECT model, privileged, api_model FROM models ORDER BY 1")]
        new = store_results.per_image(st, "t")
        heads = store_results.answer_heads(st)
        assert store_runs.privileged(st, "t") == {"box"}
        assert [tuple(r) for r in store_results.endpoints(st, "t")] == [("gem", "http://h/v1")]
    assert cols[0][2:] == [None, None, None, None] and cols[1][2:] == ["boxes", 0.25, "[{\"box_2d\"", "http://h/v1"]
    assert cols[2][3] is None  # a confidence that is no number is no number
    assert models == [["box", 1, None], ["gem", 0, "gemini-x"]]
    assert heads.values.tolist() == [["t", "a", "gem", "[{\"box_2d\""]]

    old = tmp_path / "old.sqlite"  # the same rows as schema 5 held them: the fields in JSON only
    shutil.copyfile(path, old)
    db = sqlite3.connect(old)
    for table, column in (("predictions", "answer_form"), ("predictions", "confidence"), ("predictions", "answer_head"),
                          ("predictions", "endpoint"), ("models", "privileged"), ("models", "api_model")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("PRAGMA user_version=5")
    db.commit()
    db.close()
    with Store(old, readonly=True) as st:
        pd.testing.assert_frame_equal(store_results.per_image(st, "t"), new, check_dtype=False)
        assert store_runs.privileged(st, "t") == {"box"} and [tuple(r) for r in store_results.endpoints(st, "t")] == [("gem", "http://h/v1")]
        assert store_results.answer_heads(st).values.tolist() == heads.values.tolist()
    with Store(old) as st:  # opened to write: migrated, the columns filled from the rows' JSON
        assert st.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [list(r) for r in st.db.execute("SELECT sample_id, model, answer_form, confidence, answer_head, endpoint"
                                               " FROM predictions ORDER BY 1, 2")] == cols
        assert [list(r) for r in st.db.execute("SELECT model, privileged, api_model FROM models ORDER BY 1")] == models
        pd.testing.assert_frame_equal(store_results.per_image(st, "t"), new, check_dtype=False)


def test_a_store_refused_on_open_leaves_no_connection_behind(tmp_path):
    """A store that cannot be used (here: written by a newer omniseg) is refused, and its file is not left open (an
    open connection holds SQLite's locks and would be carried into any process forked after)."""
    import gc
    import os
    import sqlite3

    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    gc.disable()  # a connection only garbage collection would close counts as left open
    try:
        for readonly in (False, True):
            with pytest.raises(OmnisegError, match="newer than this omniseg"):
                Store(path, readonly=readonly)
            held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                    if os.path.exists(f"/proc/self/fd/{fd}")]
            assert not [h for h in held if h.startswith(str(path))], held
    finally:
        gc.enable()

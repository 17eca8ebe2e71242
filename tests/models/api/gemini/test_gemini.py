"""The Gemini model through the real google-genai client against the fake server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
from pathlib import Path

import google.genai  # noqa: F401  (a hard dependency: a broken install fails here, never skips)
import numpy as np
import pytest

from omniseg import config
from omniseg.errors import OmnisegError
from omniseg.inference.runner import dry_run, run
from omniseg.store.database import Store
from omniseg.standins import fake_gemini as fg
from omniseg.standins import gemini_answers as ga

from conftest import KVASIR_REAL, answers_asked_again, make_kvasir, write_config
import warm_start

KEY = "omniseg-test-key-not-real-0123456789abcd"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def gemini_config(tmp_path: Path, url: str, root: Path | None = None, n: int = 8, **options) -> config.TaskConfig:
    root = root or make_kvasir(tmp_path / "k", n=n)
    opts = {"base_url": url, "target": "polyp", "backoff_s": 0.01, "max_in_flight": 4, **options}
    rendered = ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in opts.items())
    models = f"  - name: gem\n    kind: gemini\n    options: {{{rendered}}}\n"
    return config.load(write_config(tmp_path / "g.yaml", "polyp", "kvasir-seg", root, models))


def rows(st: Store):
    return st.query("SELECT p.sample_id, p.status, p.reason, c.dice FROM predictions p"
                    " LEFT JOIN scores c USING (task, sample_id, model) ORDER BY sample_id")


def _promises(store: Path, n: int, **kw) -> dict:
    """The invariant check (tests/invariants.py) for the n images of gemini_config."""
    import invariants

    return invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(n)}, key=KEY, **kw)


@pytest.mark.parametrize("mode", ["json-mask", "polygon", "image-mask"])
def test_each_mode_decodes_masks(tmp_path, mode):
    with fg.FakeGemini() as srv:
        cfg = gemini_config(tmp_path, srv.url, mode=mode)
        with Store(tmp_path / "s.sqlite") as st:
            s = run(cfg, st, progress=False)
            df = rows(st)
            calls = st.query("SELECT * FROM api_calls")
    assert s.statuses == {"ok": 8}
    assert (df["status"] == "ok").all()
    assert calls["model_version"].eq("gemini-3.5-flash").all()
    assert (calls["prompt_tokens"] > 0).all() and (calls["cost_usd"] > 0).all()
    first = srv.log[0]
    assert first["version"] == "v1beta" and first["model"] == "gemini-3.5-flash"


def test_retry_info_is_honoured_and_retries_are_bounded(tmp_path):
    failing: list[str] = []  # the first two images the server sees stay unavailable, whatever their bytes

    def behave(req):
        if req.attempt == 1:
            if len(failing) < 2:
                failing.append(req.image_sha)
            return ga.error(429, "RESOURCE_EXHAUSTED", retry_delay="0.4s")
        return ga.error(503, "UNAVAILABLE") if req.image_sha in failing else ga.good_answer(req)

    with fg.FakeGemini(behave) as srv:
        cfg = gemini_config(tmp_path, srv.url, n=6, max_retries=3)
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            df = rows(st)
            calls = st.query("SELECT sample_id, attempt, http_status FROM api_calls ORDER BY sample_id, attempt")
    by_image: dict[str, list] = {}
    for e in srv.log:
        by_image.setdefault(e["image_sha"], []).append(e)
    for log in by_image.values():
        assert len(log) <= 4  # 1 + max_retries
        assert log[1]["start"] - log[0]["end"] >= 0.39  # waited the server's RetryInfo delay
    failed = df[df["status"] != "ok"]
    assert len(failed) == 2 and set(failed["status"]) == {"api_error"}
    assert all("503" in r and "after 4 attempt(s)" in r for r in failed["reason"])
    assert all(len(by_image[sha]) == 4 for sha in failing)
    assert failed["dice"].eq(0).all()  # scored as empty predictions
    assert len(calls) == len(srv.log)
    _promises(tmp_path / "s.sqlite", 6, served_ok=sum(1 for e in srv.log if e["kind"] == "ok"))


def test_non_retryable_errors_blocks_and_safety(tmp_path):
    answers = {0: ga.error(400, "INVALID_ARGUMENT", "bad image"), 1: ga.blocked("PROHIBITED_CONTENT"),
               2: ga.safety_candidate()}
    order: dict[str, int] = {}

    def behave(req):
        k = order.setdefault(req.image_sha, len(order))
        return answers.get(k) or ga.good_answer(req)

    with fg.FakeGemini(behave) as srv:
        cfg = gemini_config(tmp_path, srv.url, n=4, max_in_flight=1)
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False, batch_size=1)
            df = rows(st)
    assert sorted(df["status"]) == ["api_error", "blocked", "blocked", "ok"]
    assert len(srv.log) == 4  # a 400 is not retried
    reasons = " ".join(df["reason"])
    assert "400" in reasons and "PROHIBITED_CONTENT" in reasons and "SAFETY" in reasons
    _promises(tmp_path / "s.sqlite", 4, served_ok=3)  # the two blocks are answers too: kept and booked


def test_timeouts_and_dropped_connections_are_retried(tmp_path):
    def behave(req):
        if req.attempt == 1:
            return ga.Reply(drop=True, kind="drop")
        if req.attempt == 2:
            r = ga.good_answer(req)
            r.delay, r.kind = 1.5, "slow"
            return r
        return ga.good_answer(req)

    with fg.FakeGemini(behave) as srv:
        cfg = gemini_config(tmp_path, srv.url, n=2, timeout_s=0.5)
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            df = rows(st)
            calls = st.query("SELECT attempt, outcome FROM api_calls")
    assert (df["status"] == "ok").all()
    assert sorted(calls["attempt"].tolist()) == [1, 1, 2, 2, 3, 3]
    # a timed-out answer may have been sent (and paid) although the client gave up on it: at most one per image
    _promises(tmp_path / "s.sqlite", 2, served_ok=sum(1 for e in srv.log if e["kind"] in ("ok", "slow")),
              repeats_allowed=2)


def test_cached_rerun_makes_no_calls_and_refresh_does(tmp_path):
    with fg.FakeGemini() as srv:
        cfg = gemini_config(tmp_path, srv.url, n=5)
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            assert len(srv.log) == 5
            s = run(cfg, st, progress=False, force=True)
            assert len(srv.log) == 5 and s.statuses == {"ok": 5}
            hits = st.query("SELECT COUNT(*) n FROM api_calls WHERE outcome = 'cache_hit'")["n"][0]
            assert hits == 5
            run(cfg, st, progress=False, force=True, refresh=True)
            assert len(srv.log) == 10


def test_per_day_quota_stops_cleanly_and_resumes(tmp_path):
    state = {"exhausted": True, "served": 0}

    def behave(req):
        if state["exhausted"] and state["served"] >= 3:
            return ga.error(429, "RESOURCE_EXHAUSTED", "daily quota", per_day=True)
        state["served"] += 1
        return ga.good_answer(req)

    with fg.FakeGemini(behave) as srv:
        cfg = gemini_config(tmp_path, srv.url, n=8, max_in_flight=1)
        with Store(tmp_path / "s.sqlite") as st:
            with pytest.raises(OmnisegError, match="daily request quota"):
                run(cfg, st, progress=False, batch_size=4)
            assert len(rows(st)) == 3 and (rows(st)["status"] == "ok").all()
            assert st.query("SELECT status FROM runs")["status"].tolist() == ["stopped"]
            state["exhausted"] = False
            s = run(cfg, st, progress=False)
            assert s.skipped == 3 and len(rows(st)) == 8
    ok = [e for e in srv.log if e["kind"] == "ok"]
    assert len({e["image_sha"] for e in ok}) == len(ok) == 8  # no successful call repeated
    _promises(tmp_path / "s.sqlite", 8, served_ok=8)


def test_requests_are_sent_in_the_order_submitted_whatever_order_they_are_encoded_in(tmp_path, monkeypatch):
    """Requests are encoded on several threads; with the first sample's encoding held until three others are
    done (a code point, not a timer), the first sample is still sent first: a daily quota or a budget then
    stops a run after its first samples (the per-day test above), not after whichever were encoded first."""
    import threading

    from conftest import sent_png_sha
    from omniseg.models.api.scheduler import Scheduler

    encode = Scheduler._encode
    done, lock, calls, others = [0], threading.Lock(), [0], threading.Event()

    def held(self, pixels, prompt, gen):
        with lock:
            calls[0] += 1
            first = calls[0] == 1
        if first:
            assert others.wait(60), "the other samples were not encoded while the first one was held"
        out = encode(self, pixels, prompt, gen)
        with lock:
            done[0] += 1
            if done[0] >= 3:
                others.set()
        return out

    monkeypatch.setattr(Scheduler, "_encode", held)
    with fg.FakeGemini() as srv:
        cfg = gemini_config(tmp_path, srv.url, n=6, max_in_flight=1)
        names = sent_png_sha(cfg, "gem")
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
    sent = [names[e["image_sha"]] for e in srv.log]
    assert sent == sorted(names.values())


def test_max_cost_stops_before_the_budget_and_dry_run_estimates(tmp_path):
    with fg.FakeGemini() as srv:
        cfg = gemini_config(tmp_path, srv.url, n=10, max_in_flight=1, max_output_tokens=2000)
        with Store(tmp_path / "s.sqlite") as st:
            est = dry_run(cfg, st, store_root=st.root, progress=False)["gem"]
            assert est["pairs"] == 10 and est["calls"] == 10 and est["cached"] == 0 and est["cost_usd"] > 0
            assert len(srv.log) == 0 and len(st.query("SELECT * FROM predictions")) == 0
            with pytest.raises(OmnisegError, match="max-cost"):
                run(cfg, st, progress=False, max_cost=0.025, batch_size=10)
            spent = st.query("SELECT SUM(cost_usd) c FROM api_calls")["c"][0]
            assert 0 < spent <= 0.025 and 0 < len(srv.log) < 10
            est = dry_run(cfg, st, store_root=st.root, progress=False, force=True)["gem"]
            assert est["cached"] == len(srv.log) and est["calls"] == 10 - len(srv.log)
    served = len(srv.log)
    with fg.FakeGemini() as srv:  # the rest, with a budget that allows it
        cfg = gemini_config(tmp_path, srv.url, n=10, max_in_flight=1, max_output_tokens=2000)
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False, max_cost=1.0)
        assert len(srv.log) == 10 - served
    _promises(tmp_path / "s.sqlite", 10, served_ok=10)


def test_missing_key_names_the_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    with fg.FakeGemini() as srv:
        cfg = gemini_config(tmp_path, srv.url, n=2)
        with Store(tmp_path / "s.sqlite") as st, pytest.raises(OmnisegError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
            run(cfg, st, progress=False)


def test_the_key_reaches_no_file_and_no_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with fg.FakeGemini(ga.chaos(0.3, 0.2, 0.2, seed=3)) as srv:
        cfg = gemini_config(tmp_path, srv.url, n=12)
        with Store(tmp_path / "runs" / "s.sqlite") as st:
            run(cfg, st, progress=False)
            from omniseg.study import report

            report.write(st, tmp_path / "report", split="all")
    assert all(e["kind"] for e in srv.log)
    assert srv.log and all(k for k in srv.kinds())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith("answers.sqlite") for p in written)
    for p in written:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in caplog.text


def test_key_is_redacted_from_error_text(tmp_path):
    def behave(req):
        return ga.error(403, "PERMISSION_DENIED", f"API key {req.api_key} is not valid")

    with fg.FakeGemini(behave) as srv:
        cfg = gemini_config(tmp_path, srv.url, n=1)
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            df = rows(st)
            errs = st.query("SELECT error FROM api_calls")["error"].tolist()
    assert df["status"][0] == "api_error" and "[redacted]" in df["reason"][0] and KEY not in df["reason"][0]
    assert all(KEY not in e for e in errs)


def _gemini_yaml(tmp_path: Path, url: str, root: Path) -> Path:
    models = (f"  - name: gem\n    kind: gemini\n    options: {{base_url: '{url}', target: polyp, backoff_s: 0.01,"
              " max_in_flight: 4, max_side: 128}\n")
    return write_config(tmp_path / "g.yaml", "polyp", "kvasir-seg", root, models)


@pytest.mark.parametrize("kill_after", [1, 20, 45])
def test_sigkill_part_way_then_rerun_repeats_no_answer_it_kept(tmp_path, kill_after):
    """SIGKILL right after the n-th answer is kept (a code point, not a timer), then rerun to the end: every
    pair once, every kept answer booked once, and the only answers asked for again are those still on the wire
    at the kill (each holds a slot until it is kept: at most max_in_flight of them)."""
    import invariants
    from conftest import omniseg_with_fault

    root = make_kvasir(tmp_path / "k", n=60)
    with fg.FakeGemini(ga.chaos(0.1, 0.05, 0.0, delay=0.02)) as srv:
        store = tmp_path / "runs" / "s.sqlite"
        args = ["run", "--config", _gemini_yaml(tmp_path, srv.url, root), "--store", store, "-q", "--batch-size", "16"]
        killed = omniseg_with_fault(args, "omniseg.store.archive:AnswerArchive.put", kill_after)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        with sqlite3.connect(tmp_path / "runs" / "answers.sqlite") as db:
            kept_at_kill = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        # group commit: the n-th put returns once its group is on disk, and answers that landed with it share that
        # commit; each holds one of the 4 request slots until kept, so at most 4 more than n can be on disk
        assert kill_after <= kept_at_kill <= kill_after + 4
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
    first_ok, repeated = answers_asked_again(srv.log)
    served_ok = sum(1 for e in srv.log if e["kind"] == "ok")
    print(f"killed after {kill_after} answers kept; answers asked again: {len(repeated)} (in flight at most 4)")
    assert len(first_ok) == 60 and len(repeated) <= 4
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(60)}, key=KEY, served_ok=served_ok,
                     repeats_allowed=4, answers_expected=60)


@pytest.mark.skipif(not KVASIR_REAL.is_dir(), reason="real Kvasir-SEG not present at ../shared/data")
def test_all_kvasir_images_through_a_faulty_server(tmp_path):
    """1000 real images; 10% 429s, 5% 503s and 5% malformed answers: one row each, right statuses."""
    with fg.FakeGemini(ga.chaos(0.10, 0.05, 0.05, seed=7)) as srv:
        cfg = gemini_config(tmp_path, srv.url, root=KVASIR_REAL, max_side=96, max_in_flight=16, max_retries=8)
        with Store(tmp_path / "s.sqlite") as st:
            s = run(cfg, st, split="all", progress=False)
            df = rows(st)
    assert len(df) == 1000 and df["sample_id"].is_unique
    import invariants

    invariants.check(tmp_path / "s.sqlite", asked={(s, "gem") for s in df["sample_id"]}, key=KEY,
                     served_ok=sum(1 for e in srv.log if e["status"] == 200), report=False)
    final = {}
    for e in srv.log:  # the last answer the server gave each image decides its status
        final[e["image_sha"]] = e["kind"]
    expected = {"ok": "ok", "prose": "unparseable", "seg_tokens": "unsupported_format", "truncated": "ok"}
    want: dict[str, int] = {}
    for kind in final.values():
        want[expected.get(kind, "api_error")] = want.get(expected.get(kind, "api_error"), 0) + 1
    assert dict(s.statuses) == want
    malformed = sum(1 for k in final.values() if k in ("prose", "seg_tokens", "truncated"))
    assert 25 <= malformed <= 80 and len(final) == 1000
    attempts: dict[str, int] = {}
    for e in srv.log:
        attempts[e["image_sha"]] = attempts.get(e["image_sha"], 0) + 1
    assert max(attempts.values()) <= 9  # 1 + max_retries
    assert len(srv.log) < 1000 * 1.3  # about 15% of requests were retried, not more


def test_cli_dry_run_then_run_reports_calls_and_cost(tmp_path):
    from typer.testing import CliRunner

    from omniseg.cli import app

    root = make_kvasir(tmp_path / "k", n=4)
    with fg.FakeGemini() as srv:
        cfg = _gemini_yaml(tmp_path, srv.url, root)
        store = tmp_path / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--dry-run", "-q"])
        assert r.exit_code == 0, r.output
        assert "gem: 4 pairs to do; 4 API calls, 0 answers cached; estimated cost" in r.output
        assert len(srv.log) == 0
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
        assert "gem: 4 API answers, 0 errors retried or final, 0 from the archive; cost 0.00" in r.output
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q", "--force"])
        assert "gem: 0 API answers, 0 errors retried or final, 4 from the archive; cost 0.0000 USD" in r.output
        assert len(srv.log) == 4


def test_ctrl_c_books_every_answer_received_and_exits_quietly(tmp_path):
    """Hardening defect 5: answers paid for were archived but not booked, so the rerun booked them as
    free cache hits and the manifest under-reported cost; 13 'Task was destroyed' lines at exit.
    The Ctrl-C comes right after the 20th answer is kept (a code point: the run cannot finish first)."""
    import invariants

    root = make_kvasir(tmp_path / "k", n=60)
    with fg.FakeGemini(ga.chaos(0, 0, 0, delay=0.05)) as srv:
        cfg = _gemini_yaml(tmp_path, srv.url, root)
        store = tmp_path / "runs" / "s.sqlite"
        args = ["run", "--config", str(cfg), "--store", str(store), "-q", "--batch-size", "16"]
        from conftest import omniseg_with_fault

        proc = omniseg_with_fault(args, "omniseg.store.archive:AnswerArchive.put", 20, "sigint")
        assert proc.returncode == 130, proc.stderr
        assert "Task was destroyed" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == ["interrupted: finished pairs are saved; rerun the same command to resume"]
        served_before = len(srv.log)
        with sqlite3.connect(store) as db:
            rows_at_exit = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
            booked_at_exit = db.execute("SELECT COUNT(*) FROM api_calls WHERE outcome = 'answered'").fetchone()[0]
        assert 0 < rows_at_exit < 60 and booked_at_exit == rows_at_exit  # every answer received became a row
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
        from omniseg.study import report
        from omniseg.store.database import Store

        with Store(store) as st:
            report.write(st, tmp_path / "rep", split="all", figures=False)
    answers_served = len([e for e in srv.log if e["kind"] == "ok"])
    figures = invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(60)}, key=KEY,
                               served_ok=answers_served, answers_expected=60)
    print(f"interrupted after {served_before} answers ({rows_at_exit} rows, {booked_at_exit} booked at exit); "
          f"after the rerun {answers_served} answers served; {figures}")
    assert answers_served == 60  # none was asked for twice: a Ctrl-C waits for the answers in flight
    manifest = json.loads((tmp_path / "rep" / "manifest.json").read_text())
    one = ga.usage()  # every fake answer costs the same
    cost = (one["promptTokenCount"] * 1.50 + one["candidatesTokenCount"] * 9.00) / 1e6
    assert manifest["tasks"]["polyp"]["api"]["gem"]["cost_usd"] == pytest.approx(60 * cost, rel=1e-6)
    assert [r["ended"] for r in manifest["tasks"]["polyp"]["runs"]] == ["interrupted", "finished"]


def test_a_plain_rerun_skips_failed_pairs_and_retry_failed_asks_again(tmp_path):
    """Hardening defect 6: failed pairs were never asked again, while the docs said they were."""
    from typer.testing import CliRunner

    from omniseg.cli import app

    state = {"down": True}

    def behave(req):
        return ga.error(503, "UNAVAILABLE") if state["down"] and req.image_sha < "8" else ga.good_answer(req)

    root = make_kvasir(tmp_path / "k", n=12)
    with fg.FakeGemini(behave) as srv:
        cfg = _gemini_yaml(tmp_path, srv.url, root)
        cfg.write_text(cfg.read_text().replace("max_side: 128}", "max_side: 128, max_retries: 1}"))
        store = tmp_path / "s.sqlite"
        base = ["run", "--config", str(cfg), "--store", str(store), "-q"]
        assert CliRunner().invoke(app, base).exit_code == 0
        with sqlite3.connect(store) as db:
            failed = {r[0] for r in db.execute("SELECT sample_id FROM predictions WHERE status = 'api_error'")}
        assert 0 < len(failed) < 12
        state["down"] = False
        n = len(srv.log)
        r = CliRunner().invoke(app, base)
        assert "12 already done" in r.output and len(srv.log) == n  # a plain rerun asks nothing
        r = CliRunner().invoke(app, base + ["--retry-failed"])
        assert r.exit_code == 0, r.output
        assert f"{12 - len(failed)} already done; this run: ok {len(failed)}" in r.output
        assert len(srv.log) == n + len(failed)
        r = CliRunner().invoke(app, base + ["--retry-failed", "--retry-status", "okay"])
        assert r.exit_code == 2 and "expected failure statuses" in r.output
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*), SUM(status = 'ok') FROM predictions").fetchone() == (12, 12)


def test_dry_run_creates_and_writes_nothing(tmp_path):
    """Hardening defect 7: --dry-run said 'nothing called or written' but created the store and the cache."""
    from typer.testing import CliRunner

    from omniseg.cli import app

    root = make_kvasir(tmp_path / "k", n=3)
    with fg.FakeGemini() as srv:
        cfg = _gemini_yaml(tmp_path, srv.url, root)
        store = tmp_path / "runs" / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--dry-run", "-q"])
        assert r.exit_code == 0 and "3 API calls" in r.output
        assert not (tmp_path / "runs").exists() and len(srv.log) == 0
        CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
        before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--dry-run", "-q", "--force"])
        assert "0 API calls, 3 answers cached" in r.output
        after = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
        assert after == before


def test_archive_key_follows_every_part_that_changes_the_answer_and_nothing_else(tmp_path, monkeypatch):
    """Each part of the key changed in turn asks again; the API key or the decoding changed alone does not."""
    root = make_kvasir(tmp_path / "k", n=3)
    archive = tmp_path / "answers.sqlite"
    base = {"cache": str(archive), "model": "gemini-3.5-flash", "mode": "polygon", "max_side": 96}
    with fg.FakeGemini() as srv:
        def asked(**change) -> int:
            before = len(srv.log)
            cfg = gemini_config(tmp_path, srv.url, root=root, **{**base, **change})
            with Store(tmp_path / "s.sqlite") as st:
                run(cfg, st, progress=False, force=True)
            return len(srv.log) - before

        assert asked() == 3
        assert asked() == 0  # the same question is answered from the archive
        for change in ({"prompt": "v2", "prompts": {"v2": "Outline {target} as polygons, please."}},
                       {"model": "gemini-3.5-flash-lite"}, {"api_version": "v1"}, {"mode": "json-mask"},
                       {"max_side": 64}, {"max_output_tokens": 999}, {"seed": 7}, {"thinking_level": "low"},
                       {"media_resolution": "high"}, {"target": "the lesion"}):
            assert asked(**change) == 3, change
        assert asked(threshold=200, point_order="yx") == 0  # decoding is not part of the question
        monkeypatch.setenv("GEMINI_API_KEY", "another-test-key-not-real-987654321")
        assert asked() == 0  # nor is the API key


def test_the_in_flight_cap_and_the_rpm_limit_hold_at_the_server(tmp_path):
    """What the server saw: never more requests at once than max_in_flight, never faster than rpm."""
    def slow(req):
        r = ga.good_answer(req)
        r.delay = 0.3
        return r

    with fg.FakeGemini(slow) as srv:
        cfg = gemini_config(tmp_path / "a", srv.url, n=12, max_in_flight=3)
        with Store(tmp_path / "a" / "s.sqlite") as st:
            run(cfg, st, progress=False)
    assert srv.max_in_flight == 3  # reached, never passed
    with fg.FakeGemini() as srv:
        cfg = gemini_config(tmp_path / "b", srv.url, n=10, max_in_flight=8, rpm=300)
        with Store(tmp_path / "b" / "s.sqlite") as st:
            run(cfg, st, progress=False)
    starts = np.sort([e["start"] for e in srv.log])
    # 300 rpm is one request every 0.2 s: any six requests span at least 1 s as sent. What the server sees
    # is that plus the machine's scheduling jitter (one late start shortens the next gap), so the check
    # allows 0.2 s of it per window; with no limiter, 10 requests 8 in flight arrive within milliseconds.
    # The first arrival is left out of the windows: it alone waits for the client and its first connection
    # to be set up, and on a busy machine it reached the server 0.2 s late, right before the second.
    six = starts[6:] - starts[1:-5]
    observed = (len(starts) - 1) / (starts[-1] - starts[0]) * 60
    assert len(starts) == 10 and len(six) == 4 and six.min() >= 1.0 - 0.2 and 300 * 0.5 <= observed <= 300 * 1.15, (np.diff(starts), observed)


def test_a_kill_between_two_writes_of_one_chunk_books_each_answer_once(tmp_path):
    """Kill after the 11th pair of a 16-pair chunk: the 11 rows stay as they were, every other pair is
    done by the rerun, no recorded answer is asked again, and every kept answer is booked exactly once."""
    from conftest import run_killed_after_writes

    root = make_kvasir(tmp_path / "k", n=40)
    with fg.FakeGemini(ga.chaos(0.1, 0.05, 0.0, delay=0.02)) as srv:
        cfg = _gemini_yaml(tmp_path, srv.url, root)
        store = tmp_path / "s.sqlite"
        args = ["run", "--config", cfg, "--store", store, "-q", "--batch-size", "16"]
        killed = run_killed_after_writes(args, 11)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        with sqlite3.connect(store) as db:
            earlier = db.execute("SELECT sample_id, run_id, created_at FROM predictions ORDER BY 1").fetchall()
            keys_at_kill = {k for (k,) in db.execute("SELECT json_extract(meta, '$.cache_key') FROM predictions")}
        assert len(earlier) == 11
        with sqlite3.connect(tmp_path / "answers.sqlite") as db:
            archived_at_kill = {k for (k,) in db.execute("SELECT key FROM answers")}
        srv.settle()  # a request on the wire at the kill is logged when its answer leaves
        served_at_kill = len(srv.log)
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
    with sqlite3.connect(store) as db:
        kept_rows = db.execute("SELECT sample_id, run_id, created_at FROM predictions WHERE run_id = 1 ORDER BY 1").fetchall()
        total = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        booked = db.execute("SELECT cache_key, COUNT(*) FROM api_calls WHERE outcome IN ('answered', 'recovered')"
                            " GROUP BY 1").fetchall()
    with sqlite3.connect(tmp_path / "answers.sqlite") as db:
        archived = {k for (k,) in db.execute("SELECT key FROM answers")}
    assert total == 40 and kept_rows == earlier
    assert {k for k, _ in booked} == archived and all(c == 1 for _, c in booked)
    answered_after = [e for e in srv.log[served_at_kill:] if e["kind"] == "ok"]
    # an answer received before the kill is never asked for again (those on the wire at the kill may be)
    assert keys_at_kill <= archived_at_kill and len(archived) == 40
    assert len(answered_after) == 40 - len(archived_at_kill), (len(answered_after), len(archived_at_kill))
    import invariants

    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(40)}, key=KEY, answers_expected=40,
                     archive=tmp_path / "answers.sqlite")

"""`omniseg run --batch`: batch jobs against the fake server's batch endpoints (the real google-genai client).

The fake (omniseg.standins.fake_batch) creates jobs inline or from an uploaded JSONL file, works through
their requests on a thread with the same behaviour as generateContent, can fail single requests, expire
or be cancelled, and counts job creations; these tests hold the product to "each pair exactly once,
each job created once, each answer booked once at half price", across kills at every stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import invariants
from conftest import (KVASIR_REAL, api_rows, gemini_yaml, make_kvasir, omniseg_with_fault, run_killed_after_calls,
                      start_with_fault, wait_for_file)
import warm_start
from omniseg import config, models
from omniseg.cli import app
from omniseg.store.database import Store
from omniseg.standins.fake_gemini import FakeGemini
from omniseg.standins.gemini_answers import error, good_answer

runner = CliRunner()


def _run(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def _calls(store: Path) -> list[dict]:
    with Store(store) as st:
        return st.query("SELECT * FROM api_calls ORDER BY sample_id, rowid").to_dict("records")


def _online_requests(srv) -> int:
    return sum(1 for e in srv.log if e.get("via") != "batch" and "generateContent" in str(e.get("path", "")))


def _price(cfg_path: Path):
    return models.build(config.load(cfg_path).model("gem")).options.price


@pytest.mark.parametrize("batch_input", ["inline", "file"])
def test_a_batch_run_writes_each_pair_once_at_half_the_online_price(tmp_path, api_key, batch_input):
    root = make_kvasir(tmp_path / "K", n=12)
    store, online_store = tmp_path / "b" / "s.sqlite", tmp_path / "o" / "s.sqlite"
    with FakeGemini(request_s=0.01) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input=batch_input)
        out = _run("run", "--config", cfg, "--store", store, "--batch", "-q")
        assert "12 batch-job answers" in out
        assert srv.batch.jobs_created == 1 and _online_requests(srv) == 0
        job = next(iter(srv.batch.jobs.values()))
        assert job.source.startswith("files/") == (batch_input == "file")
        _run("run", "--config", cfg, "--store", online_store, "-q")  # the same requests online, fresh archive
        assert _online_requests(srv) == 12
    batch_calls, online_calls = _calls(store), _calls(online_store)
    assert [c["outcome"] for c in batch_calls] == ["batch"] * 12  # one booking per answer
    price = _price(cfg)
    for b, o in zip(batch_calls, online_calls):
        assert b["sample_id"] == o["sample_id"] and b["prompt_tokens"] == o["prompt_tokens"] > 0
        assert b["cost_usd"] == pytest.approx(o["cost_usd"] / 2, rel=1e-9)
        assert b["cost_usd"] == pytest.approx(
            (b["prompt_tokens"] * price.input_per_mtok + (b["output_tokens"] + b["thoughts_tokens"]) * price.output_per_mtok)
            / 1e6 / 2, rel=1e-9)
    with Store(store) as st, Store(online_store) as so:
        b, o = api_rows(st), api_rows(so)
        assert list(b["status"]) == ["ok"] * 12
        assert list(b["dice"]) == list(o["dice"])  # the same answers, decoded and scored the same way
        assert all(m["batch_job"].startswith("batches/") for m in b["meta"])
    # a rerun has nothing to do and creates no job
    with FakeGemini() as srv:
        out = _run("run", "--config", gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input=batch_input),
                   "--store", store, "--batch", "-q")
        assert srv.batch.jobs_created == 0 and "12 already done" in out


def test_inline_and_file_jobs_send_the_same_requests(tmp_path, api_key):
    root = make_kvasir(tmp_path / "K", n=6)
    seen = {}
    for mode in ("inline", "file"):
        got = []

        def record(req, got=got):
            got.append((req.image_sha, req.prompt, json.dumps(req.generation, sort_keys=True)))
            return good_answer(req)

        with FakeGemini(record) as srv:
            cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input=mode, thinking_level="minimal",
                              media_resolution="high")
            _run("run", "--config", cfg, "--store", tmp_path / mode / "s.sqlite", "--batch", "-q")
        seen[mode] = sorted(got)
    assert len(seen["inline"]) == 6 and seen["inline"][0][0] != seen["inline"][1][0]
    inline_gen = json.loads(seen["inline"][0][2])
    file_gen = json.loads(seen["file"][0][2])
    assert [s[:2] for s in seen["inline"]] == [s[:2] for s in seen["file"]]  # same images and prompts
    # the SDK sends thinkingConfig's keys in snake_case, the JSONL file in camelCase: the same settings
    flat = lambda g: json.dumps(g, sort_keys=True).replace("thinking_level", "thinkingLevel")  # noqa: E731
    assert flat(inline_gen) == flat(file_gen) and "MINIMAL" in flat(file_gen) and "MEDIA_RESOLUTION_HIGH" in flat(file_gen)


def _fails_for_some(req):
    if hashlib.sha256(req.image_sha.encode()).hexdigest()[0] in "0123":
        return error(500, "INTERNAL", "An internal error has occurred.")
    return good_answer(req)


def test_failed_requests_of_a_job_become_rows_and_retry_sends_only_them(tmp_path, api_key):
    root = make_kvasir(tmp_path / "K", n=16)
    store = tmp_path / "s.sqlite"
    with FakeGemini(_fails_for_some, request_s=0.005) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05)
        _run("run", "--config", cfg, "--store", store, "--batch", "-q")
        failed = sum(1 for e in srv.log if e["status"] != 200)
        assert 0 < failed < 16
        with Store(store) as st:
            rows = api_rows(st)
        bad = rows[rows["status"] != "ok"]
        assert len(bad) == failed and set(bad["status"]) == {"api_error"}
        assert all("INTERNAL" in r and "batch job batches/" in r for r in bad["reason"])
        srv.behaviour = good_answer
        out = _run("run", "--config", cfg, "--store", store, "--batch", "--retry-failed", "-q")
        assert srv.batch.jobs_created == 2
        second = [j for j in srv.batch.jobs.values()][1]
        assert second.total == failed  # only the failed requests were sent again
        assert f"ok {failed}" in out
    with Store(store) as st:
        rows = api_rows(st)
        assert list(rows["status"]) == ["ok"] * 16
        assert st.query("SELECT COUNT(*) n FROM api_calls WHERE outcome = 'batch'")["n"][0] == 16
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(16)}, key=api_key, answers_expected=16)


@pytest.mark.parametrize("target,n,batch_input", [
    ("omniseg.models.api.gemini.batch:GeminiJobs.create_inline", 1, "inline"),  # submitted, its name not yet kept
    ("omniseg.models.api.gemini.batch:GeminiJobs.create_from_file", 1, "file"),
    ("omniseg.models.api.gemini.batch:GeminiJobs.status", 3, "inline"),  # while polling
    ("omniseg.store.archive:AnswerArchive.put", 5, "file"),  # while the job's answers are kept
    ("omniseg.store.results:record", 5, "inline"),  # while rows are written
])
def test_a_killed_batch_run_finds_its_job_and_ends_with_every_pair_once(tmp_path, api_key, target, n, batch_input):
    root = make_kvasir(tmp_path / "K", n=12)
    store = tmp_path / "s.sqlite"
    with FakeGemini(request_s=0.03) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input=batch_input)
        args = ["run", "--config", cfg, "--store", store, "--batch", "-q"]
        killed = run_killed_after_calls(args, target, n)
        assert killed.returncode == -9, killed.stderr
        assert srv.batch.jobs_created == 1
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
        assert srv.batch.jobs_created == 1  # the rerun found the job instead of submitting the work again
        assert _online_requests(srv) == 0
    with Store(store) as st:
        rows = api_rows(st)
        assert len(rows) == 12 and list(rows["status"]) == ["ok"] * 12
        outcomes = st.query("SELECT sample_id, outcome FROM api_calls")
        assert (outcomes["outcome"] == "batch").sum() == 12  # every answer booked once
        assert outcomes.groupby("sample_id").size().max() == 1
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(12)}, key=api_key, answers_expected=12)


@pytest.mark.parametrize("target", ["omniseg.models.api.gemini.batch:GeminiJobs.upload",  # the input file is uploading
                                    "omniseg.models.api.gemini.model:GeminiApi.batch_request"])  # the input file is being written
def test_a_kill_while_the_input_file_is_written_or_uploaded_leaves_no_file_behind(tmp_path, api_key, target):
    """Defect 11: after a kill while the input file is written or uploaded, batch/gemini-<ns>.jsonl (every
    image, base64) stayed on disk for good. The next run (the one worker of the model now) removes it."""
    root = make_kvasir(tmp_path / "K", n=8)
    store = tmp_path / "runs" / "s.sqlite"
    with FakeGemini(request_s=0.01) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input="file")
        args = ["run", "--config", cfg, "--store", store, "--batch", "-q"]
        killed = omniseg_with_fault(args, target, 1 if target.endswith("upload") else 4, before=True)
        assert killed.returncode == -9, killed.stderr
        left = list((store.parent / "batch").glob("gem-*.jsonl"))
        assert len(left) == 1 and left[0].stat().st_size > 0  # what the kill left
        _run(*args)
        assert srv.batch.jobs_created == 1
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(8)}, key=api_key, answers_expected=8)


def test_results_out_of_order_and_a_partly_successful_job_are_paired_by_key(tmp_path, api_key):
    """The service gives results in its own order and may end a job PARTIALLY_SUCCEEDED: each answer goes to
    the pair it was asked for (its Dice is that of the same answer online), failed requests become api_error
    rows, and the job is not polled forever (two mutants that survived the old suite)."""
    root = make_kvasir(tmp_path / "K", n=12)
    for batch_input in ("inline", "file"):
        store, online = tmp_path / batch_input / "s.sqlite", tmp_path / f"{batch_input}-online" / "s.sqlite"
        with FakeGemini(_fails_for_some, request_s=0.01, shuffle=True, partial=True) as srv:
            cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input=batch_input, max_retries=0)
            _run("run", "--config", cfg, "--store", store, "--batch", "-q")
            _run("run", "--config", cfg, "--store", online, "-q")
            job = next(iter(srv.batch.jobs.values()))
            assert job.state == "PARTIALLY_SUCCEEDED" and job.failed > 0
        with Store(store) as st, Store(online) as so:
            b, o = api_rows(st), api_rows(so)
        assert list(b["sample_id"]) == list(o["sample_id"]) and list(b["status"]) == list(o["status"])
        assert (b["status"] == "api_error").sum() == job.failed
        ok = b["status"] == "ok"
        assert list(b.loc[ok, "dice"]) == list(o.loc[ok, "dice"]) and b.loc[ok, "dice"].min() > 0.5
        invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(12)}, key=api_key,
                         answers_expected=12 - job.failed)


def test_a_failed_upload_and_a_cancel_with_the_api_down_are_one_message(tmp_path, api_key):
    """Defect 11: a failed Files API upload ended in a raw httpx2.ConnectError traceback, and `batch cancel`
    with the API down gave a traceback. Both are one line, exit 2; a rerun then does the work once."""
    root = make_kvasir(tmp_path / "K", n=6)
    store = tmp_path / "runs" / "s.sqlite"
    with FakeGemini(request_s=0.01, fail_uploads=1) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input="file", max_retries=0)
        r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--batch", "-q"])
        assert r.exit_code == 2, r.output
        assert "cannot upload the batch job's input file" in r.output and "Traceback" not in r.output
        assert srv.batch.jobs_created == 0
        _run("run", "--config", cfg, "--store", store, "--batch", "-q")
        assert srv.batch.jobs_created == 1
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(6)}, key=api_key, answers_expected=6)
    # a job left open, then the API goes away: cancel says so in one line
    with FakeGemini(request_s=5) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05)
        killed = run_killed_after_calls(["run", "--config", cfg, "--store", tmp_path / "c" / "s.sqlite", "--batch", "-q",
                                         "--force"], "omniseg.models.api.gemini.batch:GeminiJobs.status", 1)
        assert killed.returncode == -9
    r = runner.invoke(app, ["batch", "cancel", "--config", str(cfg), "--store", str(tmp_path / "c" / "s.sqlite")])
    assert r.exit_code == 2 and "cannot cancel batch job batches/" in r.output and "Traceback" not in r.output, r.output


def test_two_batch_runs_or_a_batch_and_an_online_run_of_one_model_pay_once(tmp_path, api_key):
    """Defect 2: a second `run --batch` started while the first was still uploading marked its job abandoned
    and created another (20 answers paid for 10 pairs); an online run beside a batch run paid twice too.
    One process at a time works on a (task, model): the others are refused, naming it."""
    root = make_kvasir(tmp_path / "K", n=10)
    store = tmp_path / "runs" / "s.sqlite"
    flag = tmp_path / "upload"
    with FakeGemini(request_s=0.01) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input="file")
        first = start_with_fault(["run", "--config", cfg, "--store", store, "--batch", "-q"],
                                 "omniseg.models.api.gemini.batch:GeminiJobs.upload", 1, "pause", before=True, file=str(flag))
        try:
            wait_for_file(Path(str(flag) + ".reached"), first)
            for extra in (["--batch"], []):  # a second batch run; an online run of the same model
                r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q", *extra])
                assert r.exit_code == 2, r.output
                assert "is being worked on by another process" in r.output and f"pid {first.pid}" in r.output
                assert "run --config" in r.output  # the other process's command
        finally:
            Path(str(flag) + ".go").touch()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert srv.batch.jobs_created == 1 and _online_requests(srv) == 0
        assert sum(1 for e in srv.log if e.get("via") == "batch" and e["kind"] == "ok") == 10
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(10)}, key=api_key, answers_expected=10)


def test_an_expired_job_leaves_its_pairs_to_do_with_a_message(tmp_path, api_key):
    root = make_kvasir(tmp_path / "K", n=12)
    store = tmp_path / "s.sqlite"
    with FakeGemini(request_s=0.05, expire_s=0.2) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05)
        r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--batch", "-q"])
        assert r.exit_code == 0, r.output
        assert "ended EXPIRED" in r.output and "left to do" in r.output and "12 pair(s) have no batch answer" in r.output
        with Store(store) as st:
            assert len(api_rows(st)) == 0
        listed = _run("batch", "list", "--store", store)
        assert "EXPIRED" in listed and "12 unanswered" in listed
        srv.batch.expire_s = None
        out = _run("run", "--config", cfg, "--store", store, "--batch", "-q")
        assert srv.batch.jobs_created == 2 and "ok 12" in out
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(12)}, key=api_key, answers_expected=12)


def test_batch_cancel_stops_the_job_and_leaves_its_pairs_to_do(tmp_path, api_key):
    """`omniseg batch cancel` from another process while the run polls (paused at its first poll: a code point)."""
    root = make_kvasir(tmp_path / "K", n=12)
    store = tmp_path / "s.sqlite"
    flag = tmp_path / "poll"
    with FakeGemini(request_s=0.5) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05)
        proc = start_with_fault(["run", "--config", cfg, "--store", store, "--batch", "-q"],
                                "omniseg.models.api.gemini.batch:GeminiJobs.status", 1, "pause", file=str(flag))
        try:
            wait_for_file(Path(str(flag) + ".reached"), proc)
            out = _run("batch", "cancel", "--config", cfg, "--store", store)
            assert "cancelling batches/" in out
        finally:
            Path(str(flag) + ".go").touch()
        text, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "ended CANCELLED" in err and "left to do" in err
        assert "CANCELLED" in _run("batch", "list", "--store", store)
        with Store(store) as st:
            assert len(api_rows(st)) == 0
    invariants.check(store, asked=set(), key=api_key, answers_expected=0, report=False)


def test_dry_run_shows_the_online_and_the_batch_price(tmp_path, api_key):
    root = make_kvasir(tmp_path / "K", n=4)
    cfg = gemini_yaml(tmp_path, root, "http://127.0.0.1:9", batch_poll_s=0.05)
    out = _run("run", "--config", cfg, "--store", tmp_path / "s.sqlite", "--dry-run", "-q")
    online = float(out.split("estimated cost ")[1].split(" USD")[0])
    batch = float(out.split(" online, ")[1].split(" USD")[0])
    assert online > 0 and batch == pytest.approx(online / 2, abs=1e-4)


def test_batch_wait_collects_a_job_without_submitting(tmp_path, api_key):
    root = make_kvasir(tmp_path / "K", n=6)
    store = tmp_path / "s.sqlite"
    with FakeGemini(request_s=0.02) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05)
        killed = run_killed_after_calls(["run", "--config", cfg, "--store", store, "--batch", "-q"],
                                        "omniseg.models.api.gemini.batch:GeminiJobs.status", 1)
        assert killed.returncode == -9
        out = _run("batch", "wait", "--config", cfg, "--store", store, "-q")
        assert "ok 6" in out and srv.batch.jobs_created == 1
        assert "no store there" in runner.invoke(app, ["batch", "wait", "--config", str(cfg), "--store",
                                                       str(tmp_path / "none.sqlite")]).output
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(6)}, key=api_key, answers_expected=6)


@pytest.mark.skipif(not KVASIR_REAL.is_dir(), reason="the real Kvasir-SEG is not in ../shared/data")
def test_all_1000_kvasir_images_as_one_file_job(tmp_path, api_key):
    store = tmp_path / "s.sqlite"
    with FakeGemini() as srv:
        cfg = gemini_yaml(tmp_path, KVASIR_REAL, srv.url, batch_poll_s=0.2, max_side=160)
        out = _run("run", "--config", cfg, "--store", store, "--batch", "-q")
        assert srv.batch.jobs_created == 1 and _online_requests(srv) == 0
        job = next(iter(srv.batch.jobs.values()))
        assert job.total == 1000 and job.source.startswith("files/")  # over the inline limit: a file
    assert "1000 batch-job answers" in out
    calls = _calls(store)
    price = _price(cfg)
    assert len(calls) == 1000 and {c["outcome"] for c in calls} == {"batch"}
    assert len({c["sample_id"] for c in calls}) == 1000
    online = sum((c["prompt_tokens"] * price.input_per_mtok + (c["output_tokens"] + c["thoughts_tokens"])
                  * price.output_per_mtok) / 1e6 for c in calls)
    booked = sum(c["cost_usd"] for c in calls)
    print(f"\n1000 Kvasir-SEG images as one batch job: booked {booked:.4f} USD, online price of the same tokens "
          f"{online:.4f} USD")
    assert booked == pytest.approx(online / 2, rel=1e-9)
    with Store(store) as st:
        rows = api_rows(st)
        assert len(rows) == 1000 and rows["sample_id"].is_unique


@pytest.mark.parametrize("target, n", [("omniseg.models.api.gemini.batch:GeminiJobs.status", 1),  # the job is open
                                       ("omniseg.models.api.gemini.model:GeminiApi.batch_request", 3)])  # input half written
def test_an_online_run_after_a_killed_batch_run_collects_its_job_instead_of_paying_again(tmp_path, api_key, target, n):
    """Found by tests/cli/test_sequences.py: a batch run killed once its job was created, then an online run of the
    same model: the online run asked for every pair again (12 answers paid for 6 pairs) while the job's answers
    waited on the server. The online run now collects the open job first, and removes a half-written input file."""
    root = make_kvasir(tmp_path / "K", n=6)
    store = tmp_path / "runs" / "s.sqlite"
    with FakeGemini(request_s=0.01) as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, batch_input="file")
        killed = run_killed_after_calls(["run", "--config", cfg, "--store", store, "--batch", "-q"], target, n)
        assert killed.returncode == -9, killed.stderr
        srv.settle()
        out = _run("run", "--config", cfg, "--store", store)
        ok = [e for e in srv.log if e["kind"] == "ok"]
        assert len(ok) == 6 and srv.batch.jobs_created == (1 if target.endswith("status") else 0)
        if target.endswith("status"):
            assert "open batch job(s) of an earlier run collected first" in out
            assert {e.get("via") for e in ok} == {"batch"}
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(6)}, key=api_key, served_ok=6)

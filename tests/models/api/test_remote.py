"""The API layer every provider shares, against fakes that misbehave as real services do.

Each test runs both providers (Gemini through google-genai, an OpenAI-compatible endpoint through httpx2)
and ends with the invariant check (tests/invariants.py): one row per pair, every answer kept and booked
once, no key in any file, curate and report work.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

import invariants
from conftest import API_KEY, OPENAI_KEY, gemini_yaml, make_kvasir, openai_yaml, sent_png_sha
from omniseg import config
from omniseg.cli import app
from omniseg.inference.runner import RunStopped, run
from omniseg.store.database import Store
from omniseg.standins import fake_gemini as fg
from omniseg.standins import gemini_answers as ga
from omniseg.standins import fake_openai as fo
from omniseg.standins import hostile
from omniseg.standins.fake_http import Reply


@dataclass
class Provider:
    name: str
    model: str  # the model entry's name in the config
    key: str
    server: type
    hostile: Callable
    good: Callable
    yaml: Callable[..., Path]

    def error(self, code: int, body, headers: dict | None = None) -> Reply:
        return Reply(code, body, kind=f"http{code}", headers=headers or {})


PROVIDERS = {
    "gemini": Provider("gemini", "gem", API_KEY, fg.FakeGemini, hostile.gemini, ga.good_answer,
                       lambda tmp, root, url, **o: gemini_yaml(tmp, root, url, model="gemini-3.5-flash", **o)),
    "openai": Provider("openai", "vlm", OPENAI_KEY, fo.FakeOpenAI, hostile.openai, fo.good_answer,
                       lambda tmp, root, url, **o: openai_yaml(tmp, root, url, **o)),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request, monkeypatch) -> Provider:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return PROVIDERS[request.param]


def kinds_by_image(p: Provider, tmp_path: Path, root: Path, kinds: tuple[str, ...]):
    """Each sample gets kinds[i] (in id order); returns (pick for the fake, sample id -> kind)."""
    cfg = config.load(p.yaml(tmp_path, root, "http://127.0.0.1:9"))
    shas = sent_png_sha(cfg, p.model)
    ids = sorted(shas.values())
    kind_of = {sid: kinds[i % len(kinds)] for i, sid in enumerate(ids)}
    by_sha = {sha: kind_of[sid] for sha, sid in shas.items()}
    return (lambda req: by_sha[req.image_sha]), kind_of


def test_hostile_answers_become_rows_and_every_paid_answer_is_kept_and_booked_once(tmp_path, provider):
    """Defect 3: NaN points and boxes, 200,000-deep nesting, 9 MB of triangles, usage as a string, NaN or
    negative, a cut answer with no text, bodies that are not objects, a server echoing the key: each is a
    row with a status; nothing crashes; each answer is archived before it is decoded, booked once (the
    unreadable usages at an unknown cost, never a negative or NaN one), and a rerun pays for none again."""
    p = provider
    root = make_kvasir(tmp_path / "k", n=len(hostile.KINDS), size=(48, 64))
    pick, kind_of = kinds_by_image(p, tmp_path, root, hostile.KINDS)
    with p.server(p.hostile(pick=pick)) as srv:
        path = p.yaml(tmp_path, root, srv.url)
        store = tmp_path / "runs" / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
        served_first = len(srv.log)
        again = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q", "--force"])
        assert again.exit_code == 0, again.output
        served = len(srv.log)
    assert served_first == served == len(hostile.KINDS)  # --force redoes every pair from the archive: no call
    with Store(store) as st:
        got = st.query("SELECT sample_id, status, reason FROM predictions ORDER BY sample_id")
        calls = st.query("SELECT sample_id, outcome, cost_usd, cost_known, prompt_tokens, output_tokens FROM api_calls"
                         " WHERE outcome IN ('answered', 'recovered')")
    status = dict(zip(got["sample_id"], got["status"]))
    for sid, kind in kind_of.items():
        assert status[sid] == hostile.EXPECTED[kind], (kind, status[sid], got.set_index("sample_id").loc[sid, "reason"])
    unknown = {kind_of[s] for s in calls.loc[calls["cost_known"] == 0, "sample_id"]}
    assert unknown == set(hostile.UNKNOWN_COST)
    assert calls["cost_usd"].map(lambda c: math.isfinite(c) and c >= 0).all()
    assert (calls.loc[calls["cost_known"] == 0, "cost_usd"] == 0).all()
    huge = got.loc[got["sample_id"].map(kind_of) == "huge", "reason"].iloc[0]
    assert "vertices" in huge or "MB" in huge, huge
    figures = invariants.check(store, asked={(s, p.model) for s in kind_of}, key=p.key,
                               served_ok=served, answers_expected=len(hostile.KINDS))
    print(f"\n{p.name}: {len(hostile.KINDS)} hostile answers -> {dict(got['status'].value_counts())}; {figures}")


def test_negative_or_unreadable_usage_never_loosens_the_budget(tmp_path, provider):
    """Defect 3: a negative usage booked -150 USD and let --max-cost spend without end. A call whose cost is
    unknown counts at its worst case, so the budget stops the run where known costs would."""
    p = provider
    price = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
    root = make_kvasir(tmp_path / "k", n=20, size=(48, 64))
    with p.server(p.hostile(kinds=("negative_usage",))) as srv:
        path = p.yaml(tmp_path, root, srv.url, price=price, max_output_tokens=1000, max_in_flight=1)
        cfg = config.load(path)
        seg_worst = None
        with Store(tmp_path / "s.sqlite") as st:
            from omniseg import models

            seg = models.build(cfg.model(p.model))
            seg_worst = seg.provider.worst_cost((64, 48), seg.prompt())
            with pytest.raises(RunStopped, match="max-cost"):
                run(cfg, st, progress=False, max_cost=seg_worst * 3.5)
            booked = st.query("SELECT cost_usd, cost_known FROM api_calls WHERE outcome = 'answered'")
    assert 1 <= len(srv.log) <= 3 and len(booked) == len(srv.log)
    assert (booked["cost_known"] == 0).all() and (booked["cost_usd"] == 0).all()


@pytest.mark.parametrize("code, body, raw", [
    (503, [], None), (429, "slow down", None), (502, None, b"<html><h1>502 Bad Gateway</h1></html>"),
    (500, {"error": "internal"}, None), (503, None, b""), (429, {"error": {"message": 7}}, None)],
    ids=["503-list", "429-string", "502-html", "500-error-string", "503-empty", "429-odd-message"])
def test_retry_decisions_follow_the_status_code_whatever_the_body(tmp_path, provider, code, body, raw):
    """Defect 4: a 503 whose body is [] and a 429 whose body is "slow down" were not retried
    (AttributeError, and an empty HTTP status in api_calls)."""
    p = provider
    root = make_kvasir(tmp_path / "k", n=3, size=(48, 64))

    def behave(req):
        if req.attempt == 1:
            r = p.error(code, body)
            r.raw = raw
            return r
        return p.good(req)

    with p.server(behave) as srv:
        cfg = config.load(p.yaml(tmp_path, root, srv.url))
        store = tmp_path / "runs" / "s.sqlite"
        with Store(store) as st:
            s = run(cfg, st, progress=False)
            errors = st.query("SELECT http_status, error FROM api_calls WHERE outcome = 'error'")
    assert s.statuses == {"ok": 3} and len(srv.log) == 6
    assert (errors["http_status"] == code).all() and len(errors) == 3
    invariants.check(store, asked={(f"case{i:03d}", p.model) for i in range(3)}, key=p.key, served_ok=3)


def _retry_later(p: Provider, delay: str) -> Reply:
    if p.name == "openai":
        return fo.error(429, "Rate limit reached for requests", retry_after=None) if delay is None else \
            Reply(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}, kind="http429",
                  headers={"retry-after": delay})
    return ga.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay=f"{delay}s")


def test_a_retry_delay_past_the_cap_stops_the_run_cleanly_and_a_rerun_continues(tmp_path, provider):
    """Defect 4: `retry-after: 86400` was waited out with no cap (the run sat at 0/1)."""
    p = provider
    root = make_kvasir(tmp_path / "k", n=4, size=(48, 64))
    state = {"limited": True}
    with p.server(lambda req: _retry_later(p, "86400") if state["limited"] else p.good(req)) as srv:
        path = p.yaml(tmp_path, root, srv.url, max_retry_wait_s=60)
        store = tmp_path / "runs" / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
        assert r.exit_code == 2, r.output
        assert "asked to wait 86400 s before a retry, over max_retry_wait_s 60" in r.output, r.output
        assert "Traceback" not in r.output
        assert not store.exists()  # nothing recorded as failed, and a run that recorded nothing leaves no store
        state["limited"] = False
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
    invariants.check(store, asked={(f"case{i:03d}", p.model) for i in range(4)}, key=p.key, served_ok=4)


@pytest.mark.parametrize("header", ["1.5.0", "soon", "Wed, 21 Oct 2026 07:28:00 GMT", "-3", "inf", "1e9999"])
def test_a_retry_after_header_that_does_not_parse_is_ignored(tmp_path, monkeypatch, header):
    """Defect 4: `retry-after: 1.5.0` raised ValueError; a header that does not parse is ignored."""
    from omniseg.models.api.types import retry_after_seconds

    assert retry_after_seconds(header) is None
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(" 0.25 ") == 0.25
    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = make_kvasir(tmp_path / "k", n=2, size=(48, 64))

    def behave(req):
        if req.attempt == 1:
            return Reply(429, {"error": {"message": "slow"}}, kind="http429", headers={"retry-after": header})
        return fo.good_answer(req)

    with fo.FakeOpenAI(behave) as srv:
        cfg = config.load(openai_yaml(tmp_path, root, srv.url))
        with Store(tmp_path / "s.sqlite") as st:
            s = run(cfg, st, progress=False)
    assert s.statuses == {"ok": 2} and len(srv.log) == 4


def test_usage_counts_are_checked_one_by_one():
    from omniseg.models.api.types import checked_tokens

    assert checked_tokens({"prompt_tokens": 3, "output_tokens": 0}) == {"prompt_tokens": 3, "output_tokens": 0,
                                                                      "thoughts_tokens": 0}
    for bad in ("300", float("nan"), float("inf"), -1, 2.5, True, [1], {"n": 1}):
        assert checked_tokens({"prompt_tokens": 1, "output_tokens": bad}) is None, bad
    assert checked_tokens("not a dict") is None


def test_reasoning_tokens_are_booked_once(tmp_path, monkeypatch):
    """OpenAI-compatible servers count reasoning inside completion_tokens: output is the rest, the cost
    counts both once (a mutant that booked them twice survived the old suite)."""
    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = make_kvasir(tmp_path / "k", n=2, size=(48, 64))

    def behave(req):
        r = fo.good_answer(req)
        r.body["usage"] = {"prompt_tokens": 1000, "completion_tokens": 700, "total_tokens": 1700,
                           "completion_tokens_details": {"reasoning_tokens": 600}}
        return r

    with fo.FakeOpenAI(behave) as srv:
        cfg = config.load(openai_yaml(tmp_path, root, srv.url, price={"input_per_mtok": 1.0, "output_per_mtok": 10.0}))
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            calls = st.query("SELECT prompt_tokens, output_tokens, thoughts_tokens, cost_usd FROM api_calls")
    assert (calls["output_tokens"] == 100).all() and (calls["thoughts_tokens"] == 600).all()
    assert calls["cost_usd"].tolist() == pytest.approx([(1000 * 1 + 700 * 10) / 1e6] * 2)


def test_gemini_thoughts_are_booked_once(tmp_path, monkeypatch):
    """Gemini counts thoughts apart from the answer (thoughtsTokenCount): both are paid as output, once."""
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = make_kvasir(tmp_path / "k", n=2, size=(48, 64))

    def behave(req):
        r = ga.good_answer(req)
        r.body["usageMetadata"] = ga.usage(prompt=1000, output=100, thoughts=600)
        return r

    with fg.FakeGemini(behave) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url, model="gemini-3.5-flash",
                                      price={"input_per_mtok": 1.0, "output_per_mtok": 10.0}))
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            calls = st.query("SELECT prompt_tokens, output_tokens, thoughts_tokens, cost_usd FROM api_calls")
    assert (calls["output_tokens"] == 100).all() and (calls["thoughts_tokens"] == 600).all()
    assert calls["cost_usd"].tolist() == pytest.approx([(1000 * 1 + 700 * 10) / 1e6] * 2)


def test_an_answer_echoing_the_key_reaches_no_file(tmp_path, provider):
    """Defect 6: a server echoing the Authorization header in a 200 answer put the key into
    predictions.meta.answer_head and report.html."""
    p = provider
    root = make_kvasir(tmp_path / "k", n=3, size=(48, 64))
    with p.server(p.hostile(kinds=("echo_key",))) as srv:
        path = p.yaml(tmp_path, root, srv.url)
        store = tmp_path / "runs" / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
        assert r.exit_code == 0 and p.key not in r.output, r.output
    with sqlite3.connect(store) as db:
        heads = [json.loads(m)["answer_head"] for (m,) in db.execute("SELECT meta FROM predictions")]
    assert all("[redacted]" in h for h in heads), heads
    out = tmp_path / "runs" / "rep"
    r = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(out), "--split", "all"])
    assert r.exit_code == 0, r.output
    assert "[redacted]" in (out / "report.html").read_text()
    invariants.check(store, asked={(f"case{i:03d}", p.model) for i in range(3)}, key=p.key, served_ok=3)


@pytest.mark.parametrize("refresh", [False, True])
def test_a_duplicate_image_is_asked_for_and_booked_once_online(tmp_path, provider, refresh):
    """Found by tests/cli/test_sequences.py: two samples with the same pixels in one run were both sent, both paid
    and the one kept answer booked twice. The second now waits for the first's answer and takes it from the
    archive (with --refresh too: asked again once, not twice)."""
    p = provider
    root = make_kvasir(tmp_path / "k", n=4)
    for sub in ("images", "masks"):
        for copy in ("case000 copy", "case000 twin"):
            (root / sub / f"{copy}.jpg").write_bytes((root / sub / "case000.jpg").read_bytes())
    with p.server() as srv:
        cfg = p.yaml(tmp_path, root, srv.url)
        store = tmp_path / "s.sqlite"
        args = ["run", "--config", str(cfg), "--store", str(store), "-q"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        if refresh:
            r = CliRunner().invoke(app, args + ["--force", "--refresh"])
            assert r.exit_code == 0, r.output
        served = [e["image_sha"] for e in srv.log if e["kind"] == "ok"]
    assert len(served) == len(set(served)) * (2 if refresh else 1) == 4 * (2 if refresh else 1)
    with Store(store) as st:
        rows = st.query("SELECT sample_id, status FROM predictions")
        per_key = st.query("SELECT cache_key, COUNT(*) AS n FROM api_calls WHERE outcome IN ('answered', 'recovered') "
                           "GROUP BY cache_key")
        copies = st.query("SELECT sample_id, outcome, cache_key FROM api_calls WHERE sample_id LIKE 'case000%'")
    # the copies' rows name the one answer they share (the one that waited for it takes it from the archive)
    assert set(copies.sample_id) == {"case000", "case000 copy", "case000 twin"}
    assert copies.cache_key.notna().all() and copies.cache_key.nunique() == 1, copies
    assert set(rows.status) == {"ok"} and len(rows) == 6
    assert len(per_key) == 4 and set(per_key.n) == {2 if refresh else 1}  # each answer received booked once
    if not refresh:
        invariants.check(store, asked={(sid, p.model) for sid in rows.sample_id}, key=p.key, served_ok=len(served))


@pytest.mark.parametrize("model, mode, max_out, typical", [
    ("gemini-3.1-flash-image", "image-mask", 8192, 1290),  # an image answer: its fixed token count
    ("gemini-3.5-flash", "polygon", 8192, 1000),  # text: a typical answer, capped by the settings
    ("gemini-3.5-flash", "polygon", 300, 300),
])
def test_a_dry_run_prices_each_call_at_a_typical_answer_of_its_mode(tmp_path, model, mode, max_out, typical, monkeypatch):
    """--dry-run's estimate: input tokens at the input price plus a typical answer at the output price (with an
    input price of 0 and an output price of 1 USD per token, the estimate is the typical answer's token count)."""
    from omniseg import models
    from omniseg.config import ModelConfig
    from omniseg.datasets.base import Sample
    from omniseg.inference.runner import run_context

    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    m = models.build(ModelConfig(name="gem", kind="gemini", options={
        "model": model, "mode": mode, "max_output_tokens": max_out, "base_url": "http://127.0.0.1:9",
        "price": {"input_per_mtok": 0, "output_per_mtok": 1e6}}))
    m.bind(run_context(tmp_path, look_only=True))
    import numpy as np

    samples = [Sample(f"s{i}", np.full((30, 40, 3), 10 * i, np.uint8), np.zeros((30, 40), bool)) for i in range(3)]
    est = m.estimate(samples)
    assert est == {"calls": 3, "cached": 0, "cost_usd": pytest.approx(3 * typical)}


@pytest.mark.parametrize("kind", ["gemini", "openai"])
def test_an_estimate_prices_each_image_as_sent_width_by_height(tmp_path, kind):
    """A 400 x 900 image is two 768-pixel tiles wide and one high: priced at its own width and height (read the
    wrong axis, it was one tile or four)."""
    import numpy as np

    from omniseg import models
    from omniseg.config import ModelConfig
    from omniseg.datasets.base import Sample
    from omniseg.inference.runner import run_context

    options = {"target": "polyp", "max_side": 2000, **({"model": "m"} if kind == "openai" else {}),
               "price": {"input_per_mtok": 1.0, "output_per_mtok": 0.0}}
    seg = models.build(ModelConfig(name="m", kind=kind, options=options))
    seg.bind(run_context(tmp_path, look_only=True))  # no archive there: every pair is a call
    wide = Sample("wide", np.zeros((400, 900, 3), np.uint8), np.zeros((400, 900), bool))
    small = Sample("small", np.zeros((30, 40, 3), np.uint8), np.zeros((30, 40), bool))
    p = seg.provider
    assert seg.estimate([wide, small]) == {"calls": 2, "cached": 0, "cost_usd": pytest.approx(
        p.typical_cost((900, 400), seg.prompt()) + p.typical_cost((40, 30), seg.prompt()))}
    assert p.typical_cost((900, 400), seg.prompt()) not in (p.typical_cost((3, 400), seg.prompt()),
                                                              p.typical_cost((900, 900), seg.prompt()))
    seg.close()


def test_a_batch_runs_pair_is_its_jobs_failure_with_the_call_booked_or_left_to_do():
    """In a --batch run a pair without an archived answer is what its job said (its status and reason, one failed
    call naming the request's key, the error cut to 300 characters) or, when its job has not answered, skipped."""
    from omniseg.models.api.remote import _batch_verdict
    from omniseg.models.base import RunContext

    reason = "INVALID_ARGUMENT: " + "r" * 400
    ctx = RunContext(answers_only=True, batch_failures={"k1": ("api_error", reason)})
    failed = _batch_verdict(ctx, "k1")
    assert (failed.status, failed.reason, failed.mask) == ("api_error", reason, None)
    assert failed.meta["cache_key"] == "k1"
    assert failed.calls == [{"attempt": 1, "outcome": "error", "cache_key": "k1", "error": reason[:300]}]
    later = _batch_verdict(ctx, "k2")
    assert later.status == "skipped" and later.calls == [] and "cache_key" not in later.meta

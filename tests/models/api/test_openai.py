"""The `openai` kind against a fake OpenAI-compatible server: the battery the Gemini backend passes."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omniseg import config, models
from omniseg.errors import OmnisegError
from omniseg.inference.runner import open_dataset, run
from omniseg.store.database import Store
from omniseg.standins import fake_openai as fo

from conftest import KVASIR_REAL, api_rows, make_kvasir, write_config
import warm_start

KEY = "omniseg-openai-test-key-not-real-4242"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("VLM_KEY", KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def vlm_yaml(tmp_path: Path, root: Path, url: str, split: str = "all", **options) -> Path:
    opts = {"base_url": url + "/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "key_env": "VLM_KEY", "target": "polyp",
            "backoff_s": 0.01, "max_in_flight": 8, "max_side": 256, **options}
    path = write_config(tmp_path / "vlm.yaml", "polyp", "kvasir-seg", root,
                        f"  - name: vlm\n    kind: openai\n    options: {json.dumps(opts)}\n")
    path.write_text(path.read_text().replace("split: all", f"split: {split}"))
    return path


def test_polygons_and_boxes_are_read_and_usage_is_booked(tmp_path):
    root = make_kvasir(tmp_path / "k", n=6)
    with fo.FakeOpenAI(key=KEY) as srv:
        for mode, form in (("polygon", "polygon/points"), ("box", "box")):
            cfg = config.load(vlm_yaml(tmp_path, root, srv.url, mode=mode, price={"input_per_mtok": 1, "output_per_mtok": 2}))
            with Store(tmp_path / f"{mode}.sqlite") as st:
                s = run(cfg, st, progress=False)
                df = api_rows(st, "vlm")
                calls = st.query("SELECT * FROM api_calls")
            assert s.statuses == {"ok": 6} and df["meta"].map(lambda m: m["answer_form"] == form).all()
            assert df["meta"].map(lambda m: m["coords"] == "norm1000").all()
            assert calls["model_version"].eq("Qwen/Qwen2.5-VL-7B-Instruct").all()
            assert calls["cost_usd"].iloc[0] == pytest.approx((300 * 1 + 120 * 2) / 1e6)
    assert all(e["model"] == "Qwen/Qwen2.5-VL-7B-Instruct" for e in srv.log)


def data_200(tmp_path: Path) -> tuple[Path, str]:
    if KVASIR_REAL.is_dir():
        return KVASIR_REAL, "test"
    return make_kvasir(tmp_path / "k", n=200, size=(96, 128), seed=5), "all"


@pytest.mark.parametrize("coords", ["norm1000", "norm1", "pixels"])
def test_polygons_in_each_coordinate_convention_score_as_their_truth(tmp_path, coords):
    root, split = data_200(tmp_path)
    cfg = config.load(vlm_yaml(tmp_path, root, "http://unused", split, coords=coords))
    seg, ds = models.build(cfg.model("vlm")), open_dataset(cfg)
    truths = {}
    for ref in ds.refs(cfg.split):
        s = ds.load(ref)
        px = seg.request(s, seg.prompt())[0]
        truths[hashlib.sha256(px.tobytes()).hexdigest()] = np.asarray(
            Image.fromarray(s.mask).resize((px.shape[1], px.shape[0]), Image.NEAREST))
    truth = lambda img: truths[hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()]  # noqa: E731
    with fo.FakeOpenAI(lambda req: fo.good_answer(req, truth, coords)) as srv:
        cfg = config.load(vlm_yaml(tmp_path, root, srv.url, split, coords=coords))
        with Store(tmp_path / "s.sqlite") as st:
            s = run(cfg, st, progress=False)
            df = api_rows(st, "vlm")
    print(f"\n{coords}: {len(df)} images, mean Dice {df['dice'].mean():.4f}")
    assert s.statuses == {"ok": 200} and df["dice"].mean() >= 0.85
    assert df["meta"].map(lambda m: m["coords"] == coords).all()


@pytest.mark.skipif(not KVASIR_REAL.is_dir(), reason="real Kvasir-SEG not present at ../shared/data")
def test_all_kvasir_images_through_a_faulty_server(tmp_path):
    """1000 real images; 10% 429 (with retry-after), 5% 5xx and 5% malformed: one row each, right statuses."""
    with fo.FakeOpenAI(fo.chaos(0.10, 0.05, 0.05, seed=7), key=KEY) as srv:
        cfg = config.load(vlm_yaml(tmp_path, KVASIR_REAL, srv.url, max_side=96, max_in_flight=16, max_retries=8))
        with Store(tmp_path / "s.sqlite") as st:
            s = run(cfg, st, split="all", progress=False)
            df = api_rows(st, "vlm")
    assert len(df) == 1000 and df["sample_id"].is_unique
    final = {}
    for e in srv.log:
        final[e["image_sha"]] = e["kind"]
    expected = {"ok": "ok", "prose": "unparseable", "truncated": "ok", "refused": "blocked"}
    want: dict[str, int] = {}
    for kind in final.values():
        status = expected.get(kind, "api_error")
        want[status] = want.get(status, 0) + 1
    assert dict(s.statuses) == want and 25 <= sum(k in ("prose", "truncated", "refused") for k in final.values()) <= 80
    attempts: dict[str, int] = {}
    for e in srv.log:
        attempts[e["image_sha"]] = attempts.get(e["image_sha"], 0) + 1
    assert max(attempts.values()) <= 9 and len(srv.log) < 1000 * 1.3
    print(f"\nstatuses {dict(s.statuses)}; {len(srv.log)} requests; fake answers {srv.kinds()}")
    import invariants

    invariants.check(tmp_path / "s.sqlite", asked=set(zip(df["sample_id"], ["vlm"] * len(df))), key=KEY,
                     served_ok=sum(1 for e in srv.log if e["status"] == 200), report=False)


def test_retry_after_is_honoured_and_non_retryable_errors_are_final(tmp_path):
    def behave(req):
        if req.attempt == 1:
            return fo.error(429, "slow down", retry_after=0.4)
        return fo.error(400, "bad request") if req.image_sha < "4" else fo.good_answer(req)

    root = make_kvasir(tmp_path / "k", n=6)
    with fo.FakeOpenAI(behave, key=KEY) as srv:
        cfg = config.load(vlm_yaml(tmp_path, root, srv.url, max_retries=3))
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            df = api_rows(st, "vlm")
    by_image: dict[str, list] = {}
    for e in srv.log:
        by_image.setdefault(e["image_sha"], []).append(e)
    assert all(len(log) == 2 and log[1]["start"] - log[0]["end"] >= 0.39 for log in by_image.values())
    failed = df[df["status"] != "ok"]
    assert set(failed["status"]) <= {"api_error"} and failed["reason"].str.contains("HTTP 400").all()
    assert len(failed) == sum(sha < "4" for sha in by_image)
    import invariants

    invariants.check(tmp_path / "s.sqlite", asked={(f"case{i:03d}", "vlm") for i in range(6)}, key=KEY,
                     served_ok=sum(1 for e in srv.log if e["status"] == 200))


def test_a_local_server_needs_no_key_and_a_missing_key_is_named(tmp_path, monkeypatch):
    root = make_kvasir(tmp_path / "k", n=3)
    with fo.FakeOpenAI() as srv:
        cfg = config.load(vlm_yaml(tmp_path, root, srv.url, key_env=None))
        with Store(tmp_path / "a.sqlite") as st:
            assert run(cfg, st, progress=False).statuses == {"ok": 3}
    monkeypatch.delenv("VLM_KEY")
    with fo.FakeOpenAI(key=KEY) as srv:
        cfg = config.load(vlm_yaml(tmp_path, root, srv.url))
        # another folder: the answers archived beside the first store would need no key at all
        with Store(tmp_path / "other" / "b.sqlite") as st, pytest.raises(OmnisegError, match="needs an API key: set VLM_KEY"):
            run(cfg, st, progress=False)


def test_the_key_reaches_no_file_and_no_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    def behave(req):
        if req.attempt == 1 and req.image_sha < "6":
            return fo.error(401, f"Incorrect API key provided: {req.api_key}")
        return fo.chaos(0.3, 0.2, 0.2, seed=3)(req)

    root = make_kvasir(tmp_path / "k", n=12)
    with fo.FakeOpenAI(behave, key=KEY) as srv:
        cfg = config.load(vlm_yaml(tmp_path, root, srv.url))
        with Store(tmp_path / "runs" / "s.sqlite") as st:
            run(cfg, st, progress=False)
            from omniseg.study import report

            report.write(st, tmp_path / "report", split="all")
            reasons = " ".join(api_rows(st, "vlm")["reason"])
    assert srv.log and "[redacted]" in reasons
    for p in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in caplog.text


@pytest.mark.parametrize("kill_after", [3, 30])
def test_sigkill_part_way_then_rerun_repeats_no_answer_it_had(tmp_path, kill_after):
    """SIGKILL right after the n-th answer is kept, then rerun: an answer is asked again only if it was on the
    wire at the kill, and each holds one of the 4 slots until it is kept (the old timed kill saw 5)."""
    import signal

    import invariants
    from conftest import answers_asked_again, omniseg_with_fault

    root = make_kvasir(tmp_path / "k", n=60)
    with fo.FakeOpenAI(fo.chaos(0.1, 0.05, 0.0, delay=0.02), key=KEY) as srv:
        store = tmp_path / "runs" / "s.sqlite"
        cfg = vlm_yaml(tmp_path, root, srv.url, max_in_flight=4, max_side=128)
        args = ["run", "--config", cfg, "--store", store, "-q", "--batch-size", "16"]
        killed = omniseg_with_fault(args, "omniseg.store.archive:AnswerArchive.put", kill_after)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
    first_ok, repeated = answers_asked_again(srv.log)
    served_ok = sum(1 for e in srv.log if e["kind"] == "ok")
    print(f"killed after {kill_after} kept answers; answers asked again: {len(repeated)}")
    assert len(first_ok) == 60 and len(repeated) <= 4
    invariants.check(store, asked={(f"case{i:03d}", "vlm") for i in range(60)}, key=KEY, served_ok=served_ok,
                     repeats_allowed=4, answers_expected=60)

"""omniseg.inference.runner + store: one row per pair, failures kept as rows, resume, force, signatures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omniseg import config
from omniseg.errors import OmnisegError
from omniseg.inference.runner import run
from omniseg.store.database import Store

from conftest import OTSU, make_drive, make_kvasir, write_config


def rows(store: Store, task: str):
    return store.query("SELECT p.*, c.dice FROM predictions p LEFT JOIN scores c USING (task, sample_id, model)"
                       " WHERE p.task = ? ORDER BY sample_id, model", (task,))


def test_one_row_per_pair_and_resume(polyp_config, store_path):
    cfg = config.load(polyp_config)
    with Store(store_path) as st:
        s1 = run(cfg, st, progress=False, limit=4)
        assert s1.statuses["ok"] == 4 and s1.skipped == 0
        s2 = run(cfg, st, progress=False)
        assert s2.skipped == 4 and s2.statuses["ok"] == 2
        df = rows(st, "polyp")
        assert len(df) == 6 and df["sample_id"].is_unique
        assert (df["status"] == "ok").all() and df["dice"].between(0, 1).all()
        for p in df["mask_path"]:
            m = np.asarray(Image.open(st.root / p).convert("L"))
            assert set(np.unique(m)) <= {0, 255}
        s3 = run(cfg, st, progress=False, force=True)
        assert s3.statuses["ok"] == 6 and len(rows(st, "polyp")) == 6
        runs = st.query("SELECT status, summary FROM runs ORDER BY run_id")
        assert list(runs["status"]) == ["finished"] * 3


def test_broken_samples_become_rows_and_the_run_goes_on(tmp_path, store_path):
    root = make_kvasir(tmp_path / "k", n=5)
    (root / "images" / "case001.jpg").write_bytes(b"\xff\xd8broken")
    Image.new("RGB", (9, 9)).save(root / "masks" / "case002.jpg")
    cfg = config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root,
                                   OTSU + "  - name: dark\n    kind: otsu\n    options: {foreground: dark}\n"))
    with Store(store_path) as st:
        s = run(cfg, st, progress=False)
        df = rows(st, "polyp")
    assert len(df) == 10 and s.statuses == {"ok": 6, "sample_error": 4}
    bad = df[df["status"] == "sample_error"]
    assert set(bad["sample_id"]) == {"case001", "case002"}
    assert bad["dice"].isna().all() and bad["mask_path"].isna().all()
    assert bad["reason"].str.contains("unreadable image|is 9x9").all()


def test_a_failing_model_is_scored_as_empty(polyp_config, store_path, monkeypatch):
    from omniseg.models.baselines import OtsuBaseline

    def boom(self, sample):
        if sample.id == "case003":
            raise RuntimeError("simulated model failure")
        return original(self, sample)

    original = OtsuBaseline.predict
    monkeypatch.setattr(OtsuBaseline, "predict", boom)
    with Store(store_path) as st:
        run(config.load(polyp_config), st, progress=False)
        df = rows(st, "polyp").set_index("sample_id")
    assert df.loc["case003", "status"] == "error"
    assert "simulated model failure" in df.loc["case003", "reason"]
    assert df.loc["case003", "dice"] == 0.0  # the reference is not empty: an empty prediction scores 0
    assert (df.drop("case003")["status"] == "ok").all()


def test_changed_model_settings_are_refused_without_force(tmp_path, polyp_config, store_path):
    with Store(store_path) as st:
        run(config.load(polyp_config), st, progress=False)
        changed = polyp_config.read_text().replace("sigma: 1.0", "sigma: 3.0")
        p2 = tmp_path / "changed.yaml"
        p2.write_text(changed)
        cfg2 = config.load(p2)
        with pytest.raises(OmnisegError, match="other settings.*--force"):
            run(cfg2, st, progress=False)
        s = run(cfg2, st, progress=False, force=True)
        assert s.statuses["ok"] == 6 and len(rows(st, "polyp")) == 6


def test_drive_counts_inside_fov_and_human_row(tmp_path, store_path):
    root = make_drive(tmp_path / "DRIVE")
    models = "  - name: frangi\n    kind: frangi\n    options: {fov_erosion: 1}\n  - name: human\n    kind: human\n"
    cfg = config.load(write_config(tmp_path / "v.yaml", "vessel", "drive", root, models, "metrics:\n  cldice: true\n"))
    with Store(store_path) as st:
        run(cfg, st, progress=False)
        df = st.query("SELECT p.sample_id, p.model, p.status, c.tp, c.fp, c.fn, c.tn, c.dice, c.cldice FROM predictions p LEFT JOIN scores c"
                      " USING (task, sample_id, model)")
    human = df[df["model"] == "human"].set_index("sample_id")
    assert human.loc["21_training", "status"] == "unavailable" and np.isnan(human.loc["21_training", "dice"])
    assert human.loc["01_test", "status"] == "ok" and 0 < human.loc["01_test", "dice"] < 1
    assert df["cldice"].notna().sum() == 6  # 4 frangi + 2 human on test
    fov_px = (df["tp"] + df["fp"] + df["fn"] + df["tn"]).dropna().unique()
    assert len(fov_px) == 1 and fov_px[0] < 58 * 56  # counted inside the field of view only


def test_empty_split_is_a_clear_error(polyp_config, store_path, tmp_path):
    cfg = config.load(polyp_config)
    with Store(store_path) as st, pytest.raises(OmnisegError, match="no samples in split"):
        run(cfg, st, progress=False, split="test", data_root=make_kvasir(tmp_path / "one", n=0))


def test_models_marked_default_false_run_only_when_named(tmp_path, store_path):
    root = make_kvasir(tmp_path / "k", n=3)
    extra = "  - name: dark\n    kind: otsu\n    default: false\n    options: {foreground: dark}\n"
    cfg = config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU + extra))
    with Store(store_path) as st:
        run(cfg, st, progress=False)
        assert set(rows(st, "polyp")["model"]) == {"otsu"}
        run(cfg, st, progress=False, model_names=["dark"])
        assert sorted(set(rows(st, "polyp")["model"])) == ["dark", "otsu"]


def test_a_model_added_to_an_existing_store_gets_every_pair(tmp_path, store_path):
    """Exactly once means per (sample, model): a pair done by another model is not done for this one."""
    root = make_kvasir(tmp_path / "k", n=5)
    first = config.load(write_config(tmp_path / "a.yaml", "polyp", "kvasir-seg", root, OTSU))
    extra = "  - name: dark\n    kind: otsu\n    options: {foreground: dark}\n"
    both = config.load(write_config(tmp_path / "b.yaml", "polyp", "kvasir-seg", root, OTSU + extra))
    with Store(store_path) as st:
        run(first, st, progress=False)
        before = st.query("SELECT sample_id, run_id, created_at FROM predictions WHERE model = 'otsu' ORDER BY 1")
        s = run(both, st, progress=False)
        df = rows(st, "polyp")
        after = st.query("SELECT sample_id, run_id, created_at FROM predictions WHERE model = 'otsu' ORDER BY 1")
    assert s.skipped == 5 and s.statuses == {"ok": 5}
    assert (df.groupby("model").size() == 5).all() and set(df["model"]) == {"otsu", "dark"}
    assert before.equals(after)  # the first model's rows are untouched


# -- second passes over the same data: each checks rows, bookings and the archive afterwards ----------------
def _books(store):
    import sqlite3

    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT sample_id, status, json_extract(meta, '$.decoder_version') FROM predictions"
                          " ORDER BY 1").fetchall()
        calls = db.execute("SELECT outcome, COUNT(*), ROUND(SUM(cost_usd), 9) FROM api_calls GROUP BY 1").fetchall()
    return rows, {o: (n, c) for o, n, c in calls}


def _kept(store):
    import invariants

    return invariants.archived(store.parent / "answers.sqlite")


def test_redecode_twice_rewrites_every_row_each_time_and_books_nothing(tmp_path, api_key, monkeypatch):
    """A second redecode (after another decoder change) rewrites every row again: none skipped, no call."""
    from typer.testing import CliRunner

    from conftest import gemini_yaml
    from omniseg.cli import app
    from omniseg.models.api import forms
    from omniseg.standins import fake_gemini as fg

    root = make_kvasir(tmp_path / "k", n=8)
    store = tmp_path / "runs" / "s.sqlite"
    with fg.FakeGemini() as srv:
        path = gemini_yaml(tmp_path, root, srv.url)
        cli = CliRunner()
        assert cli.invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"]).exit_code == 0
        served = len(srv.log)
        rows0, books0 = _books(store)
        kept0 = _kept(store)
        for version in ("98", "99"):
            monkeypatch.setattr(forms, "DECODER_VERSION", version)
            r = cli.invoke(app, ["redecode", "--store", str(store), "-q"])
            assert r.exit_code == 0 and "8 of 8 rows decoded again" in r.output, r.output
            rows, books = _books(store)
            assert [v for *_, v in rows] == [version] * 8 and [s for _, s, _ in rows] == [s for _, s, _ in rows0]
            assert books == books0 and _kept(store) == kept0
        assert len(srv.log) == served


def test_refresh_asks_again_keeps_the_new_answer_and_books_each_once(tmp_path, api_key):
    """--refresh pays for a new answer and the archive keeps it (the old one is replaced); the next --force is
    answered from the archive with the new answer; every answer received is booked once."""
    import json
    import sqlite3

    from conftest import gemini_yaml
    from omniseg.standins import fake_gemini as fg
    from omniseg.standins import gemini_answers as ga

    root = make_kvasir(tmp_path / "k", n=6)
    store = tmp_path / "runs" / "s.sqlite"
    state = {"label": "first"}

    def behave(req):
        r = ga.good_answer(req)
        r.body["responseId"] = state["label"] + req.image_sha[:8]
        return r

    with fg.FakeGemini(behave) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url))
        with Store(store) as st:
            run(cfg, st, progress=False)
            state["label"] = "second"
            run(cfg, st, progress=False, force=True, refresh=True)
            assert len(srv.log) == 12
            run(cfg, st, progress=False, force=True)
            assert len(srv.log) == 12  # the refreshed answers, from the archive
            ids = {json.loads(m)["response_id"][:6] for (m,) in st.db.execute("SELECT meta FROM predictions")}
            answered = st.db.execute("SELECT COUNT(*) FROM api_calls WHERE outcome = 'answered'").fetchone()[0]
    assert ids == {"second"} and answered == 12
    with sqlite3.connect(store.parent / "answers.sqlite") as db:
        kept = [json.loads(__import__("zlib").decompress(b).decode())["responseId"][:6]
                for (b,) in db.execute("SELECT b.data FROM answers a JOIN blobs b USING (sha256)")]
    assert kept == ["second"] * 6


def test_force_after_a_batch_run_books_no_answer_again(tmp_path, api_key):
    """`run --force` after `run --batch`: the batch answers come from the archive as cache hits; the 'batch'
    bookings stay as they were (a mutant that booked them again survived the old suite)."""
    from conftest import gemini_yaml
    from omniseg.standins.fake_gemini import FakeGemini

    root = make_kvasir(tmp_path / "k", n=6)
    store = tmp_path / "runs" / "s.sqlite"
    with FakeGemini(request_s=0.01) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05))
        with Store(store) as st:
            run(cfg, st, progress=False, batch=True)
        _, books = _books(store)
        with Store(store) as st:
            run(cfg, st, progress=False, force=True)
        rows, after = _books(store)
        assert sum(1 for e in srv.log if e.get("via") != "batch") == 0
    assert after["batch"] == books["batch"] and books["batch"][0] == 6
    assert after["cache_hit"][0] == 6 and "answered" not in after and [s for _, s, _ in rows] == ["ok"] * 6


def test_a_dry_run_counts_what_retry_failed_would_redo(tmp_path, api_key):
    """--dry-run --retry-failed counts the failed pairs it would ask again (a mutant ignoring it survived)."""
    from typer.testing import CliRunner

    from conftest import gemini_yaml
    from omniseg.cli import app
    from omniseg.standins import fake_gemini as fg
    from omniseg.standins import gemini_answers as ga

    root = make_kvasir(tmp_path / "k", n=8)
    store = tmp_path / "runs" / "s.sqlite"
    with fg.FakeGemini(lambda req: ga.error(503, "UNAVAILABLE") if req.image_sha < "6" else ga.good_answer(req)) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, max_retries=0)
        cli = CliRunner()
        assert cli.invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"]).exit_code == 0
        with Store(store) as st:
            failed = int(st.query("SELECT COUNT(*) n FROM predictions WHERE status = 'api_error'")["n"][0])
        assert 0 < failed < 8
        served = len(srv.log)
        plain = cli.invoke(app, ["run", "--config", str(path), "--store", str(store), "-q", "--dry-run"])
        retry = cli.invoke(app, ["run", "--config", str(path), "--store", str(store), "-q", "--dry-run", "--retry-failed"])
        assert "gem: 0 pairs to do; 0 API calls" in plain.output, plain.output
        assert f"gem: {failed} pairs to do; {failed} API calls, 0 answers cached" in retry.output, retry.output
        assert len(srv.log) == served  # a dry run calls nothing


def test_a_batch_budget_is_quoted_at_the_batch_price(tmp_path, api_key):
    """--max-cost with --batch compares the budget with the batch price (half): a budget between the batch and
    the online worst case submits the job (a mutant quoting the online price refused it)."""
    from conftest import gemini_yaml
    from omniseg import models
    from omniseg.standins.fake_gemini import FakeGemini

    root = make_kvasir(tmp_path / "k", n=4)
    store = tmp_path / "runs" / "s.sqlite"
    with FakeGemini(request_s=0.01) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05, max_side=128))
        seg = models.build(cfg.model("gem"))
        worst = sum(seg.provider.worst_cost((80, 64), seg.prompt()) for _ in range(4))  # the fixtures are 80 x 64
        with Store(store) as st:
            with pytest.raises(OmnisegError, match="could cost up to"):
                run(cfg, st, progress=False, batch=True, max_cost=worst * 0.45)
            run(cfg, st, progress=False, batch=True, max_cost=worst * 0.55)
        assert srv.batch.jobs_created == 1

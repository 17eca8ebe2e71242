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


def test_a_dry_run_counts_each_models_pairs_calls_and_cost_over_chunks_limits_shards_and_data_roots(tmp_path, api_key,
                                                                                                     capsys):
    """What `--dry-run` says, number by number: pairs left per model (a store's done pairs, --force, no store yet),
    calls and archived answers (--refresh asks again), the typical cost of each call and its batch price, models
    whose checkpoint is missing, past one chunk of 64 samples, with --limit, --shard and --data-root."""
    from omniseg import models
    from omniseg.inference.runner import dry_run, in_shard, open_dataset, shard_key
    from omniseg.standins.fake_gemini import FakeGemini

    n = 70  # more than one chunk of 64 estimated at a time
    root = make_kvasir(tmp_path / "k", n=n, size=(32, 40))
    other = make_kvasir(tmp_path / "k2", n=3, size=(32, 40), seed=5)
    missing = tmp_path / "none" / "unet.pt"
    with FakeGemini() as srv:
        import json

        gem = {"base_url": srv.url, "target": "polyp", "backoff_s": 0.01, "max_in_flight": 4, "max_side": 256}
        cfg = config.load(write_config(
            tmp_path / "c.yaml", "polyp", "kvasir-seg", root,
            OTSU + f"  - name: gem\n    kind: gemini\n    options: {json.dumps(gem)}\n"
            f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {missing}}}\n"))
        with Store(tmp_path / "runs" / "s.sqlite") as st:
            run(cfg, st, model_names=["gem", "otsu"], limit=5, progress=False)
            asked = len(srv.log)

            def est(**kw):
                kw.setdefault("progress", False)
                return dry_run(cfg, kw.pop("store", st), store_root=st.root, model_names=["gem", "unet"], **kw)

            seg = models.build(cfg.model("gem"))
            typical = seg.provider.typical_cost((40, 32), seg.prompt())
            assert typical > 0
            out = est()
            assert set(out) == {"gem", "unet"}  # the models named, not the defaults
            assert out["unet"] == {"pairs": n, "calls": 0, "cached": 0, "cost_usd": 0.0,
                                   "missing_checkpoint": str(missing)}
            g = out["gem"]
            assert (g["pairs"], g["calls"], g["cached"]) == (n - 5, n - 5, 0) and "slices" not in g
            assert g["cost_usd"] == pytest.approx((n - 5) * typical)
            assert g["batch_cost_usd"] == pytest.approx(g["cost_usd"] * seg.options.price.batch_factor)
            forced = est(force=True)["gem"]
            assert (forced["pairs"], forced["calls"], forced["cached"]) == (n, n - 5, 5)
            assert forced["cost_usd"] == pytest.approx((n - 5) * typical)
            fresh = est(force=True, refresh=True)["gem"]  # --refresh asks again what the archive holds
            assert (fresh["calls"], fresh["cached"]) == (n, 0)
            assert est(store=None)["gem"]["pairs"] == n  # no store yet: every pair is to do
            assert est(limit=8)["gem"]["pairs"] == 3 and est(limit=8)["unet"]["pairs"] == 8
            in_first = [r for r in open_dataset(cfg).refs("all") if in_shard(shard_key(r), (1, 3))]
            assert 0 < len(in_first) < n
            sharded = est(shard=(1, 3), force=True)
            assert sharded["gem"]["pairs"] == len(in_first) and sharded["unet"]["pairs"] == len(in_first)
            assert est(data_root=other, force=True)["gem"]["pairs"] == 3
            assert est(split="all")["gem"]["pairs"] == n - 5
            capsys.readouterr()
            dry_run(cfg, st, store_root=st.root, model_names=["gem"], limit=3)  # progress is shown by default
            assert "estimate gem" in capsys.readouterr().err
        assert len(srv.log) == asked  # a dry run calls nothing


def test_a_dry_run_on_volumes_counts_slices_for_every_model(tmp_path, monkeypatch):
    import json

    import yaml
    from typer.testing import CliRunner

    from conftest import OPENAI_KEY, make_volumes
    from omniseg.cli import app
    from omniseg.inference.runner import dry_run

    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.chdir(tmp_path)
    root = make_volumes(tmp_path / "Dataset009_Lesion", n=2, shape=(3, 16, 16), layout="nnunet")
    said = CliRunner().invoke(app, ["init", "les", "--images", str(root / "imagesTr"), "--masks",
                                    str(root / "labelsTr"), "--config-dir", "cfg"])
    assert said.exit_code == 0, said.output
    path = tmp_path / "cfg" / "les.yaml"
    doc = yaml.safe_load(path.read_text())
    preds = tmp_path / "preds"  # a model that reads whole volumes: no slices
    preds.mkdir()
    doc["models"].append({"name": "nn", "kind": "masks", "options": {"folder": str(preds)}})
    doc["models"].append({"name": "vlm", "kind": "openai", "options": {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "key_env": "VLM_KEY", "target": "lesion",
        "price": {"input_per_mtok": 1, "output_per_mtok": 2}}})
    path.write_text(yaml.safe_dump(doc))
    cfg = config.load(path)
    out = dry_run(cfg, None, store_root=tmp_path / "runs", split="all", progress=False)
    assert out["vlm"]["slices"] == 6 and out["vlm"]["calls"] == 6 and out["vlm"]["cost_usd"] > 0
    assert out["nn"] == {"pairs": 2, "calls": 0, "cached": 0, "cost_usd": 0.0, "slices": 0}
    local = [name for name in out if name not in ("vlm", "nn")]
    assert local and all(out[m]["slices"] == 6 and out[m]["calls"] == 0 for m in local), json.dumps(out)


def test_a_samples_shard_is_the_documented_salted_hash_of_its_key_whatever_its_text(tmp_path):
    """docs: shard K of N holds the keys whose salted sha256 (first 12 hex digits) is K-1 modulo N, so shards made
    by one version are the shards of the next (a resumed shard must not change its samples). An id decoded from an
    undecodable file name (a lone surrogate) has a shard too."""
    import hashlib

    from omniseg.datasets.base import SampleRef
    from omniseg.inference.runner import SHARD_BYTES, in_shard, shard_key

    def documented(key: str, n: int) -> int:
        digest = hashlib.sha256(b"omniseg-shard:" + key.encode("utf-8", "surrogatepass")).hexdigest()
        return int(digest[:12], 16) % n + 1

    keys = [f"case{i:03d}" for i in range(40)] + ["b\udcffad", "tab\there", "ü" * 60]
    for n in (1, 2, 3, 7):
        for key in keys:
            assert [k for k in range(1, n + 1) if in_shard(key, (k, n))] == [documented(key, n)]
    assert in_shard("anything", None)

    head = bytes(range(256)) * (SHARD_BYTES // 256)
    files = {"same-head-other-tail": head + b"A" * 100, "copy": head + b"B" * 100, "longer": head + b"B" * 101}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    key = {name: shard_key(SampleRef(name, "all", files={"image": tmp_path / name})) for name in files}
    # only the size and the first 64 KiB decide: a tail past them does not, a size does
    assert key["same-head-other-tail"] == key["copy"] != key["longer"]
    assert key["copy"] == f"{len(files['copy'])}:{hashlib.sha256(head).hexdigest()}"
    assert shard_key(SampleRef("gone", "all", files={"image": tmp_path / "nope"})) == "gone"
    assert shard_key(SampleRef("nofile", "all", files={})) == "nofile"

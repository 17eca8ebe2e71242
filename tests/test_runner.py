"""omniseg.runner + store: one row per pair, failures kept as rows, resume, force, signatures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omniseg import config
from omniseg.errors import OmnisegError
from omniseg.runner import run
from omniseg.store import Store

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

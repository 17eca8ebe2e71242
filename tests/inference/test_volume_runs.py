"""A volume study end to end (issue 40): `init` on nnU-Net's raw layout, `data verify`, `train` (a 2-D U-Net on the
training volumes' slices), `run` with a floor, the U-Net and an omnimodel slice by slice (through the fake
OpenAI-compatible server) and nnU-Net-style NIfTI predictions read whole; killed in the middle of a volume and
resumed; curated and reported with slices in report.html. Distances are in mm with the files' anisotropic spacing."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from omniseg import config
from omniseg.cli import app
from omniseg.inference.runner import dry_run
from omniseg.standins import fake_openai as fo

from conftest import OPENAI_KEY, make_volumes, run_killed_after_calls, write_nifti
import warm_start

N, SHAPE, SPACING = 10, (8, 40, 36), (3.0, 0.8, 0.7)


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)
    root = make_volumes(tmp_path / "Dataset009_Lesion", n=N, shape=SHAPE, spacing=SPACING, layout="nnunet")
    said = cli("init", "les", "--images", root / "imagesTr", "--masks", root / "labelsTr", "--config-dir", "cfg")
    assert "nnU-Net's raw layout" in said and "soft-tissue window" in said and f"{N} samples, 0 with problems" in said
    return tmp_path, root


def _predictions(tmp_path, root):
    """nnU-Net-style predictions: each label moved one voxel along the width (0.7 mm), the last case missing."""
    import nibabel as nib

    folder = tmp_path / "nnunet_pred"
    for f in sorted((root / "labelsTr").glob("*.nii.gz"))[:-1]:
        label = np.asarray(nib.load(str(f)).dataobj).transpose(2, 1, 0)
        write_nifti(folder / f.name, np.roll(label, 1, axis=2), SPACING)
    return folder


def test_a_volume_study_runs_end_to_end_resumes_a_kill_mid_volume_and_pays_for_no_slice_twice(study):
    tmp_path, root = study
    cfg_path = tmp_path / "cfg" / "les.yaml"
    doc = yaml.safe_load(cfg_path.read_text())
    assert doc["dataset"]["name"] == "nnunet-raw" and doc["slices"]["window"] == [40.0, 400.0]
    with fo.FakeOpenAI(key=OPENAI_KEY) as srv:
        doc["models"] += [
            {"name": "unet", "kind": "unet", "options": {"checkpoint": str(tmp_path / "ck" / "unet.pt")}},
            {"name": "nnunet", "kind": "masks", "options": {"folder": str(_predictions(tmp_path, root))}},
            {"name": "vlm", "kind": "openai", "options": {
                "base_url": srv.url + "/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "key_env": "VLM_KEY",
                "target": "the lesion", "backoff_s": 0.01, "max_in_flight": 4, "max_side": 128,
                "price": {"input_per_mtok": 1, "output_per_mtok": 2}}}]
        doc["train"] = {"net": {"encoder": "resnet18", "input_size": 64}, "epochs": 1, "batch_size": 4}
        cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert "0 with problems" in cli("data", "verify", "--config", cfg_path)
        cli("train", "--config", cfg_path, "-q")
        cfg = config.load(cfg_path)
        store = tmp_path / "runs" / "s.sqlite"

        estimate = dry_run(cfg, None, store_root=store.parent, split="all", progress=False)
        slices = N * SHAPE[0]
        assert estimate["vlm"]["calls"] == slices and estimate["vlm"]["slices"] == slices  # one call per slice
        assert estimate["vlm"]["cost_usd"] > 0 and estimate["otsu"]["calls"] == 0 and not srv.log

        args = ["run", "--config", cfg_path, "--store", store, "--split", "all", "-q"]
        killed = run_killed_after_calls(args, "omniseg.store.archive:AnswerArchive.put", SHAPE[0] + 3)
        assert killed.returncode == -9, killed.stderr
        with sqlite3.connect(tmp_path / "runs" / "answers.sqlite") as db:
            archived_at_kill = {k for (k,) in db.execute("SELECT key FROM answers")}
        srv.settle()
        served_at_kill = len(srv.log)
        done = warm_start.omniseg(args)
        assert done.returncode == 0, done.stderr
        answered_after = [e for e in srv.log[served_at_kill:] if e["kind"] == "ok"]
        # a slice answered before the kill is never asked again: the resumed volume asked only its other slices
        # (the kill came in the second volume: more than the first volume's slices were kept; a put may repeat a key
        # when a slow answer was asked again after its timeout, so the count is not exactly the puts')
        assert len(answered_after) == slices - len(archived_at_kill) and len(archived_at_kill) > SHAPE[0]
        served = len(srv.log)
        cli(*args)  # everything is done: no call at all
        assert len(srv.log) == served
        again = dry_run(cfg, None, store_root=store.parent, split="all", progress=False)
        assert again["vlm"]["calls"] == 0 and again["vlm"]["cached"] == slices
        from omniseg.errors import OmnisegError
        from omniseg.inference.redecode import redecode
        from omniseg.store.database import Store

        with Store(store) as st, pytest.raises(OmnisegError, match="one per slice.*--force"):
            redecode(st, task="les", model="vlm", progress=False)
        cli("run", "--config", cfg_path, "--store", store, "--split", "all", "--models", "vlm", "--force", "-q")
        assert len(srv.log) == served  # the advice holds: every slice from the archive, nothing asked
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT p.sample_id, p.model, p.status, p.mask_path, json_extract(p.meta, '$.slices'), "
                          "s.dice, s.hd95 FROM predictions p JOIN scores s USING (task, sample_id, model)").fetchall()
    assert len(rows) == N * 5  # a row per volume and model: otsu, ellipse, unet, nnunet, vlm
    by = {(r[0], r[1]): r for r in rows}
    for sid in {r[0] for r in rows}:
        assert by[(sid, "vlm")][2] == "ok" and by[(sid, "vlm")][4] == SHAPE[0]
        assert by[(sid, "vlm")][3].endswith(".nii.gz") and by[(sid, "unet")][4] == SHAPE[0]
    nnunet = [r for r in rows if r[1] == "nnunet"]
    assert sorted(r[2] for r in nnunet) == ["missing"] + ["ok"] * (N - 1)
    # one voxel along the width is 0.7 mm (not 1 voxel, not the 3 mm between slices)
    assert all(r[6] == pytest.approx(0.7, abs=1e-6) for r in nnunet if r[2] == "ok")
    import invariants

    figures = invariants.check(store, asked={(f"case_{i:03d}", m) for i in range(N)
                                             for m in ("otsu", "ellipse", "unet", "nnunet", "vlm")},
                               key=OPENAI_KEY, answers_expected=slices, curate_n=2)
    report = store.parent / "invariant-report"
    md = (report / "report.md").read_text()
    assert "HD95 (mm)" in md and "NSD (τ = 2 mm)" in md, md[:2000]
    html = (report / "report.html").read_text()
    thumbs = list((report / "thumbs").glob("*.jpg"))
    assert len(thumbs) >= N and "thumbs/" in html
    print(f"\nvolume study: {figures}")


def test_a_batch_model_on_volumes_is_asked_online_and_the_run_says_so(tmp_path, api_key):
    """Batch jobs hold images: `batch: true` on a volume task cannot send a volume, so its slices go online, and the
    run's notes say so instead of paying the online price in silence."""
    from omniseg.inference.runner import run
    from omniseg.standins.fake_gemini import FakeGemini
    from omniseg.store.database import Store

    from conftest import gemini_yaml

    root = make_volumes(tmp_path / "v", n=2, shape=(3, 24, 20))
    with FakeGemini() as srv:
        path = gemini_yaml(tmp_path, root, srv.url, batch=True, batch_poll_s=0.05)
        doc = yaml.safe_load(path.read_text())
        doc["dataset"] = {"name": "nifti", "root": str(root), "options": {"split": "test"}}
        path.write_text(yaml.safe_dump(doc))
        with Store(tmp_path / "s.sqlite") as st:
            s = run(config.load(path), st, split="all", progress=False)
        assert srv.batch.jobs_created == 0 and len([e for e in srv.log if e["kind"] == "ok"]) == 6
    assert s.statuses == {"ok": 2}
    assert any("gem: batch jobs send images, not volumes" in n and "online price" in n for n in s.notes), s.notes

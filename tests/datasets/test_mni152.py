"""Real volumes from nilearn's wheel (the MNI152 2009a template): written as a `nifti` dataset whose voxels and
reference are the template's own, on a 3 x 2 x 2 mm grid, and a volume task a floor can be run on."""

from __future__ import annotations

import numpy as np
import pytest

from omniseg import datasets
from omniseg.datasets import mni152

nib = pytest.importorskip("nibabel")


def test_the_slabs_hold_the_templates_voxels_and_its_white_matter_on_an_anisotropic_grid(tmp_path):
    import importlib.util

    if importlib.util.find_spec("nilearn") is None:  # a test extra: CI has it
        pytest.fail("nilearn is a test dependency (pip install -e '.[test]')")
    root = mni152.write_slabs(tmp_path / "mni")
    ds = datasets.open("nifti", root)
    refs = ds.refs()
    assert len(refs) >= 12 and {"train", "test"} == {r.split for r in refs}
    s = ds.load(next(r for r in refs if r.id == "mni152-z04-left"))
    assert s.spacing == pytest.approx((3.0, 2.0, 2.0)) and s.image.shape[0] == 6
    # the oracle: the template read here independently, cut the same way
    t1 = nib.as_closest_canonical(nib.load(str(mni152.template_file("t1"))))
    wm = nib.as_closest_canonical(nib.load(str(mni152.template_file("wm"))))
    half = np.asarray(t1.dataobj)[::2, ::2, ::3].shape[0] // 2
    image = np.asarray(t1.dataobj)[::2, ::2, ::3][:half, :, 24:30].transpose(2, 1, 0)
    label = (np.asarray(wm.dataobj)[::2, ::2, ::3][:half, :, 24:30] >= 128).transpose(2, 1, 0)
    assert np.array_equal(s.image, image) and np.array_equal(s.mask, label) and s.mask.any()
    # the world position of the first voxel is the template's (the slab's offset is in its affine)
    assert np.allclose(s.affine[:3, 3], t1.affine[:3, :3] @ [0, 0, 24 * 3] + t1.affine[:3, 3])


def test_a_floor_finds_the_white_matter_of_the_t1_slice_by_slice(tmp_path):
    from omniseg import config as config_mod, models
    from omniseg.config import ModelConfig
    from omniseg.inference.runner import score_prediction
    from omniseg.models.slicewise import SliceWise

    root = mni152.write_slabs(tmp_path / "mni")
    ds = datasets.open("nifti", root)
    cfg = config_mod.TaskConfig.model_validate({"task": "wm", "dataset": {"name": "nifti", "root": str(root)},
                                                "models": [{"name": "otsu", "kind": "otsu"}]})
    otsu = SliceWise(models.build(ModelConfig(name="otsu", kind="otsu", options={"foreground": "bright"})),
                     config_mod.SliceConfig())
    dice = []
    for ref in ds.refs("test"):
        sample = ds.load(ref)
        _, scores = score_prediction(cfg, sample, otsu.predict(sample))
        dice.append(scores["dice"])
    print(f"\notsu on the template's white matter: mean Dice {np.mean(dice):.3f} over {len(dice)} slabs")
    assert 0.3 < np.mean(dice) < 0.95  # bright tissue, but the skull-free T1's grey matter is bright too


def test_init_reads_the_template_slabs_as_an_mri_volume_task(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from omniseg.cli import app

    root = mni152.write_slabs(tmp_path / "mni")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["init", "wm", "--images", str(root / "images"), "--masks", str(root / "labels"),
                                 "--config-dir", "cfg"])
    assert r.exit_code == 0, r.output
    assert "not CT" in r.output and "spacing (3.0, 2.0, 2.0) mm" in r.output and "0 with problems" in r.output
    import yaml

    doc = yaml.safe_load((tmp_path / "cfg" / "wm.yaml").read_text())
    assert doc["dataset"]["name"] == "nifti" and "window" not in doc["slices"]
    v = CliRunner().invoke(app, ["data", "verify", "--config", str(tmp_path / "cfg" / "wm.yaml")])
    assert v.exit_code == 0 and "0 with problems" in v.output, v.output


def test_the_template_volume_task_runs_end_to_end_with_every_kind_of_model(tmp_path, monkeypatch):
    """init, verify, train (a 2-D U-Net on the training slabs' slices), run (a floor, the U-Net and an omnimodel
    through the fake server slice by slice, and NIfTI predictions read whole: the template's white matter at 0.3 as
    another annotator would draw it), curate, report with report.html."""
    import json
    import sqlite3

    import yaml
    from typer.testing import CliRunner

    from omniseg.cli import app
    from omniseg.standins import fake_openai as fo

    from conftest import OPENAI_KEY, write_nifti

    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)
    root = mni152.write_slabs(tmp_path / "mni")
    wider = tmp_path / "wm03"  # the same slabs, the white matter thresholded at 0.3 instead of 0.5
    wm = nib.as_closest_canonical(nib.load(str(mni152.template_file("wm"))))
    prob = np.asarray(wm.dataobj)[::2, ::2, ::3]
    half = prob.shape[0] // 2
    for f in sorted((root / "labels").glob("*.nii.gz")):
        _, z, side = f.name[: -len(".nii.gz")].split("-")
        k = int(z[1:]) * 6
        part = prob[:half] if side == "left" else prob[half:]
        write_nifti(wider / f.name, (part[:, :, k:k + 6] >= 0.3 * 255).astype(np.uint8).transpose(2, 1, 0), (3.0, 2.0, 2.0))

    def cli(*args):
        r = CliRunner().invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
        return r.output

    cli("init", "wm", "--images", root / "images", "--masks", root / "labels", "--config-dir", "cfg")
    cfg = tmp_path / "cfg" / "wm.yaml"
    with fo.FakeOpenAI(key=OPENAI_KEY) as srv:
        doc = yaml.safe_load(cfg.read_text())
        doc["models"] = [{"name": "otsu", "kind": "otsu", "options": {"foreground": "bright"}},
                         {"name": "unet", "kind": "unet", "options": {"checkpoint": str(tmp_path / "unet.pt")}},
                         {"name": "wm03", "kind": "masks", "role": "human", "options": {"folder": str(wider)}},
                         {"name": "vlm", "kind": "openai", "options": {
                             "base_url": srv.url + "/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "key_env": "VLM_KEY",
                             "target": "the white matter", "backoff_s": 0.01, "max_in_flight": 4, "max_side": 128}}]
        doc["curation"] = {"reference": "unet", "extremes": 2}
        doc["train"] = {"net": {"encoder": "resnet18", "input_size": 64}, "epochs": 1, "batch_size": 8}
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert "0 with problems" in cli("data", "verify", "--config", cfg)
        cli("train", "--config", cfg, "-q")
        cli("run", "--config", cfg, "--store", "s.sqlite", "-q")
        asked = len(srv.log)
        distinct = len({e["image_sha"] for e in srv.log})
        cli("run", "--config", cfg, "--store", "s.sqlite", "-q")
        assert len(srv.log) == asked  # the rerun asks nothing
    cli("curate", "--store", "s.sqlite")
    cli("report", "--store", "s.sqlite", "--out", "rep")
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        rows = db.execute("SELECT model, status, json_extract(meta, '$.slices') FROM predictions").fetchall()
        wm03 = [d for (d,) in db.execute("SELECT dice FROM scores WHERE model = 'wm03'")]
    tests = len(datasets.open("nifti", root).refs("test"))
    assert sorted({m for m, *_ in rows}) == ["otsu", "unet", "vlm", "wm03"] and len(rows) == 4 * tests
    assert all(s == "ok" for _, s, _ in rows) and all(n == 6 for m, _, n in rows if m != "wm03")
    # one call per slice image (two blank slices of the head's top are one image, asked once); a wider drawing
    assert asked == distinct and 6 * tests - 3 <= asked <= 6 * tests and all(0.6 < d < 1 for d in wm03)
    assert "HD95 (mm)" in (tmp_path / "rep" / "report.md").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "figures/wm_cases.png" in html and list((tmp_path / "rep" / "thumbs").glob("*.jpg"))  # the slices' montage
    assert json.loads((tmp_path / "rep" / "manifest.json").read_text())["tasks"]["wm"]

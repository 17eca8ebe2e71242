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
    from omniseg.evaluation.runner import score_prediction
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

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omniseg import datasets

from conftest import BUSI_REAL, make_busi


def test_multifocal_masks_are_or_merged(tmp_path):
    root = make_busi(tmp_path / "b")
    ds = datasets.get("busi")(root)
    ref = next(r for r in ds.refs() if r.id == "benign (1)")
    s = ds.load(ref)
    main = np.asarray(Image.open(root / "benign" / "benign (1)_mask.png")) > 127
    extra = np.asarray(Image.open(root / "benign" / "benign (1)_mask_1.png")) > 127
    assert np.array_equal(s.mask, main | extra) and extra.any() and not np.array_equal(s.mask, main)
    assert s.meta["class"] == "benign"


def test_normal_cases_excluded_by_default_and_includable(tmp_path):
    root = make_busi(tmp_path / "b")
    default = datasets.get("busi")(root).refs()
    assert {r.meta["class"] for r in default} == {"benign", "malignant"} and len(default) == 6
    with_normal = datasets.get("busi")(root, {"include_normal": True}).refs()
    assert len(with_normal) == 9
    normal = [r for r in with_normal if r.meta["class"] == "normal"]
    assert not datasets.get("busi")(root, {"include_normal": True}).load(normal[0]).mask.any()


def test_mask_without_image_is_a_problem(tmp_path):
    root = make_busi(tmp_path / "b")
    (root / "malignant" / "malignant (2).png").unlink()
    _, problems, _ = datasets.get("busi")(root).verify(progress=False)
    assert problems == [("malignant (2)", "mask malignant/malignant (2)_mask.png has no image malignant/malignant (2).png")]


@pytest.mark.skipif(not BUSI_REAL.is_dir(), reason="real BUSI subset not present at ../shared/data")
def test_real_busi_subset_reads():
    ds = datasets.get("busi")(BUSI_REAL)
    refs = ds.refs("all")
    assert len(refs) == 180  # benign 1..120 and malignant 1..60
    s = ds.load(next(r for r in refs if r.id == "benign (100)"))  # a multifocal case
    assert s.mask.any() and s.mask.shape == s.image.shape[:2]

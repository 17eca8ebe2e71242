from __future__ import annotations

import numpy as np

from omniseg import datasets

from conftest import make_drive


def test_official_split_fov_roi_and_second_annotator(tmp_path):
    root = make_drive(tmp_path / "DRIVE")
    ds = datasets.get("drive")(root)
    assert [r.id for r in ds.refs("train")] == ["21_training", "22_training"]
    assert [r.id for r in ds.refs("test")] == ["01_test", "02_test"]
    test = ds.load(ds.refs("test")[0])
    assert test.roi is not None and test.roi.dtype == bool and 0 < test.roi.mean() < 1
    assert not (test.mask & ~test.roi).any()
    assert "human" in test.extra and test.extra["human"].shape == test.mask.shape
    train = ds.load(ds.refs("train")[0])
    assert "human" not in train.extra
    assert train.image.shape == (58, 56, 3) and train.image.dtype == np.uint8


def test_missing_fov_is_reported(tmp_path):
    root = make_drive(tmp_path / "DRIVE")
    (root / "test" / "mask" / "02_test_mask.gif").unlink()
    _, problems, _ = datasets.get("drive")(root).verify(progress=False)
    assert problems == [("02_test", "missing fov test/mask/02_test_mask.gif")]


def test_missing_drive_explains_registration(tmp_path):
    import pytest

    from omniseg.errors import DataMissingError

    with pytest.raises(DataMissingError, match="grand-challenge"):
        datasets.get("drive")(tmp_path / "none").refs()

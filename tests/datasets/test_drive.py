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


def test_every_file_of_a_sample_is_held_to_the_pixel_limit_and_to_the_images_size(tmp_path):
    """The vessel mask, the field of view and the second annotation each answer for themselves: over the pixel
    limit is refused naming that file before it is decoded; of another size than the image, named with the
    sample; .tiff images are found as .tif ones are; a test image without a second annotation is no problem."""
    import pytest
    from PIL import Image

    from omniseg.errors import SampleError

    root = make_drive(tmp_path / "DRIVE", size=(20, 24))
    img = root / "test" / "images" / "01_test.tif"
    img.rename(img.with_suffix(".tiff"))
    (root / "test" / "2nd_manual" / "02_manual2.gif").unlink()
    limit = 20 * 24  # exactly the image's pixels
    for name, path in (("mask", root / "test" / "1st_manual" / "01_manual1.gif"),
                       ("fov", root / "test" / "mask" / "01_test_mask.gif"),
                       ("human", root / "test" / "2nd_manual" / "01_manual2.gif")):
        saved = path.read_bytes()
        Image.fromarray(np.zeros((21, 24), np.uint8)).save(path, format="GIF")  # one row too many
        ds = datasets.open("drive", root, max_pixels=limit)
        ref = next(r for r in ds.refs("test") if r.id == "01_test")
        assert ref.problem is None
        with pytest.raises(SampleError, match=f"{path.name} is 24x21 pixels .* over the limit"):
            ds.load(ref)
        with pytest.raises(SampleError, match=f"01_test: {name} .*{path.name} is 24x21 but the image is 24x20"):
            datasets.open("drive", root).load(ref)
        path.write_bytes(saved)
    ds = datasets.open("drive", root)
    refs = {r.id: r for r in ds.refs("test")}
    assert set(refs) == {"01_test", "02_test"} and refs["02_test"].problem is None
    two = ds.load(refs["02_test"])
    assert "human" not in two.extra and two.meta == {"split": "test"} and two.notes == ()
    grey = root / "test" / "1st_manual" / "02_manual1.gif"
    Image.fromarray(np.full((20, 24), 128, np.uint8)).save(grey, format="GIF")  # a grey mask: noted, not silent
    assert any("not black-and-white" in n for n in ds.load(refs["02_test"]).notes)


def test_the_image_itself_is_held_to_the_pixel_limit(tmp_path):
    import pytest
    from PIL import Image

    from omniseg.errors import SampleError

    root = make_drive(tmp_path / "DRIVE", size=(20, 24))
    img = root / "test" / "images" / "01_test.tif"
    Image.fromarray(np.zeros((21, 24, 3), np.uint8)).save(img)
    ref = next(r for r in datasets.open("drive", root).refs("test") if r.id == "01_test")
    with pytest.raises(SampleError, match="01_test.tif is 24x21 pixels .* over the limit"):
        datasets.open("drive", root, max_pixels=20 * 24).load(ref)

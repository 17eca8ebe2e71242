from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omniseg import datasets
from omniseg.errors import DataMissingError, SampleError

from conftest import KVASIR_REAL, make_kvasir


def test_reads_images_and_binarizes_jpeg_masks(kvasir):
    ds = datasets.get("kvasir-seg")(kvasir)
    refs = ds.refs("all")
    assert [r.id for r in refs] == [f"case{i:03d}" for i in range(6)]
    s = ds.load(refs[0])
    assert s.image.dtype == np.uint8 and s.image.shape == (64, 80, 3)
    assert s.mask.dtype == bool and s.mask.shape == (64, 80)
    raw = np.asarray(Image.open(kvasir / "masks" / "case000.jpg").convert("L"))
    assert np.array_equal(s.mask, raw >= 128)
    assert {r.split for r in refs} <= {"train", "test"}


def test_broken_samples_are_reported_not_fatal(tmp_path):
    root = make_kvasir(tmp_path / "k", n=4)
    (root / "masks" / "case000.jpg").unlink()  # missing mask
    (root / "images" / "case001.jpg").write_bytes(b"not a jpeg")  # corrupt image
    Image.new("RGB", (10, 10)).save(root / "masks" / "case002.jpg")  # mask of another size
    ds = datasets.get("kvasir-seg")(root)
    n, problems, _ = ds.verify(progress=False)
    assert n == 4
    why = dict(problems)
    assert set(why) == {"case000", "case001", "case002"}
    assert "missing mask masks/case000.jpg" in why["case000"]
    assert "unreadable image" in why["case001"] and "case001.jpg" in why["case001"]
    assert "is 10x10 but the image is 80x64" in why["case002"]
    with pytest.raises(SampleError):
        ds.load(ds.refs()[0])


def test_missing_root_names_layout_and_fetch_command(tmp_path):
    ds = datasets.get("kvasir-seg")(tmp_path / "absent")
    with pytest.raises(DataMissingError) as e:
        ds.refs()
    msg = str(e.value)
    assert "does not exist" in msg and "images/<id>.jpg" in msg and "omniseg data fetch polyp" in msg


@pytest.mark.skipif(not KVASIR_REAL.is_dir(), reason="real Kvasir-SEG not present at ../shared/data")
def test_real_kvasir_split_is_the_committed_800_200():
    ds = datasets.get("kvasir-seg")(KVASIR_REAL)
    assert len(ds.refs("all")) == 1000
    assert len(ds.refs("test")) == 200 and len(ds.refs("train")) == 800

"""The Dataset contract, checked on every registered dataset kind from a small layout of its own: ids unique and
stable, every sample an 8-bit RGB image with a boolean mask (and region of interest, extra references) of its
size (a volume kind: a depth x height x width volume with a mask of its shape and its spacing), the split train or test, and ``dataset.max_pixels`` held both ways: a lowered limit refuses every file
before it is decoded (a SampleError naming it), a raised one reads them. A kind added to the registry without a
layout in :data:`LAYOUTS` fails here first."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from omniseg import datasets
from omniseg.errors import SampleError

from conftest import make_busi, make_drive, make_kvasir, make_volumes

#: kind -> (a function writing its layout under a folder and returning the root, the options to open it with)
LAYOUTS: dict[str, tuple[Callable[[Path], Path], dict]] = {
    "kvasir-seg": (lambda p: make_kvasir(p, n=5, size=(40, 52)), {}),
    "busi": (lambda p: make_busi(p, per_class=2, size=(36, 44)), {}),
    "drive": (lambda p: make_drive(p, size=(30, 34)), {}),
    "folder": (lambda p: make_kvasir(p, n=5, size=(40, 52)), {"images": "images", "masks": "masks"}),
    "nifti": (lambda p: make_volumes(p, n=5, shape=(6, 20, 18)), {}),
    "nnunet-raw": (lambda p: make_volumes(p, n=5, shape=(6, 20, 18), layout="nnunet"), {"label": "lesion"}),
}


def test_every_registered_dataset_kind_has_a_layout_here():
    assert set(datasets.names()) == set(LAYOUTS), "add a small layout of the new dataset kind to LAYOUTS"


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_every_sample_is_an_rgb_image_with_masks_of_its_size(kind, tmp_path):
    make, options = LAYOUTS[kind]
    root = make(tmp_path / kind)
    ds = datasets.open(kind, root, options)
    refs = ds.refs("all")
    ids = [r.id for r in refs]
    assert refs and len(ids) == len(set(ids)) and ids == [r.id for r in datasets.open(kind, root, options).refs("all")]
    assert {r.split for r in refs} <= {"train", "test"}
    assert sorted(r.id for r in ds.refs("train") + ds.refs("test")) == sorted(ids)
    for r in refs:
        s = ds.load(r)
        assert s.id == r.id
        if ds.volumetric:
            assert s.is_volume and s.image.ndim == 3 and s.mask.dtype == bool and s.mask.shape == s.image.shape
            assert len(s.spacing) == 3 and min(s.spacing) > 0 and s.affine.shape == (4, 4)
            continue
        assert not s.is_volume
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        hw = s.image.shape[:2]
        assert s.mask.dtype == bool and s.mask.shape == hw
        assert s.roi is None or (s.roi.dtype == bool and s.roi.shape == hw)
        assert all(m.dtype == bool and m.shape == hw for m in s.extra.values())


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_the_pixel_limit_refuses_every_file_over_it_and_a_raised_one_reads_them(kind, tmp_path):
    make, options = LAYOUTS[kind]
    root = make(tmp_path / kind)
    small = datasets.open(kind, root, options, max_pixels=100)
    for r in small.refs("all"):
        with pytest.raises(SampleError, match="over the limit"):
            small.load(r)
    raised = datasets.open(kind, root, options, max_pixels=250_000_000)
    assert all(raised.load(r).mask.shape for r in raised.refs("all"))

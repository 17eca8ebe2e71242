"""NIfTI volumes: (depth, height, width) arrays with their spacing in mm whatever the file's axis order, and an
image and label that do not share a grid refused in one message naming both files."""

from __future__ import annotations

import numpy as np
import pytest

from omniseg.datasets import volumes
from omniseg.errors import SampleError
from omniseg.scoring.metrics import volume_scores

nib = pytest.importorskip("nibabel")


def save(path, data_xyz: np.ndarray, zooms=(0.8, 0.8, 3.0), affine=None):
    aff = np.diag([*zooms, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data_xyz, aff)
    img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


def test_a_volume_is_depth_height_width_with_its_spacing_in_that_order(tmp_path):
    xyz = np.zeros((10, 12, 5), np.int16)  # x 10, y 12, z 5 slices
    xyz[2:4, 3:9, 1] = 7
    v = volumes.read(save(tmp_path / "a.nii.gz", xyz, zooms=(0.7, 0.9, 2.5)))
    assert v.data.shape == (5, 12, 10) and v.spacing == pytest.approx((2.5, 0.9, 0.7))
    assert v.data[1, 3:9, 2:4].all() and v.data.sum() == 7 * 12
    flipped = np.diag([-0.7, 0.9, 2.5, 1.0])  # the same grid stored with x flipped: brought to RAS+ on reading
    flipped[0, 3] = 0.7 * 9
    w = volumes.read(save(tmp_path / "b.nii", xyz[::-1].copy(), zooms=(0.7, 0.9, 2.5), affine=flipped))
    assert np.array_equal(w.data, v.data) and np.allclose(w.affine, v.affine, atol=1e-5)


def test_a_label_off_its_images_grid_is_one_message_naming_both_files(tmp_path):
    xyz = np.zeros((8, 8, 4), np.uint8)
    image = volumes.read(save(tmp_path / "img.nii.gz", xyz))
    volumes.check_pair(image, volumes.read(save(tmp_path / "same.nii.gz", xyz, zooms=(0.8, 0.8, 3.0000001))))
    cases = {
        "shape": save(tmp_path / "shape.nii.gz", np.zeros((8, 8, 5), np.uint8)),
        "voxel spacing": save(tmp_path / "spacing.nii.gz", xyz, zooms=(0.8, 0.8, 2.0)),
        "orientation or origin": save(tmp_path / "moved.nii.gz", xyz,
                                      affine=np.array([[0.8, 0, 0, 5.0], [0, 0.8, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])),
    }
    for what, path in cases.items():
        with pytest.raises(SampleError) as e:
            volumes.check_pair(image, volumes.read(path))
        assert f"{path} (label) and {tmp_path / 'img.nii.gz'} (image) differ in {what}" in str(e.value)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(SampleError, match="broken.nii.gz: not a readable NIfTI volume"):
        volumes.read(tmp_path / "broken.nii.gz")


def test_distances_from_files_are_in_mm_of_their_spacing(tmp_path):
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[5:15, 5:15, 3:7] = 1
    moved = np.roll(ref, 2, axis=2)  # two slices along z, 4 mm apart at 2 mm per slice
    a = volumes.read(save(tmp_path / "ref.nii.gz", ref, zooms=(0.5, 0.5, 2.0)))
    b = volumes.read(save(tmp_path / "pred.nii.gz", moved, zooms=(0.5, 0.5, 2.0)))
    volumes.check_pair(a, b)
    s = volume_scores(b.data > 0, a.data > 0, a.spacing)
    assert s["hd95"] == pytest.approx(4.0) and s["dice"] == pytest.approx(0.5)

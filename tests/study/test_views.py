"""What a picture of a volume shows (omniseg.study.views): the slice through the largest reference area and the
slice where the models disagree most with the reference, windowed as the run showed them; an image as it is."""

from __future__ import annotations

import numpy as np

from omniseg.datasets.base import Sample
from omniseg.study.views import views


def _volume():
    image = np.zeros((6, 10, 12), np.float32)
    image[:, 2:8, 2:9] = 100.0
    mask = np.zeros(image.shape, bool)
    mask[1, 3:5, 3:5] = True  # 4 voxels
    mask[4, 2:8, 2:9] = True  # 42 voxels: the largest reference area
    return Sample("v", image, mask, spacing=(3.0, 1.0, 1.0), affine=np.eye(4))


def test_a_volume_is_shown_at_its_largest_reference_slice_and_its_worst_disagreement():
    v = _volume()
    wrong = v.mask.copy()
    wrong[2] = True  # 120 voxels wrong on slice 2
    shown = views(v, {"a": wrong, "b": v.mask, "gone": None})
    assert [s.label for s in shown] == ["axial 4/6: largest reference", "axial 2/6: worst disagreement"]
    assert np.array_equal(shown[0].truth, v.mask[4]) and np.array_equal(shown[1].masks["a"], wrong[2])
    assert shown[0].masks["gone"] is None and shown[0].image.dtype == np.uint8 and shown[0].image.shape == (10, 12, 3)
    assert views(v, {"b": v.mask})[0].label.endswith("largest reference") and len(views(v, {"b": v.mask})) == 1
    assert len(views(v, {"a": wrong}, worst=False)) == 1


def test_the_recorded_window_and_axis_are_used_and_an_image_is_itself():
    v = _volume()
    coronal = views(v, {}, {"axis": "coronal", "window": [50, 100]})[0]
    assert coronal.label.startswith("coronal") and coronal.image.shape == (6, 12, 3)
    assert set(np.unique(coronal.image)) <= {0, 255}  # 0 and 100 are below and at the top of [0, 100]
    img = Sample("i", np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), bool))
    only = views(img, {"m": None})
    assert len(only) == 1 and only[0].label == "" and only[0].image is img.image

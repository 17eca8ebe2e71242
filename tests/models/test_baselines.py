from __future__ import annotations

import numpy as np
import pytest

from omniseg.scoring import metrics
from omniseg import models
from omniseg.models import baselines
from omniseg.config import ModelConfig
from omniseg.datasets.base import Sample

from conftest import blob_mask, lesion_image, vessel_mask


def build(kind, **options):
    return models.build(ModelConfig(name=kind, kind=kind, options=options))


@pytest.mark.parametrize("bright", [True, False])
def test_otsu_finds_a_contrasting_blob(bright):
    rng = np.random.default_rng(3)
    m = blob_mask(80, 90, rng)
    s = Sample("x", lesion_image(m, rng, bright=bright), m)
    pred = build("otsu", foreground="bright" if bright else "dark").predict(s)
    assert pred.status == "ok" and metrics.dice(metrics.confusion(pred.mask, m)) > 0.9


def test_frangi_finds_lines_inside_the_fov():
    rng = np.random.default_rng(4)
    v = vessel_mask(96, 96, rng)
    img = np.stack([np.full(v.shape, 120), np.where(v, 70, 170), np.full(v.shape, 40)], -1).astype(np.uint8)
    roi = np.ones(v.shape, bool)
    roi[:, :8] = False
    pred = build("frangi", fraction=float(v.mean()), fov_erosion=0).predict(Sample("x", img, v, roi=roi))
    assert not (pred.mask & ~roi).any()
    assert metrics.dice(metrics.confusion(pred.mask, v, roi)) > 0.5


def test_human_reference_needs_the_annotation():
    m = np.zeros((5, 5), bool)
    s = Sample("x", np.zeros((5, 5, 3), np.uint8), m, extra={"human": m})
    assert build("human").predict(s).status == "ok"
    p = build("human").predict(Sample("y", s.image, m))
    assert p.status == "unavailable" and "no 'human' annotation" in p.reason


def test_unknown_kind_lists_the_known_ones():
    known = ", ".join(models.names())  # whatever is registered, built-in or not
    assert {"otsu", "frangi", "ellipse", "unet", "gemini", "human"} <= set(models.names())
    with pytest.raises(KeyError, match=f"known: {known} .did you mean .unet"):
        models.get("unet2")


def test_otsu_ignores_an_endoscope_frame():
    """Hardening defect 13: on Kvasir-SEG 92% of Otsu masks scored 0 because the black frame set the threshold."""
    rng = np.random.default_rng(5)
    m = blob_mask(120, 150, rng)
    img = lesion_image(m, rng, bright=True)
    yy, xx = np.mgrid[:120, :150]
    frame = ((yy - 60) / 66) ** 2 + ((xx - 75) / 82) ** 2 > 1  # black corners, as an endoscope's
    img[frame] = 0
    img[30:34, 40:44] = 255  # a specular highlight
    s = Sample("x", img, m)
    new = build("otsu", foreground="bright").predict(s)
    old = build("otsu", foreground="bright", frame=False, highlights=False, opening=0, centre_weight=0,
                drop_border=True).predict(s)
    assert metrics.dice(metrics.confusion(new.mask, m)) > 0.85
    assert metrics.dice(metrics.confusion(old.mask, m)) < 0.5  # the defect, reproduced


def test_centre_ellipse_ignores_the_pixels():
    e = build("ellipse", radius=0.25)
    a = e.predict(Sample("x", np.zeros((40, 80, 3), np.uint8), np.zeros((40, 80), bool))).mask
    b = e.predict(Sample("y", np.full((40, 80, 3), 200, np.uint8), np.zeros((40, 80), bool))).mask
    assert np.array_equal(a, b) and a[20, 40] and not a[0, 0]
    assert abs(a.sum() - np.pi * 10 * 20) < 0.05 * np.pi * 10 * 20  # semi-axes 0.25 x 40 and 0.25 x 80
    assert np.array_equal(a, a[::-1]) and np.array_equal(a, a[:, ::-1])  # centred


def test_across_channels_is_numpys_reduction_over_the_last_axis():
    rng = np.random.default_rng(8)
    for shape in [(1, 1, 3), (7, 5, 3), (40, 31, 4), (3, 9, 1)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(baselines.across_channels(img, np.maximum), img.max(axis=2))
        assert np.array_equal(baselines.across_channels(img, np.minimum), img.min(axis=2))
        as_float = img.astype(np.float32)
        mean = baselines.across_channels(as_float, np.add) / np.float32(shape[2])
        assert mean.dtype == np.float32 and np.array_equal(mean, as_float.mean(axis=2))
        assert img.shape == shape  # folded into a copy, the image untouched
    every_sum = np.arange(766, dtype=np.float32)  # each grey mean dark_frame compares, exactly numpy's
    rgb = np.stack([np.minimum(every_sum, 255), np.clip(every_sum - 255, 0, 255), np.clip(every_sum - 510, 0, 255)], -1)
    assert np.array_equal(baselines.across_channels(rgb[None], np.add)[0] / np.float32(3), rgb.mean(axis=1))


def _component_as_first_written(fg: np.ndarray, centre_weight: float, drop_border: bool) -> np.ndarray:
    """The otsu floor's component before it was made fast: ndimage's centres of mass, holes filled over the image."""
    from scipy import ndimage

    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(float)
    sizes[0] = 0
    if drop_border:
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        kept = sizes.copy()
        kept[border] = 0
        if kept.any():
            sizes = kept
    if centre_weight:
        h, w = fg.shape
        centres = ndimage.center_of_mass(fg, labels, range(1, n + 1))
        d = np.array([np.hypot(cy / h - 0.5, cx / w - 0.5) for cy, cx in centres])
        sizes[1:] *= np.exp(-((d / centre_weight) ** 2))
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


@pytest.mark.parametrize("centre_weight, drop_border", [(0.25, False), (0.25, True), (0, False), (0.01, False)])
def test_the_component_kept_and_its_filled_holes_are_those_of_the_plain_computation(centre_weight, drop_border):
    rng = np.random.default_rng(9)
    for i in range(150):
        h, w = rng.integers(1, 50, 2)
        fg = rng.random((h, w)) > rng.uniform(0.2, 0.9)
        if i % 3 == 0:  # rings with holes, away from the border or touching it
            fg = blob_mask(h, w, rng) ^ blob_mask(h, w, rng) if min(h, w) > 8 else fg
        assert np.array_equal(baselines.component(fg, centre_weight, drop_border),
                              _component_as_first_written(fg, centre_weight, drop_border)), (i, h, w)

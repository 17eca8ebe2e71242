"""omniseg.study.difficulty: lesion size and contrast read from the image, and the quartile strata built from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from omniseg.datasets.base import Sample
from omniseg.study.difficulty import STRATA, features, strata


def _disc(h: int, w: int, r: float, inside: int, outside: int, noise: float, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= r * r
    grey = np.where(mask, inside, outside) + rng.normal(0, noise, (h, w))
    img = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return Sample("x", img, mask)


def test_features_measure_share_and_contrast():
    s = _disc(60, 80, 12, 200, 100, 10)
    f = features(s)
    assert f["lesion_share"] == pytest.approx(s.mask.mean())
    assert f["contrast"] == pytest.approx(10.0, rel=0.15)  # |200 - 100| / 10
    assert features(_disc(60, 80, 12, 150, 100, 10))["contrast"] < f["contrast"]
    assert math.isnan(features(Sample("e", s.image, np.zeros_like(s.mask)))["contrast"])
    roi = np.zeros_like(s.mask)
    roi[:, :40] = True
    assert features(Sample("r", s.image, s.mask, roi=roi))["lesion_share"] == pytest.approx((s.mask & roi).sum() / roi.sum())


@given(st.dictionaries(st.text("abcd", min_size=1, max_size=3),
                       st.tuples(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3]),
                                 st.one_of(st.just(math.nan), st.sampled_from([0.5, 1.0, 2.0, 4.0]))),
                       max_size=30))
def test_strata_are_the_outer_quartiles_of_samples_with_a_lesion(raw):
    """Every sample of the low stratum is at or below every one of the high stratum; each holds a quarter of the
    samples that have a lesion and the feature; samples without a lesion are never in them; ties by id."""
    values = {sid: {"lesion_share": share, "contrast": c} for sid, (share, c) in raw.items()}
    out = strata(values)
    for feature, (low, high) in STRATA.items():
        usable = [sid for sid, v in values.items() if v["lesion_share"] > 0 and not math.isnan(v[feature])]
        k = int(len(usable) * 0.25)
        if k == 0:
            assert low not in out and high not in out
            continue
        lo, hi = out[low], out[high]
        assert len(lo) == len(hi) == k
        assert {s for s, _ in lo} | {s for s, _ in hi} <= set(usable)
        assert max(v for _, v in lo) <= min(v for _, v in hi)
        assert [(v, s) for s, v in lo] == sorted((v, s) for s, v in lo)
        assert [(-v, s) for s, v in hi] == sorted((-v, s) for s, v in hi)
        assert all(values[s][feature] == v for s, v in lo + hi)


def test_contrast_is_measured_inside_the_region_of_interest():
    """The ring around the lesion stops at the region of interest: what lies outside it (DRIVE's black frame, an
    endoscope's border) never sets the contrast (a mutant measuring outside survived the old suite)."""
    s = _disc(60, 80, 10, 200, 100, 5)
    roi = np.zeros_like(s.mask)
    roi[18:43, 28:53] = True  # the lesion and a thin ring of tissue: the rest of the ring lies outside
    outside = s.image.copy()
    outside[~roi] = 0  # black outside the region
    inside_only = features(Sample("r", outside, s.mask, roi=roi))
    same = features(Sample("r", s.image, s.mask, roi=roi))
    assert inside_only["contrast"] == pytest.approx(same["contrast"], rel=1e-6)
    assert features(Sample("r", outside, s.mask))["contrast"] != pytest.approx(same["contrast"], rel=0.05)


def _square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _expected_contrast(grey: np.ndarray, mask: np.ndarray, width: int) -> float:
    """The documented contrast with the ring built from city-block distances (not by dilation)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_cdt(~mask, metric="taxicab")
    inside, around = grey[mask].astype(np.float64), grey[(dist >= 1) & (dist <= width)].astype(np.float64)
    return abs(inside.mean() - around.mean()) / (np.sqrt((inside.var() + around.var()) / 2) + 1e-6)


def test_contrast_weighs_the_channels_as_luma_whichever_side_is_brighter():
    """One channel carries the lesion, the others noise: the contrast depends on how the channels are weighed
    (luma: 0.299 R + 0.587 G + 0.114 B), and a dark lesion on bright tissue counts as much as a bright one."""
    mask = _square(40, 40, 15, 25, 15, 25)
    rng = np.random.default_rng(5)
    for channel in range(3):
        for lesion, tissue in ((200, 60), (60, 200)):
            img = rng.integers(0, 120, (40, 40, 3)).astype(np.uint8)
            img[..., channel] = np.where(mask, lesion, tissue) + rng.integers(-20, 21, (40, 40))
            grey = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            got = features(Sample("c", img, mask))["contrast"]
            assert got == pytest.approx(_expected_contrast(grey, mask, 3), rel=1e-4), (channel, lesion)


def test_the_ring_is_max_3_or_a_tenth_of_the_lesions_side_wide_and_needs_10_pixels():
    """Tissue grey rises 10 per pixel of city-block distance from the lesion, so the ring's mean tells its width."""
    from scipy import ndimage

    for side, width in ((10, 3), (60, 6)):  # round(0.1 * sqrt(side ** 2)): 1 -> at least 3, 6
        n = side + 40
        mask = _square(n, n, 20, 20 + side, 20, 20 + side)
        dist = ndimage.distance_transform_cdt(~mask, metric="taxicab")
        grey = np.where(mask, 0, 10 * dist).astype(np.uint8)
        img = np.repeat(grey[..., None], 3, axis=-1)
        expected = _expected_contrast(grey, mask, width)
        assert expected != pytest.approx(_expected_contrast(grey, mask, width + 1), rel=1e-3)  # the width shows
        assert features(Sample("r", img, mask))["contrast"] == pytest.approx(expected, rel=1e-4), side
    mask = _square(20, 20, 5, 10, 5, 10)
    roi = mask.copy()
    roi[10, 5:10] = roi[4, 5:9] = True  # 9 ring pixels inside the region: too few
    img = np.zeros((20, 20, 3), np.uint8)
    assert math.isnan(features(Sample("r", img, mask, roi=roi))["contrast"])
    roi[4, 9] = True  # the 10th
    assert not math.isnan(features(Sample("r", img, mask, roi=roi))["contrast"])


def test_a_one_pixel_lesion_and_a_one_pixel_region_are_measured():
    mask = _square(20, 20, 10, 11, 10, 11)
    img = np.zeros((20, 20, 3), np.uint8)
    img[10, 10] = 200
    img[::2, ::2, 1] += 30  # some texture in the tissue, so the ring has a spread
    f = features(Sample("p", img, mask))
    assert f["lesion_share"] == pytest.approx(1 / 400) and np.isfinite(f["contrast"]) and f["contrast"] > 0
    one = features(Sample("p", img, mask, roi=mask.copy()))
    assert one["lesion_share"] == 1.0 and math.isnan(one["contrast"])  # no ring inside a one-pixel region


def test_no_lesion_gives_both_keys_and_flat_regions_a_large_positive_contrast():
    s = _disc(40, 40, 8, 200, 100, 0)  # no noise: both variances are 0
    empty = features(Sample("e", s.image, np.zeros_like(s.mask)))
    assert set(empty) == {"lesion_share", "contrast"} and empty["lesion_share"] == 0.0
    assert features(s)["contrast"] == pytest.approx(100 / 1e-6)  # the guard keeps the division positive and finite


def test_a_volumes_features_are_its_voxels_and_intensities():
    """A lesion of 2 x 3 x 3 voxels in a 6 x 12 x 12 volume: its share of the voxels, and a contrast read from the
    stored intensities (a 100-unit step over noise of 10: about 10), not from an RGB image it does not have."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 10, (6, 12, 12)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[2:4, 4:7, 4:7] = True
    image[mask] += 100
    f = features(Sample("v", image, mask, spacing=(3.0, 1.0, 1.0), affine=np.eye(4)))
    assert f["lesion_share"] == pytest.approx(18 / (6 * 12 * 12)) and 7 < f["contrast"] < 13

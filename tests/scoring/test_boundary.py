"""The boundary metrics Metrics Reloaded recommends (NSD, MASD, HD95 with a pixel spacing) against MONAI, and
boundary IoU against Cheng et al.'s reference code (OpenCV erosions), on generated masks; their bounds and empty
cases as properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from omniseg.scoring import metrics
from omniseg.scoring.metrics import Geometry

from scoring.test_metrics import random_pairs

SPACINGS = [None, (1.0, 1.0), (0.5, 0.25), (2.0, 0.7)]


@pytest.fixture(scope="module")
def monai_metrics():
    """MONAI is the oracle here and a test extra, not a dependency: only these tests may skip without it."""
    return pytest.importorskip("monai.metrics")


def monai_boundary(mm, pred, ref, spacing, tau):
    yp = torch.from_numpy(pred)[None, None].float()
    yr = torch.from_numpy(ref)[None, None].float()
    sp = list(spacing) if spacing else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nsd = mm.compute_surface_dice(yp, yr, [tau], include_background=True, spacing=sp)
        there = mm.compute_average_surface_distance(yp, yr, include_background=True, symmetric=False, spacing=sp)
        back = mm.compute_average_surface_distance(yr, yp, include_background=True, symmetric=False, spacing=sp)
        hd = mm.compute_hausdorff_distance(yp, yr, include_background=True, percentile=95, spacing=sp)
    return float(nsd), (float(there) + float(back)) / 2, float(hd)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_nsd_masd_and_hd95_equal_monais_with_the_same_spacing(monai_metrics, spacing):
    worst = 0.0
    for i, (pred, ref) in enumerate(random_pairs(40, seed=11)):
        tau = [1.03, 2.17, 3.51][i % 3]  # off every distance these spacings give: no tie that float32 could flip
        ours = metrics.score(pred, ref, geometry=Geometry(spacing=spacing, tolerance=tau))
        nsd, masd, hd = monai_boundary(monai_metrics, pred, ref, spacing, tau)
        # MONAI returns float32 tensors: distances agree to 1e-6 of their size, shares to 1e-6
        worst = max(worst, abs(ours["nsd"] - nsd), abs(ours["masd"] - masd) / max(masd, 1), abs(ours["hd95"] - hd) / max(hd, 1))
        assert ours["nsd"] == pytest.approx(nsd, abs=1e-6), i
        assert ours["masd"] == pytest.approx(masd, rel=1e-6, abs=1e-6), i
        assert ours["hd95"] == pytest.approx(hd, rel=1e-6, abs=1e-6), i
    assert worst < 1e-6


def reference_band(mask: np.ndarray, dilation: int) -> np.ndarray:
    """Cheng et al.'s mask_to_boundary (bowenc0221/boundary-iou-api): a one-pixel zero border, ``dilation``
    erosions with a 3 x 3 kernel, the mask minus what is left."""
    cv2 = pytest.importorskip("cv2")
    m = mask.astype(np.uint8)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=dilation)[1:-1, 1:-1]
    return (m - eroded).astype(bool)


def reference_boundary_iou(pred, ref, dilation_ratio: float = 0.02) -> float:
    dilation = max(1, int(round(dilation_ratio * math.hypot(*ref.shape))))
    bp, br = reference_band(pred, dilation), reference_band(ref, dilation)
    return float((bp & br).sum() / (bp | br).sum())


def test_boundary_iou_is_cheng_et_als_reference_code():
    for i, (pred, ref) in enumerate(random_pairs(40, seed=5)):
        assert metrics.score(pred, ref)["boundary_iou"] == pytest.approx(reference_boundary_iou(pred, ref), abs=1e-9), i
        d = 1 + i % 4
        want = (lambda a, b: float((a & b).sum() / (a | b).sum()))(reference_band(pred, d), reference_band(ref, d))
        assert metrics.boundary_iou(pred, ref, width=d) == pytest.approx(want, abs=1e-9), (i, d)


def test_swapping_the_spacing_axes_changes_the_distances():
    ref = np.zeros((60, 60), bool)
    ref[20:40, 20:40] = True
    pred = np.roll(ref, 4, axis=0)  # moved down: only the row spacing should matter
    rows_fine, rows_coarse = Geometry(spacing=(0.5, 2.0)), Geometry(spacing=(2.0, 0.5))
    a, b = metrics.score(pred, ref, geometry=rows_fine), metrics.score(pred, ref, geometry=rows_coarse)
    assert a["hd95"] == pytest.approx(2.0) and b["hd95"] == pytest.approx(8.0)
    assert a["masd"] < b["masd"] and a["nsd"] > b["nsd"]
    assert metrics.score(pred, ref)["hd95"] == pytest.approx(4.0)  # pixels without a spacing


def test_a_boundary_exactly_at_the_tolerance_counts_whatever_the_rounding():
    ref = np.zeros((40, 40), bool)
    ref[10:30, 10:30] = True
    pred = np.roll(ref, 5, axis=1)
    for spacing, tau in (((1.0, 0.7), 3.5), ((1.0, 0.1), 0.5), (None, 5.0)):
        assert metrics.score(pred, ref, geometry=Geometry(spacing=spacing, tolerance=tau))["nsd"] == 1.0, (spacing, tau)


def test_the_empty_cases_follow_the_documented_conventions():
    empty, some = np.zeros((30, 40), bool), np.zeros((30, 40), bool)
    some[5:9, 5:9] = True
    both = metrics.score(empty, empty)
    assert (both["nsd"], both["masd"], both["hd95"], both["boundary_iou"]) == (1.0, 0.0, 0.0, 1.0)
    for p, r in ((empty, some), (some, empty)):
        one = metrics.score(p, r, geometry=Geometry(spacing=(0.5, 2.0)))
        assert one["nsd"] == 0.0 and one["boundary_iou"] == 0.0
        assert one["masd"] == one["hd95"] == pytest.approx(math.hypot(30 * 0.5, 40 * 2.0))


MASKS = arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)))


@settings(max_examples=150, deadline=None)
@given(MASKS, st.data(), st.sampled_from(SPACINGS), st.floats(0.1, 5.0))
def test_bounds_identity_and_symmetry(a, data, spacing, tau):
    b = data.draw(arrays(bool, st.just(a.shape)))
    g = Geometry(spacing=spacing, tolerance=tau)
    ab, ba, aa = metrics.score(a, b, geometry=g), metrics.score(b, a, geometry=g), metrics.score(a, a, geometry=g)
    for k in ("nsd", "boundary_iou"):
        assert 0.0 <= ab[k] <= 1.0 and ab[k] == pytest.approx(ba[k]) and aa[k] == 1.0
    for k in ("hd95", "masd"):
        assert ab[k] >= 0.0 and ab[k] == pytest.approx(ba[k]) and aa[k] == 0.0
    assert ab["masd"] <= metrics.hd95(a, b, percentile=100, spacing=spacing) + 1e-9  # a mean is at most the largest

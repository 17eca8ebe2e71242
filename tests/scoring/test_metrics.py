"""omniseg.scoring.metrics against MONAI on generated masks, and the documented empty-mask conventions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

import torch

from omniseg.scoring import metrics


@pytest.fixture(scope="module")
def monai_metrics():
    """MONAI is the oracle of two tests and a test extra, not a dependency: only they may skip without it."""
    return pytest.importorskip("monai.metrics")


def random_pairs(n: int, seed: int = 0):
    """Blobs of varied shape against shifted, grown, shrunk and noisy copies."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = int(rng.integers(40, 130)), int(rng.integers(40, 130))
        ref = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            ref[max(y - 12, 0) : y + int(rng.integers(3, 20)), max(x - 9, 0) : x + int(rng.integers(3, 20))] = True
        ref = ndimage.binary_opening(ref) if rng.random() < 0.5 else ref
        if not ref.any():
            ref[h // 2, w // 2] = True
        pred = np.roll(ref, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
        pred = ndimage.binary_dilation(pred, iterations=int(rng.integers(0, 4)))
        pred ^= rng.random((h, w)) < 0.01
        if not pred.any():
            pred[0, 0] = True
        yield pred, ref


def monai_scores(monai_metrics, pred: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    yp = torch.from_numpy(pred)[None, None].float()
    yr = torch.from_numpy(ref)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = monai_metrics.DiceMetric(include_background=True, reduction="none", ignore_empty=False)(yp, yr)
        i = monai_metrics.MeanIoU(include_background=True, reduction="none", ignore_empty=False)(yp, yr)
        h = monai_metrics.compute_hausdorff_distance(yp, yr, include_background=True, percentile=95)
    return float(d), float(i), float(h)


def test_dice_iou_match_monai_to_1e6_and_hd95_within_a_pixel(monai_metrics):
    n = 0
    for pred, ref in random_pairs(60):
        ours = metrics.score(pred, ref)
        d, i, h = monai_scores(monai_metrics, pred, ref)
        assert ours["dice"] == pytest.approx(d, abs=1e-6)
        assert ours["iou"] == pytest.approx(i, abs=1e-6)
        assert abs(ours["hd95"] - h) <= 1.0
        n += 1
    assert n == 60


def test_dice_iou_match_monai_on_empty_cases_with_ignore_empty_false(monai_metrics):
    z = np.zeros((20, 20), bool)
    one = z.copy()
    one[5:9, 5:9] = True
    for pred, ref in ((z, z), (z, one), (one, z)):
        d, i, _ = monai_scores(monai_metrics, pred, ref)
        ours = metrics.score(pred, ref)
        assert (ours["dice"], ours["iou"]) == pytest.approx((d, i))


@pytest.mark.parametrize(
    "pred_empty, ref_empty, dice, iou, hd",
    [
        (True, True, 1.0, 1.0, 0.0),  # a correct "nothing here"
        (True, False, 0.0, 0.0, "diag"),  # a miss is the worst distance, never 0, NaN or inf
        (False, True, 0.0, 0.0, "diag"),
    ],
)
def test_empty_mask_conventions(pred_empty, ref_empty, dice, iou, hd):
    h, w = 30, 40
    full = np.zeros((h, w), bool)
    full[10:20, 10:20] = True
    pred = np.zeros((h, w), bool) if pred_empty else full
    ref = np.zeros((h, w), bool) if ref_empty else full
    s = metrics.score(pred, ref, with_cldice=True)
    assert s["dice"] == dice and s["iou"] == iou
    assert s["hd95"] == (math.hypot(h, w) if hd == "diag" else hd)
    assert s["cldice"] == (1.0 if pred_empty and ref_empty else 0.0)
    # an empty prediction on a lesion never earns a perfect precision or recall
    if pred_empty and not ref_empty:
        assert s["precision"] == 0.0 and s["recall"] == 0.0
    if pred_empty and ref_empty:
        assert s["precision"] == 1.0 and s["recall"] == 1.0 and s["specificity"] == 1.0


def test_counts_are_taken_inside_the_region_of_interest():
    ref = np.zeros((10, 10), bool)
    ref[2:5, 2:5] = True
    pred = ref.copy()
    pred[8:, 8:] = True  # false positives outside the ROI must not count
    roi = np.zeros((10, 10), bool)
    roi[:7, :7] = True
    c = metrics.confusion(pred, ref, roi)
    assert (c.tp, c.fp, c.fn, c.tn) == (9, 0, 0, 49 - 9)
    assert metrics.dice(c) == 1.0
    assert metrics.hd95(pred, ref, roi) == 0.0
    assert metrics.confusion(pred, ref).fp == 4


def test_scores_from_known_counts():
    c = metrics.Counts(tp=6, fp=2, fn=4, tn=88)
    assert metrics.dice(c) == pytest.approx(12 / 18)
    assert metrics.iou(c) == pytest.approx(6 / 12)
    assert metrics.precision(c) == pytest.approx(6 / 8)
    assert metrics.recall(c) == pytest.approx(6 / 10)
    assert metrics.specificity(c) == pytest.approx(88 / 90)


def test_hd95_of_a_shift_equals_the_shift():
    ref = np.zeros((60, 60), bool)
    ref[20:40, 20:40] = True
    pred = np.roll(ref, 3, axis=1)
    assert metrics.hd95(pred, ref) == pytest.approx(3.0)


def test_cldice_is_one_for_identical_vessels_and_lower_for_broken_ones():
    v = np.zeros((40, 40), bool)
    v[19:22, 2:38] = True
    v[2:38, 19:22] = True
    assert metrics.cldice(v, v) == pytest.approx(1.0)
    broken = v.copy()
    broken[:, 10:16] = False
    assert 0.0 < metrics.cldice(broken, v) < 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.score(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_cldice_is_the_harmonic_mean_of_topology_precision_and_sensitivity():
    """One-pixel lines are their own skeletons: pred = the reference line plus a second, longer one.
    Tprec = 20 / 50, Tsens = 20 / 20, so clDice = 2 * 0.4 * 1 / 1.4 (an arithmetic mean would be 0.7)."""
    ref = np.zeros((40, 60), bool)
    ref[10, 10:30] = True
    pred = ref.copy()
    pred[30, 10:40] = True
    assert metrics.cldice(pred, ref) == pytest.approx(2 * 0.4 / 1.4, abs=1e-9)
    assert metrics.cldice(ref, pred) == pytest.approx(2 * 0.4 / 1.4, abs=1e-9)  # symmetric


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@st.composite
def mask_pairs(draw):
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    masks = arrays(np.bool_, (h, w))
    return draw(masks), draw(masks), draw(st.one_of(st.none(), masks))


@given(mask_pairs())
def test_scores_are_bounded_symmetric_and_consistent(pair):
    """Dice and IoU in [0, 1], symmetric in prediction and reference, Dice = 2 IoU / (1 + IoU); precision and
    recall swap when the masks do; counts add up to the region; both empty: 1; exactly one empty: 0."""
    pred, ref, roi = pair
    c = metrics.confusion(pred, ref, roi)
    assert c.tp + c.fp + c.fn + c.tn == (int(roi.sum()) if roi is not None else pred.size)
    d, j = metrics.dice(c), metrics.iou(c)
    assert 0 <= j <= d <= 1
    assert d == pytest.approx(2 * j / (1 + j), abs=1e-12)
    swapped = metrics.confusion(ref, pred, roi)
    assert metrics.dice(swapped) == d and metrics.iou(swapped) == j
    assert metrics.precision(c) == metrics.recall(swapped)
    inside_p = pred if roi is None else pred & roi
    inside_r = ref if roi is None else ref & roi
    if not inside_p.any() and not inside_r.any():
        assert d == j == 1.0
    elif not inside_p.any() or not inside_r.any():
        assert d == j == 0.0
    elif np.array_equal(inside_p, inside_r):
        assert d == j == 1.0
    row = metrics.score(pred, ref, roi)
    assert row["dice"] == d and row["iou"] == j and row["tp"] == c.tp and row["pred_px"] == c.tp + c.fp
    assert all(0 <= row[k] <= 1 for k in ("precision", "recall", "specificity"))
    assert row["hd95"] >= 0


def test_a_metric_name_is_checked_when_the_metric_is_made():
    """A name that cannot be a store column, or that is a count column, is refused at definition (an extension
    fails to load, naming it), never when the first score is written after the predictions were paid for."""
    fn = lambda p, r, roi, c: 0.0  # noqa: E731
    assert metrics.Metric("area_ratio2", fn, "").name == "area_ratio2"
    assert metrics.Metric("a" * 41, fn, "").summary == "mean"
    assert metrics.Metric("area_median", fn, "", summary="median").summary == "median"
    for bad in ("", "Area", "2x", "area-ratio", "a" * 42, "tp", "ref_px", 7):
        with pytest.raises(ValueError, match="metric name"):
            metrics.Metric(bad, fn, "")
    with pytest.raises(ValueError, match="summary must be 'mean' or 'median'"):
        metrics.Metric("x", fn, "", summary="max")


# -- literal conventions and a brute-force oracle (each against a mutant that survived) ----------------------------
def test_zero_denominators_follow_the_other_error():
    c = metrics.Counts
    assert metrics.precision(c(0, 0, 0, 5)) == 1.0 and metrics.precision(c(0, 0, 3, 5)) == 0.0
    assert metrics.recall(c(0, 0, 0, 5)) == 1.0 and metrics.recall(c(0, 3, 0, 5)) == 0.0
    assert metrics.specificity(c(3, 0, 0, 0)) == 1.0 and metrics.specificity(c(3, 0, 2, 0)) == 0.0
    assert metrics.dice(c(0, 0, 0, 9)) == 1.0 and metrics.iou(c(0, 0, 0, 9)) == 1.0
    assert metrics.dice(c(1, 1, 0, 0)) == pytest.approx(2 / 3) and metrics.iou(c(1, 1, 0, 0)) == 0.5
    assert (c(2, 3, 4, 5).pred_px, c(2, 3, 4, 5).ref_px) == (5, 6)


def _hd_brute(pred, ref, q=95.0):
    """Boundaries by scipy's erosion with a cross (outside the image is background), all pairwise distances."""
    from scipy import ndimage

    def edges(m):
        er = ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
        return np.argwhere(m & ~er).astype(float)

    a, b = edges(pred), edges(ref)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(axis=1), q), np.percentile(d.min(axis=0), q))


def test_hd95_equals_a_brute_force_computation_including_masks_on_the_image_border():
    rng = np.random.default_rng(11)
    for i in range(12):
        h, w = rng.integers(8, 30, size=2)
        pred, ref = rng.random((h, w)) < 0.3, rng.random((h, w)) < 0.3
        if i % 3 == 0:
            pred[0, :] = ref[:, -1] = True  # shapes that touch the border: the crop's margin must not cut them
        if not (pred.any() and ref.any()):
            continue
        for q in (95.0, 50.0, 100.0):
            assert metrics.hd95(pred, ref, percentile=q) == pytest.approx(_hd_brute(pred, ref, q), abs=1e-9), (i, q)
    a = np.zeros((20, 30), bool)
    a[5:8, 4:9] = True
    b = np.zeros((20, 30), bool)
    b[12:15, 20:28] = True
    roi = np.zeros((20, 30), bool)
    roi[:, :25] = True
    assert metrics.hd95(a, b, roi) == pytest.approx(_hd_brute(a, b & roi), abs=1e-9)
    assert metrics.hd95(a, np.zeros_like(a)) == math.hypot(20, 30)
    assert metrics.hd95(a, b & ~roi, roi) == math.hypot(20, 30)  # the reference lies outside the region


def test_the_percentile_of_hd95_is_numpys_to_the_last_bit():
    rng = np.random.default_rng(5)
    for i in range(400):
        n = int(rng.integers(1, 60))
        values = np.sqrt(rng.integers(0, 400, n).astype(float)) if i % 2 else rng.random(n) * 100
        for q in (0.0, 37.5, 50.0, 95.0, 99.9, 100.0, float(rng.random() * 100)):
            kept = values.copy()
            assert metrics._percentile(values, q) == np.percentile(values, q), (i, n, q)
            assert (values == kept).all()  # the distances are not reordered under the caller


def test_only_the_metrics_a_task_asks_for_are_computed_and_cldice_is_null_otherwise():
    names = [m.name for m in metrics.active()]
    assert names == ["dice", "iou", "precision", "recall", "specificity", "hd95", "nsd", "masd", "boundary_iou",
                     "box_iou", "pointing", "det_precision", "det_recall", "det_f1"]
    assert [m.name for m in metrics.active(("cldice",))][9] == "cldice"
    v = np.zeros((12, 12), bool)
    v[5, 1:11] = True
    plain = metrics.score(v, v)
    assert plain["cldice"] is None and set(plain) == set(metrics.SCORE_COLUMNS)
    assert metrics.score(v, v, include=("cldice",))["cldice"] == 1.0
    assert metrics.score(v, v, with_cldice=True)["cldice"] == 1.0
    assert (plain["tp"], plain["fp"], plain["fn"], plain["tn"], plain["pred_px"], plain["ref_px"]) == (10, 0, 0, 134, 10, 10)
    with pytest.raises(ValueError, match="region of interest"):
        metrics.confusion(v, v, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="2-D"):
        metrics.confusion(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    roi = np.zeros((12, 12), bool)
    roi[:, :6] = True
    c = metrics.confusion(v, np.zeros_like(v), roi)
    assert (c.tp, c.fp, c.fn, c.tn) == (0, 5, 0, 67)


def test_cldice_of_one_pixel_skeletons_disjoint_masks_and_inside_a_region_of_interest():
    dot = np.zeros((9, 12), bool)
    dot[4, 4] = True  # a skeleton of one pixel: each side's share is 1 / 1
    assert metrics.cldice(dot, dot) == 1.0
    square = np.zeros((9, 12), bool)
    square[3:6, 3:6] = True
    other = np.roll(square, 5, axis=1)  # columns 8 to 10
    assert metrics.cldice(square, other) == 0.0  # no skeleton pixel inside the other mask, both ways
    roi = np.zeros((9, 12), bool)
    roi[:, :7] = True  # the stray square outside the region is not counted
    assert metrics.cldice(square | other, square, roi) == 1.0 and metrics.cldice(square | other, square) < 1.0


def test_masks_of_any_number_type_count_their_non_zero_pixels_and_every_metric_sees_the_region():
    rng = np.random.default_rng(8)
    pred, ref, roi = rng.random((3, 20, 20)) > 0.5
    as_bool = metrics.score(pred, ref, roi, with_cldice=True)
    # 0/2, 0/1 and 0/4 read as masks, not as numbers (whose bits share nothing: 2 & 1 == 0)
    p8, r32, roi8 = pred.astype(np.uint8) * 2, ref.astype(np.int32), roi.astype(np.uint8) * 4
    assert metrics.score(p8, r32, roi8, with_cldice=True) == as_bool
    assert metrics.confusion(p8, r32, roi8) == metrics.confusion(pred, ref, roi)  # each function on its own too
    assert metrics.hd95(p8, r32, roi8) == metrics.hd95(pred, ref, roi)
    assert metrics.cldice(p8, r32) == metrics.cldice(pred, ref)
    assert as_bool["hd95"] == metrics.hd95(pred, ref, roi) != metrics.hd95(pred, ref)
    assert as_bool["cldice"] == metrics.cldice(pred, ref, roi)
    with pytest.raises(ValueError, match="region of interest"):
        metrics.hd95(pred, ref, roi[:, :10])

"""Localisation metrics: boxes against torchvision's box_iou, the empty-case conventions, and properties that any
pair of masks keeps (identical: 1, disjoint: 0, symmetry, a point on the border)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from torchvision.ops import box_iou as tv_box_iou

from omniseg.scoring import localisation as loc
from omniseg.scoring import metrics


def rect(h, w, r0, c0, r1, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_box_iou_is_torchvisions_to_1e9_on_random_boxes():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 500, (40, 2))
    a = np.hstack([a, a + rng.uniform(0.5, 300, (40, 2))])
    b = rng.uniform(0, 500, (30, 2))
    b = np.hstack([b, b + rng.uniform(0.5, 300, (30, 2))])
    want = tv_box_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)).numpy()
    assert np.allclose(loc.box_iou(a, b), want, rtol=0, atol=1e-9)


def test_objects_are_8_connected_with_pixel_edge_boxes_and_centroid_pixels():
    m = rect(10, 12, 1, 2, 4, 6)
    m[4, 6] = True  # touches the corner: the same object (8-connected)
    m[8, 10] = True  # one pixel alone
    boxes, centres = loc.objects(m)
    assert boxes.tolist() == [[2, 1, 7, 5], [10, 8, 11, 9]] and centres.tolist()[1] == [8, 10]


def test_empty_cases_follow_the_pixel_metrics_conventions():
    empty, lesion = np.zeros((8, 8), bool), rect(8, 8, 2, 2, 5, 5)
    for f in (loc.matched_box_iou, loc.pointing, loc.det_precision, loc.det_recall, loc.det_f1):
        assert f(empty, empty) == 1.0 and f(lesion, empty) == 0.0
    assert loc.matched_box_iou(empty, lesion) == 0.0 and loc.det_f1(empty, lesion) == 0.0
    assert loc.pointing(empty, lesion) == 0.0 and loc.det_recall(empty, lesion) == 0.0
    assert loc.det_precision(empty, lesion) == 0.0  # nothing claimed, but something missed


def test_a_filled_box_around_a_round_lesion_localises_perfectly_where_its_dice_cannot():
    yy, xx = np.mgrid[:64, :64]
    lesion = (yy - 32) ** 2 + (xx - 32) ** 2 <= 20 ** 2
    box = rect(64, 64, 12, 12, 53, 53)  # the lesion's own bounding box, filled
    s = metrics.score(box, lesion)
    assert s["dice"] < 0.9 and s["box_iou"] == 1.0 and s["det_f1"] == 1.0 and s["pointing"] == 1.0
    point = np.zeros((64, 64), bool)
    point[32, 32] = True  # a pointing answer: one pixel at the centre
    s = metrics.score(point, lesion)
    assert s["dice"] < 0.01 and s["pointing"] == 1.0 and s["det_f1"] == 0.0


def test_a_point_on_the_references_border_hits_and_one_beside_it_misses():
    ref = rect(20, 20, 5, 5, 11, 11)
    on, beside = np.zeros_like(ref), np.zeros_like(ref)
    on[5, 5] = True
    beside[4, 5] = True
    assert loc.pointing(on, ref) == 1.0 and loc.pointing(beside, ref) == 0.0
    two = on.copy()
    two[15, 15] = True  # two points apart: one hit (adjacent pixels would be one object)
    assert loc.pointing(two, ref) == 0.5


def test_objects_are_paired_one_to_one_and_unpaired_ones_count_zero():
    ref = rect(40, 40, 2, 2, 10, 10) | rect(40, 40, 20, 20, 30, 30)
    pred = rect(40, 40, 2, 2, 10, 10)  # one of two found, exactly
    assert loc.matched_box_iou(pred, ref) == 0.5 and loc.detections(pred, ref) == (1, 1, 2)
    assert loc.det_precision(pred, ref) == 1.0 and loc.det_recall(pred, ref) == 0.5
    assert loc.det_f1(pred, ref) == pytest.approx(2 / 3)
    shifted = rect(40, 40, 4, 2, 12, 10)  # box IoU 6*8 / (2*64 - 48) = 0.6: a detection
    assert loc.detections(shifted, ref)[0] == 1 and loc.matched_box_iou(shifted, ref) == pytest.approx(0.3)
    far = rect(40, 40, 6, 2, 14, 10)  # IoU 4*8 / 96 = 1/3: no detection
    assert loc.detections(far, ref)[0] == 0


def test_the_region_of_interest_counts_as_for_the_pixel_metrics():
    ref, pred = rect(10, 10, 0, 0, 4, 4), rect(10, 10, 6, 6, 9, 9)
    roi = rect(10, 10, 0, 0, 5, 5)
    assert loc.det_f1(pred, ref) == 0.0 and loc.det_f1(pred, ref, roi) == 0.0
    assert loc.det_precision(pred, ref, roi) == 0.0 and loc.det_recall(pred, ref, roi) == 0.0
    assert loc.pointing(pred, ref, roi * 4) == 0.0  # a 0/4 region is a region
    assert loc.matched_box_iou(ref, ref, roi) == 1.0


masks = st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(1, 8), st.integers(1, 8)),
                 max_size=4).map(lambda rs: np.logical_or.reduce(
                     [rect(24, 24, r, c, r + h, c + w) for r, c, h, w in rs] or [np.zeros((24, 24), bool)]))


@given(masks, masks)
def test_identical_is_1_symmetric_and_disjoint_is_0(a, b):
    for f in (loc.matched_box_iou, loc.pointing, loc.det_precision, loc.det_recall, loc.det_f1):
        assert f(a, a) == 1.0 and 0.0 <= f(a, b) <= 1.0
    assert loc.matched_box_iou(a, b) == pytest.approx(loc.matched_box_iou(b, a), abs=1e-12)
    assert loc.det_f1(a, b) == loc.det_f1(b, a) and loc.det_precision(a, b) == loc.det_recall(b, a)
    boxes_a, boxes_b = loc.objects(a)[0], loc.objects(b)[0]
    if len(boxes_a) and len(boxes_b) and (loc.box_iou(boxes_a, boxes_b) == 0).all():
        assert loc.matched_box_iou(a, b) == 0.0 and loc.det_f1(a, b) == 0.0


@given(masks, masks)
def test_the_five_from_one_reading_equal_each_function_alone(a, b):
    got = loc.scores(a, b)
    assert got == {"box_iou": loc.matched_box_iou(a, b), "pointing": loc.pointing(a, b),
                   "det_precision": loc.det_precision(a, b), "det_recall": loc.det_recall(a, b),
                   "det_f1": loc.det_f1(a, b)}
    row = metrics.score(a, b)
    assert {k: row[k] for k in got} == got
    a[0, 0] = not a[0, 0]  # the same array changed: score reads it again
    assert metrics.score(a, b)["box_iou"] == loc.matched_box_iou(a, b)

"""Metrics over volumes in millimetres (issue 40's first piece): Dice and IoU over the volume, HD95, NSD and MASD
on its surfaces with an anisotropic voxel spacing, equal to MONAI's with the same spacing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from omniseg.scoring import metrics


def random_volumes(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = tuple(int(v) for v in rng.integers(12, 40, 3))
        ref = np.zeros(shape, bool)
        for _ in range(int(rng.integers(1, 3))):
            c = [int(rng.integers(0, s)) for s in shape]
            r = [int(rng.integers(2, 8)) for _ in shape]
            ref[tuple(slice(max(ci - ri, 0), ci + ri) for ci, ri in zip(c, r))] = True
        pred = np.roll(ref, tuple(int(v) for v in rng.integers(-3, 4, 3)), axis=(0, 1, 2))
        pred = ndimage.binary_dilation(pred, iterations=int(rng.integers(0, 3)))
        pred ^= rng.random(shape) < 0.002
        yield pred, ref


@pytest.fixture(scope="module")
def monai_metrics():
    return pytest.importorskip("monai.metrics")


@pytest.mark.parametrize("spacing", [None, (3.0, 0.8, 0.8), (0.7, 1.5, 2.5)])
def test_volume_distances_in_mm_equal_monais_with_the_same_spacing(monai_metrics, spacing):
    for i, (pred, ref) in enumerate(random_volumes(12, seed=4)):
        tau = 2.37
        ours = metrics.volume_scores(pred, ref, spacing, tolerance=tau)
        yp, yr = (torch.from_numpy(a)[None, None].float() for a in (pred, ref))
        sp = list(spacing) if spacing else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = float(monai_metrics.compute_hausdorff_distance(yp, yr, include_background=True, percentile=95, spacing=sp))
            nsd = float(monai_metrics.compute_surface_dice(yp, yr, [tau], include_background=True, spacing=sp))
            asd = [float(monai_metrics.compute_average_surface_distance(a, b, include_background=True, spacing=sp))
                   for a, b in ((yp, yr), (yr, yp))]
            dice = float(monai_metrics.DiceMetric(include_background=True, reduction="none")(yp, yr))
        assert ours["dice"] == pytest.approx(dice, abs=1e-6), i
        assert ours["hd95"] == pytest.approx(hd, rel=1e-4, abs=1e-4), i
        assert ours["nsd"] == pytest.approx(nsd, abs=1e-6), i
        assert ours["masd"] == pytest.approx(sum(asd) / 2, rel=1e-4, abs=1e-4), i


def test_swapping_the_spacings_axes_changes_hd95_so_the_axes_are_not_confused():
    ref = np.zeros((30, 30, 30), bool)
    ref[10:20, 10:20, 10:20] = True
    pred = np.roll(ref, 3, axis=0)  # moved along the first axis (the slices) only
    thick, thin = metrics.volume_scores(pred, ref, (5.0, 0.5, 0.5)), metrics.volume_scores(pred, ref, (0.5, 0.5, 5.0))
    assert thick["hd95"] == pytest.approx(15.0) and thin["hd95"] == pytest.approx(1.5)
    assert thick["dice"] == thin["dice"] == pytest.approx(0.7)  # overlap has no unit
    assert metrics.volume_scores(pred, ref)["hd95"] == pytest.approx(3.0)  # voxels without a spacing


def test_volume_empty_cases_follow_the_image_conventions():
    empty, some = np.zeros((6, 8, 10), bool), np.zeros((6, 8, 10), bool)
    some[2:4, 2:4, 2:4] = True
    both = metrics.volume_scores(empty, empty, (2.0, 1.0, 1.0))
    assert (both["dice"], both["hd95"], both["nsd"], both["masd"]) == (1.0, 0.0, 1.0, 0.0)
    one = metrics.volume_scores(some, empty, (2.0, 1.0, 1.0))
    assert one["dice"] == 0.0 and one["nsd"] == 0.0
    assert one["hd95"] == one["masd"] == pytest.approx(math.sqrt(12 ** 2 + 8 ** 2 + 10 ** 2))
    with pytest.raises(ValueError, match="a spacing of 2 values for 3-D masks"):
        metrics.volume_scores(some, some, (1.0, 1.0))

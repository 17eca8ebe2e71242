"""Difficulty read from the image, not from any model's score: lesion size and lesion contrast.

Strata built from these carry no selection bias (no model chose them), so they control the
"hardest cases" of the study: `omniseg curate --strata` stores, per sample, the reference lesion's
share of the image (inside the region of interest) and its contrast-to-noise ratio against a ring
of surrounding tissue, and the lowest and highest quartile of each as subsets.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..datasets.base import Sample

#: subset names of the image strata, (hard, easy) per feature
STRATA = {"lesion_share": ("lesion-small", "lesion-large"), "contrast": ("contrast-low", "contrast-high")}
QUANTILE = 0.25


def features(sample: Sample) -> dict[str, float]:
    """``lesion_share``: reference pixels / region-of-interest pixels. ``contrast``: |mean grey inside -
    mean grey in a surrounding ring| / pooled standard deviation (NaN without a lesion or a ring). A volume's: voxels,
    its stored intensities and a surrounding shell."""
    roi = sample.roi if sample.roi is not None else np.ones(sample.mask.shape, bool)
    mask = sample.mask & roi
    area = int(mask.sum())
    share = area / max(int(roi.sum()), 1)
    if area == 0:
        return {"lesion_share": share, "contrast": math.nan}
    if sample.is_volume:  # its intensities as stored (a ratio: their unit cancels); the ring is a shell in 3-D
        grey = sample.image.astype(np.float32)
    else:
        grey = sample.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    width = max(3, round(0.1 * math.sqrt(area)))
    ring = ndimage.binary_dilation(mask, iterations=width) & ~mask & roi
    if ring.sum() < 10:
        return {"lesion_share": share, "contrast": math.nan}
    inside, around = grey[mask], grey[ring]
    pooled = math.sqrt((inside.var() + around.var()) / 2) + 1e-6
    return {"lesion_share": share, "contrast": float(abs(inside.mean() - around.mean()) / pooled)}


def strata(values: dict[str, dict[str, float]]) -> dict[str, list[tuple[str, float]]]:
    """For each feature, the samples of its lowest and highest quartile (ties by id), with their values.

    Samples without a lesion are left out: their difficulty is not a lesion's.
    """
    out = {}
    for feature, (low_name, high_name) in STRATA.items():
        rows = sorted((v[feature], sid) for sid, v in values.items()
                      if v["lesion_share"] > 0 and not math.isnan(v[feature]))
        k = int(len(rows) * QUANTILE)
        if k == 0:
            continue
        out[low_name] = [(sid, val) for val, sid in rows[:k]]
        out[high_name] = [(sid, val) for val, sid in sorted(rows, key=lambda r: (-r[0], r[1]))[:k]]
    return out

"""Throughput of omniseg's per-image metric set against MONAI's, measured side by side.

Loads the Kvasir-SEG masks, makes a perturbed copy of each (shifted, dilated or eroded,
with a few pixels flipped), then computes per image: confusion counts, Dice, IoU,
precision, recall, specificity, HD95, NSD (tolerance 2) and MASD, once with omniseg.scoring.metrics and once
with MONAI (DiceMetric ignore_empty=False, MeanIoU, ConfusionMatrixMetric, HausdorffDistanceMetric
percentile=95, compute_surface_dice, compute_average_surface_distance both ways), with a pixel spacing when
--spacing is given. Prints images/s for each, the ratio, and the largest disagreement of each metric (distances
relative to their size: MONAI answers in float32); boundary IoU against Cheng et al.'s reference code (OpenCV
erosions) when OpenCV is installed.

The two sides take turns on chunks of 50 images (MONAI's metric objects made, and both warmed up,
before the clock starts), so a neighbour's load on a shared machine falls on both alike.

    python scripts/bench_metrics.py --root ../shared/data/kvasir-seg/Kvasir-SEG [--limit 1000]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from omniseg.scoring import metrics
from omniseg.datasets.base import read_mask


def perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.roll(mask, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
    k = int(rng.integers(0, 6))
    out = ndimage.binary_dilation(out, iterations=k) if rng.random() < 0.5 else ndimage.binary_erosion(out, iterations=k)
    flip = rng.random(out.shape) < 0.001
    return out ^ flip


def with_omniseg(pairs, geometry=metrics.PIXELS):
    return [metrics.score(p, r, geometry=geometry) for p, r in pairs]


def cheng_boundary_iou(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """Boundary IoU as bowenc0221/boundary-iou-api computes it (dilation ratio 0.02); None without OpenCV."""
    try:
        import cv2
    except ImportError:
        return None
    d = max(1, int(round(0.02 * np.hypot(*ref.shape))))

    def band(m):
        m = m.astype(np.uint8)
        eroded = cv2.erode(cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0), np.ones((3, 3), np.uint8),
                           iterations=d)[1:-1, 1:-1]
        return (m - eroded).astype(bool)

    a, b = band(pred), band(ref)
    return float((a & b).sum() / max((a | b).sum(), 1))


def monai_scorer(spacing=None, tau: float = 2.0):
    """MONAI's equivalent of the per-image set, as a function of a list of pairs."""
    import torch
    from monai.metrics import (ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric, MeanIoU,
                               compute_average_surface_distance, compute_surface_dice)

    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
    conf = ConfusionMatrixMetric(include_background=True, metric_name=["precision", "recall", "specificity"], reduction="none")
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    sp = list(spacing) if spacing else None

    def run(pairs):
        rows = []
        for p, r in pairs:
            yp = torch.from_numpy(p)[None, None].float()
            yr = torch.from_numpy(r)[None, None].float()
            d, i, h = dice(yp, yr), iou(yp, yr), hd(yp, yr, spacing=sp)
            c = conf(yp, yr)
            nsd = compute_surface_dice(yp, yr, [tau], include_background=True, spacing=sp)
            there = compute_average_surface_distance(yp, yr, include_background=True, spacing=sp)
            back = compute_average_surface_distance(yr, yp, include_background=True, spacing=sp)
            rows.append({"dice": float(d), "iou": float(i), "hd95": float(h), "nsd": float(nsd),
                         "masd": (float(there) + float(back)) / 2})
            del c
        return rows

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/kvasir-seg/Kvasir-SEG"))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"), help="a pixel spacing in mm")
    args = ap.parse_args()
    spacing = tuple(args.spacing) if args.spacing else None
    geometry = metrics.Geometry(spacing=spacing, tolerance=2.0)
    files = sorted((args.root / "masks").glob("*.jpg"))[: args.limit]
    if not files:
        raise SystemExit(f"no masks under {args.root}/masks")
    rng = np.random.default_rng(0)
    refs = [read_mask(f) for f in files]
    pairs = [(perturb(r, rng), r) for r in refs]
    mpix = sum(r.size for r in refs) / len(refs) / 1e6
    print(f"{len(pairs)} Kvasir-SEG masks, {mpix:.2f} Mpix on average")

    warnings.filterwarnings("ignore")
    with_monai = monai_scorer(spacing, 2.0)
    with_omniseg(pairs[:5], geometry), with_monai(pairs[:5])  # imports and first-call set-up off the clock
    ours, theirs, t_ours, t_monai = [], [], 0.0, 0.0
    for i in range(0, len(pairs), 50):
        chunk = pairs[i:i + 50]
        t = time.perf_counter()
        ours += with_omniseg(chunk, geometry)
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        theirs += with_monai(chunk)
        t_monai += time.perf_counter() - t

    both = [(a, b) for a, b in zip(ours, theirs) if a["ref_px"] and a["pred_px"]]  # MONAI: nan with an empty mask
    diff = {k: max(abs(a[k] - b[k]) / (max(abs(b[k]), 1.0) if k in ("hd95", "masd") else 1.0) for a, b in both)
            for k in ("dice", "iou", "nsd", "hd95", "masd")}
    cheng = [cheng_boundary_iou(p, r) for p, r in pairs]
    if cheng[0] is not None:
        diff["boundary_iou (vs Cheng et al.)"] = max(abs(o["boundary_iou"] - c) for o, c in zip(ours, cheng))
    print(f"omniseg: {len(pairs) / t_ours:8.1f} images/s ({t_ours:.2f}s)")
    print(f"MONAI:   {len(pairs) / t_monai:8.1f} images/s ({t_monai:.2f}s)")
    print(f"ratio omniseg/MONAI: {t_monai / t_ours:.1f}x")
    print(f"units: {geometry.unit}" + (f" (spacing {spacing[0]} x {spacing[1]} mm)" if spacing else ""))
    print("largest |omniseg - MONAI| (hd95, masd relative): " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))


if __name__ == "__main__":
    main()

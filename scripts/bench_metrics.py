"""Throughput of omniseg's per-image metric set against MONAI's, measured side by side.

Loads the Kvasir-SEG masks, makes a perturbed copy of each (shifted, dilated or eroded,
with a few pixels flipped), then computes per image: confusion counts, Dice, IoU,
precision, recall, specificity and HD95, once with omniseg.scoring.metrics and once with MONAI
(DiceMetric ignore_empty=False, MeanIoU, ConfusionMatrixMetric, HausdorffDistanceMetric
percentile=95). Prints images/s for each, the ratio, and the largest disagreement.

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


def with_omniseg(pairs):
    return [metrics.score(p, r) for p, r in pairs]


def monai_scorer():
    """MONAI's equivalent of the per-image set, as a function of a list of pairs."""
    import torch
    from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric, MeanIoU

    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
    conf = ConfusionMatrixMetric(include_background=True, metric_name=["precision", "recall", "specificity"], reduction="none")
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")

    def run(pairs):
        rows = []
        for p, r in pairs:
            yp = torch.from_numpy(p)[None, None].float()
            yr = torch.from_numpy(r)[None, None].float()
            d, i, h = dice(yp, yr), iou(yp, yr), hd(yp, yr)
            c = conf(yp, yr)
            rows.append({"dice": float(d), "iou": float(i), "hd95": float(h)})
            del c
        return rows

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/kvasir-seg/Kvasir-SEG"))
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args()
    files = sorted((args.root / "masks").glob("*.jpg"))[: args.limit]
    if not files:
        raise SystemExit(f"no masks under {args.root}/masks")
    rng = np.random.default_rng(0)
    refs = [read_mask(f) for f in files]
    pairs = [(perturb(r, rng), r) for r in refs]
    mpix = sum(r.size for r in refs) / len(refs) / 1e6
    print(f"{len(pairs)} Kvasir-SEG masks, {mpix:.2f} Mpix on average")

    warnings.filterwarnings("ignore")
    with_monai = monai_scorer()
    with_omniseg(pairs[:5]), with_monai(pairs[:5])  # imports and first-call set-up off the clock
    ours, theirs, t_ours, t_monai = [], [], 0.0, 0.0
    for i in range(0, len(pairs), 50):
        chunk = pairs[i:i + 50]
        t = time.perf_counter()
        ours += with_omniseg(chunk)
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        theirs += with_monai(chunk)
        t_monai += time.perf_counter() - t

    diff = {k: max(abs(a[k] - b[k]) for a, b in zip(ours, theirs)) for k in ("dice", "iou", "hd95")}
    print(f"omniseg: {len(pairs) / t_ours:8.1f} images/s ({t_ours:.2f}s)")
    print(f"MONAI:   {len(pairs) / t_monai:8.1f} images/s ({t_monai:.2f}s)")
    print(f"ratio omniseg/MONAI: {t_monai / t_ours:.1f}x")
    print("largest |omniseg - MONAI|: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))


if __name__ == "__main__":
    main()

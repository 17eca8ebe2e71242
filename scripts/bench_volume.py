"""Peak memory of one volume through a run: read (nibabel), a 2-D model slice by slice (omniseg.models.slicewise),
scored in mm (omniseg.scoring.metrics.volume_scores) and its mask written as NIfTI (the store).

Each size is measured in a fresh process (its peak resident memory, less the process's own after the imports), for a
CT of 512 x 512 x DEPTH voxels in int16, and printed against the volume's bytes: bounded means the peak grows with
the volume (a few copies of it), not with the slices' images held at once. Usage:

    python scripts/bench_volume.py            # depths 100 and 400 (the issue's 512 x 512 x 400)
    python scripts/bench_volume.py --depths 50 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

MEASURE = r"""
import json, resource, sys, time

import numpy as np
from omniseg import datasets, models
from omniseg.config import ModelConfig, SliceConfig, TaskConfig
from omniseg.inference.runner import score_prediction
from omniseg.models.slicewise import SliceWise
from omniseg.store import results as store_results
from omniseg.store.database import Store

root = Path(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
ds = datasets.open("nifti", root, max_pixels=10**10)
ref = ds.refs()[0]
sample = ds.load(ref)
t_read = time.perf_counter()
cfg = TaskConfig.model_validate({"task": "bench", "dataset": {"name": "nifti", "root": str(root)},
                                 "models": [{"name": "otsu", "kind": "otsu"}]})
otsu = SliceWise(models.build(ModelConfig(name="otsu", kind="otsu", options={"foreground": "bright"})),
                 SliceConfig(window=(40, 400)))
pred = otsu.predict(sample)
t_pred = time.perf_counter()
pred, scores = score_prediction(cfg, sample, pred)
t_score = time.perf_counter()
with Store(root / "s.sqlite") as st:
    store_results.record(st, 0, "bench", ref.id, "otsu", status=pred.status, mask=pred.mask, scores=scores, grid=sample.affine)
t_write = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "volume_bytes": int(sample.image.nbytes),
                  "seconds": {"read": t_read - t0, "predict": t_pred - t_read, "score": t_score - t_pred,
                              "write": t_write - t_score}, "dice": scores["dice"], "hd95_mm": scores["hd95"]}))
"""

WRITE = r"""
import sys

import nibabel as nib
import numpy as np
root, depth = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
d, h, w = depth, 512, 512
z, y, x = np.ogrid[:d, :h, :w]
body = ((y - h / 2) / (0.45 * h)) ** 2 + ((x - w / 2) / (0.45 * w)) ** 2 <= 1
lesion = (((z - d / 2) / (0.3 * d)) ** 2 + ((y - 0.55 * h) / (0.12 * h)) ** 2 + ((x - 0.45 * w) / (0.1 * w)) ** 2) <= 1
label = (lesion & body).astype(np.uint8)
ct = np.broadcast_to(np.where(body, 40, -1000), (d, h, w)).astype(np.int16)
ct += rng.integers(-20, 21, ct.shape, dtype=np.int16)
ct[label.astype(bool)] += 140
affine = np.diag([0.7, 0.7, 1.25, 1.0])
for sub, arr in (("images", ct), ("labels", label)):
    (root / sub).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine), str(root / sub / "ct.nii"))
"""


def measure(depth: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="omniseg-bench-volume-") as tmp:
        subprocess.run([sys.executable, "-c", WRITE, tmp, str(depth)], check=True)
        out = subprocess.run([sys.executable, "-c", MEASURE, tmp], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[100, 400])
    args = ap.parse_args()
    rows = []
    for depth in args.depths:
        r = measure(depth)
        used = (r["peak_kb"] - r["base_kb"]) * 1024
        rows.append((depth, r, used))
        s = r["seconds"]
        print(f"512 x 512 x {depth}: volume {r['volume_bytes'] / 2**20:.0f} MiB (int16); peak {r['peak_kb'] / 2**20:.2f} GiB "
              f"resident, {used / 2**20:.0f} MiB above the imports = {used / r['volume_bytes']:.1f} x the volume; "
              f"read {s['read']:.1f} s, slice by slice {s['predict']:.1f} s, scored {s['score']:.1f} s, written "
              f"{s['write']:.1f} s (Dice {r['dice']:.3f}, HD95 {r['hd95_mm']:.2f} mm)")
    if len(rows) >= 2:
        (d0, _, u0), (d1, _, u1) = rows[0], rows[-1]
        print(f"depth x{d1 / d0:.1f}: peak above the imports x{u1 / u0:.2f} (bounded: it grows with the volume, "
              "not faster)")


if __name__ == "__main__":
    main()

"""`omniseg run` inference throughput against a bare forward loop of the same network, and peak memory.

Both sides use the same checkpoint, batch size, input size and torch thread count, in one process:
the harness reads the JPEGs, resizes, predicts, resizes back, scores, writes masks and rows; the bare
loop only calls the network on ready tensors. Then `omniseg run` is started in fresh subprocesses over
100 and over 1000 images, and their peak resident memory is compared.

    python scripts/bench_specialist.py --root ../shared/data/kvasir-seg/Kvasir-SEG \
        [--checkpoint runs/checkpoints/polyp-unet.pt] [--limit 200] [--batch-size 8] [--threads 2]

The network's speed does not depend on its weights, but the harness's post-processing does: scoring
(HD95 walks the boundaries) and PNG writing are far slower on the speckled masks of a random network
than on real predictions (ratio 0.73 random against 0.88 trained, same machine). So without
--checkpoint the script first trains a small deterministic one (the default recipe, seed 0, 2 epochs on
the training split: about 7 minutes on 2 cores, kept in runs/bench/ for the next time), whose masks are
blobs like a real model's (2.0 components per test mask against 1.2 in the truth; a random network's
are speckle). Read the ratio with that in mind: it includes post-processing real masks need.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from omniseg import config as config_mod
from omniseg.models.specialist import load_checkpoint
from omniseg.inference.runner import run
from omniseg.store.database import Store

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp: Path, root: Path, ckpt: Path, batch: int, threads: int) -> Path:
    p = tmp / "bench.yaml"
    p.write_text(
        "task: polyp\ndataset: {name: kvasir-seg, root: %s}\nsplit: all\n"
        "models:\n  - name: unet\n    kind: unet\n    options: {checkpoint: %s, device: cpu, batch_size: %d, threads: %d}\n"
        % (root, ckpt, batch, threads)
    )
    return p


def small_checkpoint(root: Path, cache: Path, epochs: int = 2) -> Path:
    """A deterministic checkpoint of the default recipe (seed 0, ``epochs`` epochs on the training split),
    trained once and kept in ``cache`` (see the module docstring)."""
    from omniseg.config import TrainConfig
    from omniseg.inference.runner import open_dataset
    from omniseg.training.train import train

    ckpt = cache / f"polyp-unet-{epochs}ep-seed0.pt"
    if ckpt.is_file():
        print(f"using the small checkpoint {ckpt}")
        return ckpt
    cache.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.load(write_config(cache, root, ckpt, 8, torch.get_num_threads()))
    t = time.perf_counter()
    res = train(cfg, TrainConfig(epochs=epochs, seed=0), open_dataset(cfg), ckpt, device="cpu", progress=False)
    print(f"trained a small checkpoint: {res.epochs} epochs in {(time.perf_counter() - t) / 60:.1f} min, "
          f"validation Dice {res.best_val_dice:.3f}: {ckpt}")
    return ckpt


def harness(cfg_path: Path, store: Path, limit: int, batch: int) -> float:
    cfg = config_mod.load(cfg_path)
    t = time.perf_counter()
    with Store(store) as st:
        s = run(cfg, st, limit=limit, batch_size=batch, progress=False)
    assert s.statuses.get("ok") == limit, s.statuses
    return time.perf_counter() - t


def bare(ckpt: Path, limit: int, batch: int) -> float:
    net, spec, _ = load_checkpoint(ckpt)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size)
    with torch.inference_mode():
        net(x)  # warm-up, as the harness's first batch also pays it
        t = time.perf_counter()
        for _ in range(math.ceil(limit / batch)):
            torch.sigmoid(net(x))
    return time.perf_counter() - t


def child(args) -> None:
    """Run the harness over --limit images and print the peak RSS in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        harness(Path(args.config), Path(tmp) / "s.sqlite", args.limit, args.batch_size)
    print(json.dumps({"limit": args.limit, "peak_mib": peak_mib()}))


def peak_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to this program alone; ru_maxrss
    carries over the parent's peak through fork and exec (here: the parent that trained a checkpoint)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared/data/kvasir-seg/Kvasir-SEG")
    ap.add_argument("--checkpoint", type=Path, help="default: a small checkpoint trained once and kept in --cache")
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "bench", help="where the small checkpoint is kept")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--memory", default="100,1000", help="image counts for the peak-memory comparison ('' to skip)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        return child(args)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = small_checkpoint(args.root.resolve(), args.cache)
        cfg = write_config(tmp, args.root.resolve(), ckpt.resolve(), args.batch_size, args.threads)
        _, spec, _ = load_checkpoint(ckpt)
        print(f"{spec.arch}/{spec.encoder} at {spec.input_size}px, batch {args.batch_size}, "
              f"{args.threads} threads, {args.limit} Kvasir-SEG images")
        # the bare loop before and after the harness, averaged: a shared machine's drifting load falls on both
        t_before = bare(ckpt, args.limit, args.batch_size)
        t_h = harness(cfg, tmp / "s.sqlite", args.limit, args.batch_size)
        t_bare = (t_before + bare(ckpt, args.limit, args.batch_size)) / 2
        print(f"bare forward loop: {args.limit / t_bare:7.2f} images/s ({t_bare:.1f}s)")
        print(f"omniseg run:       {args.limit / t_h:7.2f} images/s ({t_h:.1f}s)")
        print(f"ratio harness/bare: {t_bare / t_h:.3f}")
        if args.memory:
            peaks = {}
            for n in [int(v) for v in args.memory.split(",")]:
                out = subprocess.run([sys.executable, __file__, "--child", "--config", str(cfg), "--limit", str(n),
                                      "--batch-size", str(args.batch_size), "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True)
                peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
                print(f"peak memory, {n:5d} images: {peaks[n]:8.1f} MiB")
            lo, hi = min(peaks), max(peaks)
            print(f"peak memory ratio {hi}/{lo} images: {peaks[hi] / peaks[lo]:.3f}")


if __name__ == "__main__":
    main()

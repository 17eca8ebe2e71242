"""The training input pipeline and step, before and after the cached pipeline, side by side in one run.

On the Kvasir-SEG training split (or --images generated ones when it is absent), with the default
recipe's network (U-Net, ResNet-18, 256 px, batch 8), measures:

1. reading the split when a run starts: decoding every image and mask and resizing them (what every
   start and resume of `omniseg train` did) against reading the decoded arrays from the cache;
2. the loader alone, images per second over one epoch: per-image preprocessing plus CPU augmentation
   (the previous path) against batches taken from the cached arrays and augmented on the device
   (`train_data.DeviceAugment`, basic and strong);
3. a full training step (loader, forward, loss, backward, AdamW), images per second: fp32 and the
   previous loader against the new loader with channels-last and, where the CPU computes bf16 natively
   (or on CUDA), bf16 autocast;

and prints per-epoch times built from those (a run's first epoch includes reading the split) and their
ratios, so the bottleneck is visible.

    python scripts/bench_train.py [--root ../shared/data/kvasir-seg/Kvasir-SEG] [--steps 12] [--device cpu]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch
    import torch.nn.functional as F
    import segmentation_models_pytorch as smp

    from omniseg import datasets
    from omniseg.models.specialist import NetSpec, build_net, pick_device, preprocess
    from omniseg.training.train import _augment, _prepare, _val_part
    from omniseg.training.data import DeviceAugment, cpu_has_bf16, load_split

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared/data/kvasir-seg/Kvasir-SEG")
    ap.add_argument("--images", type=int, default=800, help="generated images when --root is absent")
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per variant (after 2 warm-up steps)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = torch.device(pick_device(args.device))
    spec = NetSpec()
    batch = 8
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if not (root / "images").is_dir():
            import sys

            sys.path.insert(0, str(REPO / "tests"))
            from conftest import make_kvasir

            root = make_kvasir(Path(tmp) / "kvasir", n=args.images, size=(500, 600))
        ds = datasets.get("kvasir-seg")(root, {})
        refs = ds.refs("train")
        print(f"{len(refs)} training images from {root}; U-Net ResNet-18 at {spec.input_size} px, batch {batch}, "
              f"device {dev}, {torch.get_num_threads()} threads")

        # 1. reading the split at the start of a run
        t = time.perf_counter()
        pairs = [_prepare(ds.load(r), spec) for r in refs]
        decode_s = time.perf_counter() - t
        load_split(ds, "kvasir-seg", refs, spec, Path(tmp) / "cache", _prepare, progress=False)  # builds the cache
        t = time.perf_counter()
        arrays = load_split(ds, "kvasir-seg", refs, spec, Path(tmp) / "cache", _prepare, progress=False)
        fit = np.flatnonzero([not _val_part(i, 0.15) for i in arrays.ids])
        X = torch.from_numpy(np.ascontiguousarray(arrays.images[fit])).to(dev)
        Y = torch.from_numpy(np.ascontiguousarray(arrays.masks[fit])).to(dev)
        cache_s = time.perf_counter() - t
        assert arrays.cached
        fit_pairs = [pairs[i] for i in fit]
        n = len(fit_pairs)
        steps = n // batch
        print(f"1. reading the split: decode {decode_s:.1f} s, cached {cache_s:.2f} s "
              f"-> {decode_s / max(cache_s, 1e-9):.0f}x")

        # 2. the loader alone, one epoch
        gen = torch.Generator().manual_seed(0)
        rng = random.Random(0)

        def old_batch(idx):
            x = preprocess([fit_pairs[i][0] for i in idx], spec.model_copy(update={"resize": "pad"}))
            y = torch.from_numpy(np.stack([fit_pairs[i][1] for i in idx])).float()[:, None]
            x, y = _augment(x, y, gen)
            return x.to(dev), y.to(dev)

        augs = {k: DeviceAugment(spec, k, gen, dev, channels_last=True) for k in ("basic", "strong")}

        def new_batch(idx, kind="strong"):
            sel = torch.tensor(idx, device=dev)
            return augs[kind](X[sel], Y[sel])

        def loader_rate(make, **kw) -> float:
            order = list(range(n))
            rng.shuffle(order)
            t = time.perf_counter()
            for s in range(steps):
                make(order[s * batch:(s + 1) * batch], **kw)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return steps * batch / (time.perf_counter() - t)

        old_loader = loader_rate(old_batch)
        basic_loader = loader_rate(new_batch, kind="basic")
        strong_loader = loader_rate(new_batch, kind="strong")
        print(f"2. loader alone: previous {old_loader:.0f} img/s, cached+device basic {basic_loader:.0f} img/s "
              f"({basic_loader / old_loader:.1f}x), strong {strong_loader:.0f} img/s ({strong_loader / old_loader:.1f}x)")

        # 3. full training steps
        dice = smp.losses.DiceLoss("binary", from_logits=True)
        bf16 = dev.type == "cuda" or cpu_has_bf16()

        def step_rate(make, channels_last: bool, use_bf16: bool) -> float:
            torch.manual_seed(0)
            net = build_net(spec).to(dev)
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
            order = list(range(n))
            times = []
            for s in range(args.steps + 2):
                t = time.perf_counter()
                x, y = make(order[(s * batch) % (n - batch):][:batch])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = net(x).float()
                loss = dice(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if s >= 2:
                    times.append(time.perf_counter() - t)
            return batch / float(np.mean(times))

        old_step = step_rate(old_batch, False, False)
        new_step = step_rate(new_batch, True, bf16)
        print(f"3. full training step: previous (fp32) {old_step:.2f} img/s, new (channels-last"
              f"{', bf16' if bf16 else ', fp32'}) {new_step:.2f} img/s -> {new_step / old_step:.2f}x")

        # per epoch
        old_epoch, new_epoch = n / old_step, n / new_step
        print(f"per epoch of {n} images: previous {old_epoch / 60:.1f} min (first of a run {(old_epoch + decode_s) / 60:.1f}),"
              f" new {new_epoch / 60:.1f} min (first {(new_epoch + cache_s) / 60:.1f}); "
              f"ratio {old_epoch / new_epoch:.2f}x ({(old_epoch + decode_s) / (new_epoch + cache_s):.2f}x for a first epoch)")
        print(f"loader share of a step: previous {old_step / old_loader:.1%}, new {new_step / strong_loader:.1%}"
              " (the network, not the loader, is the bottleneck when this is small)")


if __name__ == "__main__":
    main()

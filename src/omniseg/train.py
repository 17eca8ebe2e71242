"""`omniseg train`: the specialist recipe (smp U-Net, Dice + BCE, augmentation, AdamW, cosine schedule).

The training split's samples are divided once more into fit and validation parts (a salted
hash of the id, so the division is deterministic); the checkpoint with the best validation
Dice is kept. After every epoch a resume file beside the checkpoint records the weights,
optimizer, epoch, elapsed time and random state, so an interrupted run continues where it
stopped. With a time budget (``max_minutes``) the cosine schedule runs on whichever is further
along, epochs or minutes, and training stops when another epoch would not fit.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from PIL import Image
from .progress import bar as progress_bar

from .config import TaskConfig, TrainConfig
from .datasets.base import Sample, split_fingerprint
from .errors import OmnisegError, SampleError
from .models.specialist import NetSpec, build_net, pick_device, preprocess, save_checkpoint


@dataclass
class TrainResult:
    checkpoint: Path
    epochs: int
    best_val_dice: float
    minutes: float
    device: str
    stopped: str


def _val_part(sample_id: str, fraction: float) -> bool:
    h = int(hashlib.sha256(("omniseg-val-v1:" + sample_id).encode()).hexdigest()[:12], 16)
    return h / 16**12 < fraction


def _prepare(sample: Sample, spec: NetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask at training size (resize policy) or full size with the ROI applied (pad)."""
    img, mask = sample.image, sample.mask
    if sample.roi is not None:
        img = img * sample.roi[..., None]
    if spec.resize == "resize":
        s = spec.input_size
        img = np.asarray(Image.fromarray(img).resize((s, s), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((s, s), Image.NEAREST)) > 127
    return img, mask


def _augment(x, y, gen):
    """Flips, 90-degree turns and brightness/contrast jitter on a batch (same for image and mask)."""
    import torch

    if torch.rand(1, generator=gen).item() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(1, generator=gen).item() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    if x.shape[-1] == x.shape[-2]:
        k = int(torch.randint(0, 4, (1,), generator=gen))
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    n = x.shape[0]
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 2
    bias = 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 2
    return x * gain + bias, y


def _random_crops(images, masks, idx, crop, rng):
    xs, ys = [], []
    for i in idx:
        h, w = masks[i].shape
        c = min(crop, h, w)
        y0, x0 = rng.randint(0, h - c), rng.randint(0, w - c)
        xs.append(images[i][y0:y0 + c, x0:x0 + c])
        ys.append(masks[i][y0:y0 + c, x0:x0 + c])
    return xs, ys


def _recipe(train: dict) -> dict:
    """The parts of a training config that must match to resume (the length may change)."""
    return {k: v for k, v in train.items() if k not in ("epochs", "max_minutes", "threads")}


def _lr_at(progress: float, cfg: TrainConfig, warm: float) -> float:
    if progress < warm:
        return cfg.lr * max(progress / warm, 0.01)
    p = (progress - warm) / max(1 - warm, 1e-9)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def train(task: TaskConfig, cfg: TrainConfig, dataset, checkpoint: Path, *, device: str = "auto",
          progress: bool = True, resume: bool = True) -> TrainResult:
    import torch
    import torch.nn.functional as F
    import segmentation_models_pytorch as smp

    from . import metrics

    device = pick_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    spec = cfg.net

    refs = dataset.refs("train")
    if not refs:
        raise OmnisegError(f"{task.task}: the training split is empty under {dataset.root}")
    fit, val, skipped = [], [], []
    for r in progress_bar(refs, desc="load training split", unit="img", disable=not progress):
        try:
            pair = _prepare(dataset.load(r), spec)
        except SampleError as e:
            skipped.append((r.id, str(e)))
            continue
        (val if _val_part(r.id, cfg.val_fraction) else fit).append(pair)
    if len(fit) < cfg.batch_size or not val:
        raise OmnisegError(f"{task.task}: {len(fit)} fit / {len(val)} validation images is too few to train")
    crop = cfg.crop or spec.input_size

    net = build_net(spec, cfg.encoder_weights).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dice_loss = smp.losses.DiceLoss("binary", from_logits=True)
    state_path = checkpoint.with_name(checkpoint.name + ".resume")
    log_path = checkpoint.with_suffix(".log.csv")
    start_epoch, best, elapsed = 0, -1.0, 0.0
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if _recipe(st.get("train") or {}) != _recipe(cfg.model_dump(mode="json")):
            raise OmnisegError(f"{state_path} was made with another training configuration; delete it or use --no-resume")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        start_epoch, best, elapsed = st["epoch"], st["best"], st["elapsed"]
        gen.set_state(st["gen"])
        rng.setstate(st["rng"])
    elif log_path.exists():
        log_path.unlink()

    steps_per_epoch = max(len(fit) // cfg.batch_size, 1)
    warm_frac = cfg.warmup_epochs / cfg.epochs
    fit_x = [p[0] for p in fit]
    fit_y = [p[1] for p in fit]
    stopped = "epochs"
    bar = progress_bar(total=cfg.epochs, initial=start_epoch, desc=f"train {task.task}", unit="epoch", disable=not progress)
    epochs_done = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_minutes and epoch > 0 and elapsed + elapsed / epoch > cfg.max_minutes:
            stopped = "time budget"  # another epoch of the average length would not fit
            break
        t0 = time.perf_counter()
        net.train()
        order = list(range(len(fit)))
        rng.shuffle(order)
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if spec.resize == "pad":
                xs, ys = _random_crops(fit_x, fit_y, idx, crop, rng)
            else:
                xs, ys = [fit_x[i] for i in idx], [fit_y[i] for i in idx]
            x = preprocess(xs, spec.model_copy(update={"resize": "pad"}))
            y = torch.from_numpy(np.stack(ys)).float()[:, None]
            y = F.pad(y, (0, x.shape[-1] - y.shape[-1], 0, x.shape[-2] - y.shape[-2]))
            if cfg.augment == "basic":
                x, y = _augment(x, y, gen)
            frac = (epoch + s / steps_per_epoch) / cfg.epochs
            if cfg.max_minutes:
                frac = max(frac, (elapsed + (time.perf_counter() - t0) / 60) / cfg.max_minutes)
            for g in opt.param_groups:
                g["lr"] = _lr_at(frac, cfg, warm_frac)
            x, y = x.to(device), y.to(device)
            logits = net(x)
            loss = dice_loss(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val_dice = _validate(net, val, spec, device, metrics)
        elapsed += (time.perf_counter() - t0) / 60
        if val_dice > best:
            best = val_dice
            save_checkpoint(checkpoint, net, spec, train=cfg.model_dump(mode="json"), task=task.task,
                            dataset=task.dataset.name, split_fingerprint=split_fingerprint(refs),
                            val_dice=best, epoch=epoch + 1, fit_images=len(fit), val_images=len(val),
                            device=device, minutes=round(elapsed, 2))
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "best": best,
                    "elapsed": elapsed, "gen": gen.get_state(),
                    "rng": rng.getstate(), "train": cfg.model_dump(mode="json")}, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)
        new = not log_path.exists()
        with open(log_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "loss", "val_dice", "best_val_dice", "minutes", "lr"])
            w.writerow([epoch + 1, f"{np.mean(losses):.5f}", f"{val_dice:.5f}", f"{best:.5f}", f"{elapsed:.2f}",
                        f"{opt.param_groups[0]['lr']:.2e}"])
        epochs_done = epoch + 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_dice=f"{val_dice:.3f}", best=f"{best:.3f}")
    bar.close()
    state_path.unlink(missing_ok=True)  # finished normally: the checkpoint is what remains (a rerun starts anew)
    return TrainResult(checkpoint, epochs_done, best, elapsed, device, stopped)


def _validate(net, val, spec, device, metrics) -> float:
    import torch

    net.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(val), 8):
            chunk = val[i:i + 8]
            x = preprocess([c[0] for c in chunk], spec.model_copy(update={"resize": "pad"})).to(device)
            probs = torch.sigmoid(net(x)).cpu().numpy()[:, 0]
            for (img, mask), p in zip(chunk, probs):
                pred = p[: mask.shape[0], : mask.shape[1]] > spec.threshold
                scores.append(metrics.dice(metrics.confusion(pred, mask)))
    return float(np.mean(scores))

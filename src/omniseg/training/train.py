"""`omniseg train`: the specialist recipe (smp U-Net, Dice + BCE, augmentation, AdamW, cosine schedule).

The training split's samples are divided once more into fit and validation parts (a salted
hash of the id, so the division is deterministic); the checkpoint with the best validation
Dice is kept. After every epoch a resume file beside the checkpoint records the weights,
optimizer, epoch, elapsed time and random state, so an interrupted run continues where it
stopped. With a time budget (``max_minutes``) the cosine schedule runs on whichever is further
along, epochs or minutes; the budget is checked after every step (not between epochs), and when the rest
of it is what validating and saving will take, the epoch ends early, is validated and saved: the
command returns within its budget however long an epoch is.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from PIL import Image
from ..progress import bar as progress_bar

from ..config import TaskConfig, TrainConfig
from ..datasets.base import Sample, split_fingerprint
from ..errors import OmnisegError, SampleError
from ..models.device import pick as pick_device
from ..models.specialist import NetSpec, annotate_checkpoint, build_net, preprocess, resize_input, save_checkpoint


@dataclass
class TrainResult:
    checkpoint: Path
    epochs: int
    best_val_dice: float
    minutes: float
    device: str
    stopped: str
    images_per_s: float = 0.0  # training images per second of wall time (validation included)
    precision: str = "fp32"
    images: int = 0  # training images seen in all (a stop within an epoch shows here)


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
        img = resize_input(img, s)  # the specialist's own input resize: what inference will see
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

    from ..scoring import metrics
    from .data import DeviceAugment, cpu_has_bf16, load_split

    started = time.perf_counter()  # the budget counts this command's whole time: loading and validation too
    device = pick_device(device)
    dev = torch.device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    spec = cfg.net
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (dev.type == "cuda" or cpu_has_bf16()))
    if cfg.precision == "auto" and dev.type == "cpu" and not bf16:
        warnings.warn("precision auto: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so training runs in fp32, "
                      "several times slower than the bf16 figures in docs/specialists.md", stacklevel=2)

    cache_name = task.dataset.name
    known = split_fingerprint(dataset.refs("train"))  # what a run compares with its own split (a volume's, not slices)
    if dataset.volumetric:  # a 2-D network learns from the slices of the training volumes, windowed as it will see them
        from ..config import SliceConfig
        from ..datasets.slices import Slices

        slicing = task.slices or SliceConfig()
        dataset = Slices(dataset, slicing)
        cache_name += "-slices-" + hashlib.sha256(slicing.model_dump_json().encode()).hexdigest()[:8]
    refs = dataset.refs("train")
    if not refs:
        raise OmnisegError(f"{task.task}: the training split is empty under {dataset.root}")
    cached = spec.resize == "resize"  # fixed-size inputs: decoded once into arrays, augmented on the device
    if cached:
        arrays = load_split(dataset, cache_name, refs, spec, checkpoint.parent / "cache" if cfg.cache else None,
                            _prepare, progress)
        is_val = np.array([_val_part(dataset.group(i), cfg.val_fraction) for i in arrays.ids], bool)
        fit_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        fit_x = torch.from_numpy(np.ascontiguousarray(arrays.images[fit_idx])).to(dev)
        fit_y = torch.from_numpy(np.ascontiguousarray(arrays.masks[fit_idx])).to(dev)
        val = (torch.from_numpy(np.ascontiguousarray(arrays.images[val_idx])).to(dev),
               torch.from_numpy(np.ascontiguousarray(arrays.masks[val_idx])).to(dev))
        n_fit, n_val = len(fit_idx), len(val_idx)
    else:
        fit, val_pairs = [], []
        for r in progress_bar(refs, desc="load training split", unit="img", disable=not progress):
            try:
                pair = _prepare(dataset.load(r), spec)
            except SampleError:
                continue
            (val_pairs if _val_part(dataset.group(r.id), cfg.val_fraction) else fit).append(pair)
        fit_x, fit_y = [p[0] for p in fit], [p[1] for p in fit]
        val, n_fit, n_val = val_pairs, len(fit), len(val_pairs)
    if n_fit < cfg.batch_size or not n_val:
        raise OmnisegError(f"{task.task}: {n_fit} fit / {n_val} validation images is too few to train")
    crop = cfg.crop or spec.input_size

    net = build_net(spec, cfg.encoder_weights).to(dev)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    forward = torch.compile(net) if cfg.compile else net
    base_lr = cfg.lr * cfg.batch_size / cfg.lr_reference_batch  # batch size and learning rate scaled together
    opt = torch.optim.AdamW(net.parameters(), lr=base_lr, weight_decay=cfg.weight_decay)
    dice_loss = smp.losses.DiceLoss("binary", from_logits=True)
    state_path = checkpoint.with_name(checkpoint.name + ".resume")
    log_path = checkpoint.with_suffix(".log.csv")
    start_epoch, best, elapsed, seen = 0, -1.0, 0.0, 0
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if _recipe(st.get("train") or {}) != _recipe(cfg.model_dump(mode="json")):
            raise OmnisegError(f"{state_path} was made with another training configuration; delete it or use --no-resume")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        start_epoch, best, elapsed, seen = st["epoch"], st["best"], st["elapsed"], st.get("seen", 0)
        gen.set_state(st["gen"])
        rng.setstate(st["rng"])
    elif log_path.exists():
        log_path.unlink()
    augment = DeviceAugment(spec, cfg.augment, gen, dev, cfg.channels_last)
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

    steps_per_epoch = max(n_fit // cfg.batch_size, 1)
    warm_frac = cfg.warmup_epochs / cfg.epochs
    lr_cfg = cfg.model_copy(update={"lr": base_lr})
    stopped = "epochs"
    # the end of this command's share of the budget (a resumed run has used `elapsed` minutes of it already)
    deadline = started + (cfg.max_minutes - elapsed) * 60 if cfg.max_minutes else math.inf
    step_s = val_s = 0.0  # measured: the last step's and the last validation's seconds (what remains must fit)
    # under a time budget, tqdm's own estimate (epochs left at this pace) can be hours past the budget's end: the bar
    # shows the smaller of the two instead (time_left)
    budgeted = {"bar_format": "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
                "postfix": {"left": clock(deadline - time.perf_counter())}} if cfg.max_minutes else {}
    bar = progress_bar(total=cfg.epochs, initial=start_epoch, desc=f"train {task.task}", unit="epoch",
                       disable=not progress, **budgeted)
    epochs_done = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if best >= 0 and time.perf_counter() + step_s + val_s >= deadline:  # (never before a first checkpoint)
            stopped = "time budget"
            break
        t0 = time.perf_counter()
        net.train()
        order = list(range(n_fit))
        rng.shuffle(order)
        losses = []
        steps = progress_bar(total=steps_per_epoch * cfg.batch_size, desc=f"  epoch {epoch + 1}", unit="img",
                             leave=False, disable=not progress)
        for s in range(steps_per_epoch):
            t_step = time.perf_counter()
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if cached:
                sel = torch.tensor(idx, device=dev)
                x, y = augment(fit_x[sel], fit_y[sel])
            else:
                x, y = _pad_batch(fit_x, fit_y, idx, spec, crop, rng, cfg, gen)
                x, y = x.to(dev), y.to(dev)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            frac = (epoch + s / steps_per_epoch) / cfg.epochs
            if cfg.max_minutes:
                frac = max(frac, (elapsed + (time.perf_counter() - t0) / 60) / cfg.max_minutes)
            for g in opt.param_groups:
                g["lr"] = _lr_at(min(frac, 1.0), lr_cfg, warm_frac)
            with autocast():
                logits = forward(x).float()
            loss = dice_loss(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            seen += len(idx)
            step_s = time.perf_counter() - t_step
            steps.update(len(idx))
            steps.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            # another step, then validating and saving, must still fit: else end the epoch here
            if time.perf_counter() + step_s + max(val_s, _val_guess(step_s, n_val, cfg.batch_size)) >= deadline:
                stopped = "time budget"
                break
        steps.close()
        t_val = time.perf_counter()
        with autocast():
            val_dice = (_validate_arrays(forward, val, augment, spec, metrics) if cached
                        else _validate(forward, val, spec, dev, metrics))
        val_s = time.perf_counter() - t_val
        elapsed += (time.perf_counter() - t0) / 60
        if val_dice > best:
            best = val_dice
            save_checkpoint(checkpoint, net, spec, train=cfg.model_dump(mode="json"), task=task.task,
                            dataset=task.dataset.name, split_fingerprint=known,
                            val_dice=best, epoch=epoch + 1, fit_images=n_fit, val_images=n_val,
                            device=device, minutes=round(elapsed, 2), precision="bf16" if bf16 else "fp32",
                            trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            images_per_s=round(seen / max(elapsed * 60, 1e-9), 2))
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "best": best,
                    "elapsed": elapsed, "seen": seen, "gen": gen.get_state(),
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
        left = {}
        if cfg.max_minutes:
            per_epoch = (time.perf_counter() - started) / (epoch + 1 - start_epoch)
            left["left"] = clock(time_left(cfg.epochs - epoch - 1, per_epoch, deadline - time.perf_counter()))
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_dice=f"{val_dice:.3f}", best=f"{best:.3f}",
                        img_s=f"{seen / max(elapsed * 60, 1e-9):.1f}", **left)
        if stopped == "time budget":
            break
    bar.close()
    if best >= 0:  # how the training ended, in the checkpoint: the report judges the specialist by it
        annotate_checkpoint(checkpoint, epochs_planned=cfg.epochs, epochs_done=epochs_done, stopped=stopped,
                            budget_minutes=cfg.max_minutes, minutes_total=round(elapsed, 2),
                            share_done=round(min(1.0, seen / max(n_fit * cfg.epochs, 1)), 4))
    state_path.unlink(missing_ok=True)  # finished normally: the checkpoint is what remains (a rerun starts anew)
    return TrainResult(checkpoint, epochs_done, best, elapsed, device, stopped,
                       images_per_s=seen / max(elapsed * 60, 1e-9), precision="bf16" if bf16 else "fp32", images=seen)


def time_left(epochs_left: int, seconds_per_epoch: float, budget_left_s: float) -> float:
    """Seconds the training has left: the epochs still planned at the pace so far, but never past the budget."""
    return max(0.0, min(epochs_left * seconds_per_epoch, budget_left_s))


def clock(seconds: float) -> str:
    """Seconds as tqdm writes a duration: M:SS, or H:MM:SS from an hour."""
    s = int(max(seconds, 0) + 0.5)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m:02d}:{s % 60:02d}"


def _val_guess(step_s: float, n_val: int, batch: int) -> float:
    """Seconds a validation may take before one was measured: a forward pass is about a third of a step."""
    return step_s / 3 * max(n_val / max(batch, 1), 1)


def _pad_batch(fit_x, fit_y, idx, spec, crop, rng, cfg, gen):
    """Full-resolution training (pad policy): random crops, per-image preprocessing, basic augmentation."""
    import torch
    import torch.nn.functional as F

    xs, ys = _random_crops(fit_x, fit_y, idx, crop, rng)
    x = preprocess(xs, spec.model_copy(update={"resize": "pad"}))
    y = torch.from_numpy(np.stack(ys)).float()[:, None]
    y = F.pad(y, (0, x.shape[-1] - y.shape[-1], 0, x.shape[-2] - y.shape[-2]))
    if cfg.augment != "none":
        x, y = _augment(x, y, gen)
    return x, y


def _validate_arrays(net, val, augment, spec, metrics) -> float:
    """Validation Dice at the training size, from the cached arrays on the device."""
    import torch

    net.eval()
    images, masks = val
    scores = []
    with torch.inference_mode():
        for i in range(0, len(images), 16):
            x, _ = augment(images[i:i + 16], masks[i:i + 16], train=False)
            pred = (torch.sigmoid(net(x).float()) > spec.threshold)[:, 0].cpu().numpy()
            for p, m in zip(pred, masks[i:i + 16].cpu().numpy().astype(bool)):
                scores.append(metrics.dice(metrics.confusion(p, m)))
    return float(np.mean(scores))


def _validate(net, val, spec, device, metrics) -> float:
    import torch

    net.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(val), 8):
            chunk = val[i:i + 8]
            x = preprocess([c[0] for c in chunk], spec.model_copy(update={"resize": "pad"})).to(device)
            probs = torch.sigmoid(net(x).float()).cpu().numpy()[:, 0]
            for (img, mask), p in zip(chunk, probs):
                pred = p[: mask.shape[0], : mask.shape[1]] > spec.threshold
                scores.append(metrics.dice(metrics.confusion(pred, mask)))
    return float(np.mean(scores))

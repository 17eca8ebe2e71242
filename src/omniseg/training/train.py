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
    """Train the task's specialist by ``cfg`` into ``checkpoint`` (the best validation Dice), resuming a run that
    stopped when ``resume``; see the module docstring."""
    return Trainer(task, cfg, dataset, checkpoint, device=device, progress=progress, resume=resume).fit()


class Trainer:
    """One `omniseg train`, as nnU-Net's nnUNetTrainer: set up (device, data, network, optimizer, resume state) on
    construction, then :meth:`fit` runs the epochs, each a train pass (:meth:`epoch`), a validation and a save
    (:meth:`keep`). The order of every random draw is the recipe's: a resumed run continues the same sequence."""

    def __init__(self, task: TaskConfig, cfg: TrainConfig, dataset, checkpoint: Path, *, device: str = "auto",
                 progress: bool = True, resume: bool = True):
        import torch

        from .data import cpu_has_bf16

        self.started = time.perf_counter()  # the budget counts this command's whole time: loading and validation too
        self.task, self.cfg, self.checkpoint, self.progress = task, cfg, checkpoint, progress
        self.device = pick_device(device)
        self.dev = torch.device(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.spec = cfg.net
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (self.dev.type == "cuda" or cpu_has_bf16()))
        if cfg.precision == "auto" and self.dev.type == "cpu" and not self.bf16:
            warnings.warn("precision auto: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so training runs in "
                          "fp32, several times slower than the bf16 figures in docs/specialists.md", stacklevel=3)
        self.load_data(dataset)
        self.build(resume)

    def load_data(self, dataset) -> None:
        """The fit and validation parts of the training split: decoded once into arrays on the device (resize
        policy), or as full-size pairs (pad policy). A volume dataset gives the slices of its training volumes."""
        import torch

        from .data import load_split

        task, cfg, spec = self.task, self.cfg, self.spec
        cache_name = task.dataset.name
        self.known = split_fingerprint(dataset.refs("train"))  # what a run compares with its split (volumes, not slices)
        if dataset.volumetric:  # a 2-D network learns from the training volumes' slices, windowed as it will see them
            from ..datasets.slices import Slices

            slicing = task.slicing
            dataset = Slices(dataset, slicing)
            cache_name += "-slices-" + hashlib.sha256(slicing.model_dump_json().encode()).hexdigest()[:8]
        refs = dataset.refs("train")
        if not refs:
            raise OmnisegError(f"{task.task}: the training split is empty under {dataset.root}")
        self.cached = spec.resize == "resize"  # fixed-size inputs: decoded once into arrays, augmented on the device
        if self.cached:
            arrays = load_split(dataset, cache_name, refs, spec, self.checkpoint.parent / "cache" if cfg.cache else None,
                                _prepare, self.progress)
            is_val = np.array([_val_part(dataset.group(i), cfg.val_fraction) for i in arrays.ids], bool)
            fit_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
            on_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.dev)  # noqa: E731
            self.fit_x, self.fit_y = on_device(arrays.images[fit_idx]), on_device(arrays.masks[fit_idx])
            self.val = (on_device(arrays.images[val_idx]), on_device(arrays.masks[val_idx]))
            self.n_fit, self.n_val = len(fit_idx), len(val_idx)
        else:
            fit, val_pairs = [], []
            for r in progress_bar(refs, desc="load training split", unit="img", disable=not self.progress):
                try:
                    pair = _prepare(dataset.load(r), spec)
                except SampleError:
                    continue
                (val_pairs if _val_part(dataset.group(r.id), cfg.val_fraction) else fit).append(pair)
            self.fit_x, self.fit_y = [p[0] for p in fit], [p[1] for p in fit]
            self.val, self.n_fit, self.n_val = val_pairs, len(fit), len(val_pairs)
        if self.n_fit < cfg.batch_size or not self.n_val:
            raise OmnisegError(f"{task.task}: {self.n_fit} fit / {self.n_val} validation images is too few to train")

    def build(self, resume: bool) -> None:
        """Network, optimizer, loss and random state, from the resume file beside the checkpoint when there is one."""
        import torch
        import segmentation_models_pytorch as smp

        from .data import DeviceAugment

        cfg = self.cfg
        self.net = build_net(self.spec, cfg.encoder_weights).to(self.dev)
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if cfg.compile else self.net
        self.base_lr = cfg.lr * cfg.batch_size / cfg.lr_reference_batch  # batch size and learning rate scaled together
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.base_lr, weight_decay=cfg.weight_decay)
        self.dice_loss = smp.losses.DiceLoss("binary", from_logits=True)
        self.state_path = self.checkpoint.with_name(self.checkpoint.name + ".resume")
        self.log_path = self.checkpoint.with_suffix(".log.csv")
        self.start_epoch, self.best, self.elapsed, self.seen = 0, -1.0, 0.0, 0
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        if resume and self.state_path.is_file():
            st = torch.load(self.state_path, map_location="cpu", weights_only=False)
            if _recipe(st.get("train") or {}) != _recipe(cfg.model_dump(mode="json")):
                raise OmnisegError(f"{self.state_path} was made with another training configuration; delete it or use "
                                   "--no-resume")
            self.net.load_state_dict(st["net"])
            self.opt.load_state_dict(st["opt"])
            self.start_epoch, self.best, self.elapsed, self.seen = st["epoch"], st["best"], st["elapsed"], st.get("seen", 0)
            self.gen.set_state(st["gen"])
            self.rng.setstate(st["rng"])
        elif self.log_path.exists():
            self.log_path.unlink()
        self.augment = DeviceAugment(self.spec, cfg.augment, self.gen, self.dev, cfg.channels_last)

    def autocast(self):
        import torch

        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16)

    def fit(self) -> TrainResult:
        """Every epoch still planned (or until the time budget's end), each validated and saved."""
        from ..scoring import metrics

        cfg = self.cfg
        self.stopped = "epochs"
        # the end of this command's share of the budget (a resumed run has used `elapsed` minutes of it already)
        self.deadline = self.started + (cfg.max_minutes - self.elapsed) * 60 if cfg.max_minutes else math.inf
        self.step_s = self.val_s = 0.0  # measured: the last step's and the last validation's seconds (what remains must fit)
        # under a time budget, tqdm's own estimate (epochs left at this pace) can be hours past the budget's end: the
        # bar shows the smaller of the two instead (time_left)
        budgeted = {"bar_format": "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
                    "postfix": {"left": clock(self.deadline - time.perf_counter())}} if cfg.max_minutes else {}
        bar = progress_bar(total=cfg.epochs, initial=self.start_epoch, desc=f"train {self.task.task}", unit="epoch",
                           disable=not self.progress, **budgeted)
        epochs_done = self.start_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            if self.best >= 0 and time.perf_counter() + self.step_s + self.val_s >= self.deadline:  # (after a checkpoint)
                self.stopped = "time budget"
                break
            t0 = time.perf_counter()
            losses = self.epoch(epoch, t0)
            t_val = time.perf_counter()
            with self.autocast():
                val_dice = (_validate_arrays(self.forward, self.val, self.augment, self.spec, metrics) if self.cached
                            else _validate(self.forward, self.val, self.spec, self.dev, metrics))
            self.val_s = time.perf_counter() - t_val
            self.elapsed += (time.perf_counter() - t0) / 60
            self.keep(epoch, losses, val_dice)
            epochs_done = epoch + 1
            bar.update(1)
            left = {}
            if cfg.max_minutes:
                per_epoch = (time.perf_counter() - self.started) / (epoch + 1 - self.start_epoch)
                left["left"] = clock(time_left(cfg.epochs - epoch - 1, per_epoch, self.deadline - time.perf_counter()))
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_dice=f"{val_dice:.3f}", best=f"{self.best:.3f}",
                            img_s=f"{self.seen / max(self.elapsed * 60, 1e-9):.1f}", **left)
            if self.stopped == "time budget":
                break
        bar.close()
        return self.finish(epochs_done)

    def epoch(self, epoch: int, t0: float) -> list[float]:
        """One pass over the fit part in a shuffled order, with the learning rate of the schedule at each step; ends
        early (``stopped``) when another step, a validation and a save would pass the budget. Returns the losses."""
        import torch
        import torch.nn.functional as F

        cfg, dev = self.cfg, self.dev
        steps_per_epoch = max(self.n_fit // cfg.batch_size, 1)
        warm_frac = cfg.warmup_epochs / cfg.epochs
        lr_cfg = cfg.model_copy(update={"lr": self.base_lr})
        crop = cfg.crop or self.spec.input_size
        self.net.train()
        order = list(range(self.n_fit))
        self.rng.shuffle(order)
        losses = []
        steps = progress_bar(total=steps_per_epoch * cfg.batch_size, desc=f"  epoch {epoch + 1}", unit="img",
                             leave=False, disable=not self.progress)
        for s in range(steps_per_epoch):
            t_step = time.perf_counter()
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if self.cached:
                sel = torch.tensor(idx, device=dev)
                x, y = self.augment(self.fit_x[sel], self.fit_y[sel])
            else:
                x_u8, y_u8 = _pad_batch(self.fit_x, self.fit_y, idx, crop, self.rng)
                x, y = self.augment(x_u8.to(dev), y_u8.to(dev))
            frac = (epoch + s / steps_per_epoch) / cfg.epochs
            if cfg.max_minutes:
                frac = max(frac, (self.elapsed + (time.perf_counter() - t0) / 60) / cfg.max_minutes)
            for g in self.opt.param_groups:
                g["lr"] = _lr_at(min(frac, 1.0), lr_cfg, warm_frac)
            with self.autocast():
                logits = self.forward(x).float()
            loss = self.dice_loss(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
            self.seen += len(idx)
            self.step_s = time.perf_counter() - t_step
            steps.update(len(idx))
            steps.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            # another step, then validating and saving, must still fit: else end the epoch here
            if time.perf_counter() + self.step_s + max(self.val_s, _val_guess(self.step_s, self.n_val, cfg.batch_size)) \
                    >= self.deadline:
                self.stopped = "time budget"
                break
        steps.close()
        return losses

    def keep(self, epoch: int, losses: list[float], val_dice: float) -> None:
        """The checkpoint when the epoch is the best so far, the resume state, and the epoch's line of the log."""
        import torch

        cfg = self.cfg
        if val_dice > self.best:
            self.best = val_dice
            save_checkpoint(self.checkpoint, self.net, self.spec, train=cfg.model_dump(mode="json"), task=self.task.task,
                            dataset=self.task.dataset.name, split_fingerprint=self.known,
                            val_dice=self.best, epoch=epoch + 1, fit_images=self.n_fit, val_images=self.n_val,
                            device=self.device, minutes=round(self.elapsed, 2), precision="bf16" if self.bf16 else "fp32",
                            trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            images_per_s=round(self.seen / max(self.elapsed * 60, 1e-9), 2))
        torch.save({"net": self.net.state_dict(), "opt": self.opt.state_dict(), "epoch": epoch + 1, "best": self.best,
                    "elapsed": self.elapsed, "seen": self.seen, "gen": self.gen.get_state(),
                    "rng": self.rng.getstate(), "train": cfg.model_dump(mode="json")}, self.state_path.with_suffix(".tmp"))
        self.state_path.with_suffix(".tmp").replace(self.state_path)
        new = not self.log_path.exists()
        with open(self.log_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "loss", "val_dice", "best_val_dice", "minutes", "lr"])
            w.writerow([epoch + 1, f"{np.mean(losses):.5f}", f"{val_dice:.5f}", f"{self.best:.5f}", f"{self.elapsed:.2f}",
                        f"{self.opt.param_groups[0]['lr']:.2e}"])

    def finish(self, epochs_done: int) -> TrainResult:
        """How the training ended, written into the checkpoint (the report judges the specialist by it); the resume
        file removed (a rerun starts anew)."""
        cfg = self.cfg
        if self.best >= 0:
            annotate_checkpoint(self.checkpoint, epochs_planned=cfg.epochs, epochs_done=epochs_done, stopped=self.stopped,
                                budget_minutes=cfg.max_minutes, minutes_total=round(self.elapsed, 2),
                                share_done=round(min(1.0, self.seen / max(self.n_fit * cfg.epochs, 1)), 4))
        self.state_path.unlink(missing_ok=True)
        return TrainResult(self.checkpoint, epochs_done, self.best, self.elapsed, self.device, self.stopped,
                           images_per_s=self.seen / max(self.elapsed * 60, 1e-9),
                           precision="bf16" if self.bf16 else "fp32", images=self.seen)


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


def _pad_batch(fit_x, fit_y, idx, crop, rng):
    """Full-resolution training (pad policy): random crops, zero-padded to a common size divisible by 32, as uint8
    NHWC images and NHW masks for the one augmentation pipeline (:class:`~omniseg.training.data.DeviceAugment`)."""
    import torch

    xs, ys = _random_crops(fit_x, fit_y, idx, crop, rng)
    h, w = max(x.shape[0] for x in xs), max(x.shape[1] for x in xs)
    H, W = -(-h // 32) * 32, -(-w // 32) * 32  # as preprocess pads at inference
    x = np.zeros((len(xs), H, W, 3), np.uint8)
    y = np.zeros((len(ys), H, W), np.uint8)
    for k, (im, m) in enumerate(zip(xs, ys)):
        x[k, :im.shape[0], :im.shape[1]] = im
        y[k, :m.shape[0], :m.shape[1]] = m
    return torch.from_numpy(x), torch.from_numpy(y)


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

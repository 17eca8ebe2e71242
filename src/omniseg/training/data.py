"""The training input pipeline: the split decoded once and cached, augmented in batches on the device.

Decoding JPEGs and resizing them is the slow part of reading a training split (the whole Kvasir-SEG
split takes tens of seconds on two cores, and every start or resume of a run paid it again). It is
done once per (dataset, split fingerprint, size) and kept as uint8 arrays on disk beside the
checkpoint; later runs map them from disk. Augmentation runs on whole batches on the training device:
flips, 90-degree turns, scale and rotation (one affine warp, image and mask together), brightness,
contrast and hue. `scripts/bench_train.py` measures it against the per-image path it replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets.base import split_fingerprint
from ..errors import SampleError
from ..progress import bar as progress_bar

CACHE_VERSION = "1"


@dataclass
class SplitArrays:
    ids: list[str]
    images: np.ndarray  # uint8 N x S x S x 3
    masks: np.ndarray  # uint8 N x S x S (0/1)
    skipped: list[tuple[str, str]]  # (id, why) of samples that could not be read
    cached: bool  # read from the cache (not decoded now)


def cache_dir_for(dataset_name: str, refs, size: int, root: Path) -> Path:
    key = hashlib.sha256(json.dumps([CACHE_VERSION, dataset_name, split_fingerprint(refs), size]).encode()).hexdigest()
    return root / f"{dataset_name}-{size}-{key[:16]}"


def load_split(dataset, dataset_name: str, refs, spec, cache_root: Path | None, prepare, progress: bool = True) -> SplitArrays:
    """The split at the network's input size, from the cache or decoded (and cached) now.

    ``prepare(sample, spec) -> (image, mask)`` resizes one sample; ``cache_root`` None decodes without caching."""
    folder = cache_dir_for(dataset_name, refs, spec.input_size, cache_root) if cache_root else None
    if folder is not None and (folder / "ids.json").is_file():
        meta = json.loads((folder / "ids.json").read_text())
        return SplitArrays(meta["ids"], np.load(folder / "images.npy", mmap_mode="r"),
                           np.load(folder / "masks.npy", mmap_mode="r"), [tuple(s) for s in meta["skipped"]], True)
    s = spec.input_size
    images = np.empty((len(refs), s, s, 3), np.uint8)
    masks = np.empty((len(refs), s, s), np.uint8)
    ids, skipped = [], []
    for r in progress_bar(refs, desc="decode training split (once)", unit="img", disable=not progress):
        try:
            img, mask = prepare(dataset.load(r), spec)
        except SampleError as e:
            skipped.append((r.id, str(e)))
            continue
        images[len(ids)] = img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, -1)
        masks[len(ids)] = mask
        ids.append(r.id)
    images, masks = images[:len(ids)], masks[:len(ids)]
    if folder is not None:  # written aside, then renamed: a killed run leaves no half cache
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "images.npy", images)
        np.save(tmp / "masks.npy", masks)
        (tmp / "ids.json").write_text(json.dumps({"ids": ids, "skipped": skipped}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return SplitArrays(ids, images, masks, skipped, False)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): then bf16 autocast speeds training."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class DeviceAugment:
    """Batch augmentation on the device: uint8 NHWC images and NHW masks in, normalized NCHW floats out."""

    def __init__(self, spec, strength: str, gen, device, channels_last: bool = False):
        import torch

        self.strength, self.gen, self.device, self.channels_last = strength, gen, device, channels_last
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)

    def _rand(self, *shape):
        import torch

        return torch.rand(*shape, generator=self.gen).to(self.device)

    def __call__(self, x_u8, y_u8, train: bool = True):
        import torch
        import torch.nn.functional as F

        x = x_u8.permute(0, 3, 1, 2).float().div_(255)
        y = y_u8[:, None].float()
        if train and self.strength != "none":
            if self._rand(1).item() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            if self._rand(1).item() < 0.5:
                x, y = x.flip(-2), y.flip(-2)
            if x.shape[-1] == x.shape[-2]:
                k = int(self._rand(1).item() * 4) % 4
                x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
            n = x.shape[0]
            if self.strength == "strong":
                if self._rand(1).item() < 0.5:  # scale 0.8-1.2 and rotation +-30 degrees, one warp for both
                    angle = (self._rand(n) - 0.5) * (math.pi / 3)
                    scale = 1 / (0.8 + 0.4 * self._rand(n))
                    theta = torch.zeros(n, 2, 3, device=self.device)
                    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) * scale, -torch.sin(angle) * scale
                    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) * scale, torch.cos(angle) * scale
                    grid = F.affine_grid(theta, [n, 4, *x.shape[-2:]], align_corners=False)
                    both = F.grid_sample(torch.cat([x, y], 1), grid, mode="bilinear", padding_mode="zeros",
                                         align_corners=False)
                    x, y = both[:, :3], (both[:, 3:] > 0.5).float()
                x = _hue_shift(x, (self._rand(n) - 0.5) * 0.1 * 2 * math.pi)
            gain = 1 + 0.4 * (self._rand(n, 1, 1, 1) - 0.5)
            bias = 0.2 * (self._rand(n, 1, 1, 1) - 0.5)
            mean = x.mean((1, 2, 3), keepdim=True)
            x = ((x - mean) * gain + mean + bias).clamp_(0, 1)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def _hue_shift(x, angle):
    """Rotate the chroma of RGB images (N x 3 x H x W, 0..1) by ``angle`` radians in YIQ space."""
    import torch

    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    from_yiq = torch.linalg.inv(to_yiq)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = from_yiq @ rot @ to_yiq  # N x 3 x 3
    return torch.einsum("nij,njhw->nihw", m, x).clamp_(0, 1)

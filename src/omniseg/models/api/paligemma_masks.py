"""PaliGemma's ``<segNNN>`` tokens drawn as masks: big_vision's VQ-VAE mask decoder, in PyTorch.

PaliGemma answers a segmentation with four ``<loc>`` tokens (the box) and 16 ``<seg>`` tokens: indices into the
codebook of a small VQ-VAE trained on Open Images masks. Its weights are published as ``vae-oid.npz`` (a PyTorch
state dict saved by numpy: ``_vq_vae._embedding`` [128, D] and ``decoder.*``); the decoder's architecture is
public in big_vision (``big_vision/pp/proj/paligemma/segmentation.py``): the 16 embeddings as a 4 x 4 grid, a 1 x 1
convolution to 128 channels, two residual blocks, four transposed convolutions (kernel 4, stride 2) to 64 x 64,
a 1 x 1 convolution to one channel in [-1, 1]. As in the PaliGemma demo, that 64 x 64 map is scaled to [0, 1],
resized (bilinear) to the box and thresholded at 0.5.

The user points the ``openai`` kind's option ``seg_codebook`` at the file (it cannot be downloaded here); without
it such answers are ``unsupported_format`` naming the option.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import OmnisegError

EMBEDDING = "_vq_vae._embedding"
#: the decoder's layers in the state dict (a torch Sequential: ReLUs between them hold no weights)
LAYERS = ["decoder.0", *(f"decoder.{b}.net.{i}" for b in (2, 3) for i in (0, 2, 4)),
          "decoder.4", "decoder.6", "decoder.8", "decoder.10", "decoder.12"]
TOKENS = 16  # seg tokens per mask: a 4 x 4 grid of codebook entries
SIDE = 64  # the decoded mask's side
_lock = threading.Lock()


def _network(dim: int):
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, features: int):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(features, features, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(features, features, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.net(x)

    layers: list[nn.Module] = [nn.Conv2d(dim, 128, 1), nn.ReLU(), ResBlock(128), ResBlock(128)]
    width = 128
    for out in (128, 64, 32, 16):  # big_vision: features = dim, halved after each upsampling
        layers += [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
        width = out
    layers.append(nn.Conv2d(width, 1, 1))
    return nn.Sequential(*layers)


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]):
    """(embeddings, decoder) of a codebook file; ``stamp`` (mtime, size) makes a changed file load anew."""
    import torch

    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise OmnisegError(f"{path}: cannot read it as PaliGemma's mask codebook (vae-oid.npz): "
                           f"{type(e).__name__}: {e}") from None
    missing = [k for k in [EMBEDDING, *(f"{layer}.{p}" for layer in LAYERS for p in ("weight", "bias"))]
               if k not in arrays]
    if missing:
        raise OmnisegError(f"{path}: not PaliGemma's mask codebook (vae-oid.npz): no {', '.join(missing[:4])}"
                           + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
    emb = torch.from_numpy(np.asarray(arrays[EMBEDDING], np.float32))
    net = _network(emb.shape[1])
    state = {k.removeprefix("decoder."): torch.from_numpy(np.asarray(v, np.float32))
             for k, v in arrays.items() if k.startswith("decoder.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise OmnisegError(f"{path}: PaliGemma's mask codebook with layers of unexpected shapes: "
                           f"{' '.join(str(e).split())[50:350]}") from None
    return emb, net.eval()


def load(path: str | os.PathLike):
    """The codebook at ``path`` (loaded once per file version); OmnisegError naming the file when it is not one."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        raise OmnisegError(f"{p}: no such file (PaliGemma's mask codebook, vae-oid.npz)") from None
    with _lock:
        return _load(str(p), (st.st_mtime_ns, st.st_size))


def digest(path: str | os.PathLike) -> str:
    """sha256 of the codebook file: what a model's signature records (the same weights, wherever they lie)."""
    with open(Path(path).expanduser(), "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def decode(path: str | os.PathLike, indices: list[list[int]]) -> np.ndarray:
    """[B, 64, 64] maps in [-1, 1] for B masks of 16 codebook indices each."""
    import torch

    emb, net = load(path)
    idx = torch.as_tensor(np.asarray(indices, np.int64))
    grid = emb[idx.reshape(-1)].reshape(len(indices), 4, 4, emb.shape[1]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return net(grid)[:, 0].numpy()


def in_box(m64: np.ndarray, height: int, width: int) -> np.ndarray:
    """A decoded 64 x 64 map as the box's boolean mask (the demo's way: [0, 1], 8-bit, bilinear, above one half)."""
    grey = (np.clip(m64 * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
    resized = np.asarray(Image.fromarray(grey).resize((width, height), Image.BILINEAR), np.float32) / 255.0
    return resized > 0.5


def entries(path: str | os.PathLike) -> int:
    """How many codebook entries the file holds (an index at or past it is not a mask token)."""
    return int(load(path)[0].shape[0])

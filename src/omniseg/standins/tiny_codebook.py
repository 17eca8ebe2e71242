"""A stand-in for PaliGemma's mask codebook (big_vision's vae-oid.npz): the same keys and layer shapes, with a
smaller embedding and random (or constant) weights, so the `<seg>` decoder's tests run without the real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

def layers(dim: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, weight shape) of each decoder layer, as PyTorch stores them (a transposed convolution: in, out, kh, kw)."""
    out = [("decoder.0", (128, dim, 1, 1))]
    for b in (2, 3):
        out += [(f"decoder.{b}.net.0", (128, 128, 3, 3)), (f"decoder.{b}.net.2", (128, 128, 3, 3)),
                (f"decoder.{b}.net.4", (128, 128, 1, 1))]
    width = 128
    for i, o in zip((4, 6, 8, 10), (128, 64, 32, 16)):
        out.append((f"decoder.{i}", (width, o, 4, 4)))
        width = o
    return out + [("decoder.12", (1, 16, 1, 1))]


def save(path: Path, *, dim: int = 8, entries: int = 128, seed: int = 0, constant: float | None = None) -> Path:
    """Write the file; ``constant``: every weight 0 and the last bias ``constant`` (a decoder that answers it)."""
    rng = np.random.default_rng(seed)
    arrays = {"_vq_vae._embedding": rng.normal(0, 1, (entries, dim)).astype(np.float32)}
    for name, shape in layers(dim):
        transposed = name in ("decoder.4", "decoder.6", "decoder.8", "decoder.10")
        fan_in = shape[0] * shape[2] * shape[3] / 4 if transposed else shape[1] * shape[2] * shape[3]
        w = rng.normal(0, (2.0 / fan_in) ** 0.5, shape).astype(np.float32)
        b = rng.normal(0, 0.05, shape[1] if transposed else shape[0]).astype(np.float32)
        if constant is not None:
            w[:] = 0
            b[:] = constant if name == "decoder.12" else 0
        arrays[f"{name}.weight"], arrays[f"{name}.bias"] = w, b
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path

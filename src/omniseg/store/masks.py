"""The mask files beside the store: each prediction's mask (PNG, or NIfTI for a volume) and probability map, written
atomically (by rename) inside the store's folder before the row that points to them is committed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OmnisegError
from .database import Store
from .schema import file_name


def mask_file(task: str, model: str, sample_id: str, suffix: str = ".png") -> Path:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    return Path("masks") / file_name(task) / file_name(model) / (file_name(sample_id) + suffix)


def write_atomic(store: Store, rel: Path, write) -> str:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    dest = store.root / rel
    if not dest.resolve().is_relative_to(store.root.resolve()):  # never outside the store's folder
        raise OmnisegError(f"refusing to write {dest}: it is outside the store folder {store.root}")
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, dest)
    except OSError as e:
        with contextlib.suppress(OSError):  # the cleanup must not hide the error it cleans up after
            tmp.unlink(missing_ok=True)
        raise OmnisegError(f"cannot write {dest}: {e.strerror or e}; free disk space or make {dest.parent} "
                           "writable, then rerun the same command to resume (finished pairs are kept)") from None
    return rel.as_posix()


def write_mask(store: Store, task: str, model: str, sample_id: str, mask: np.ndarray,
               grid: np.ndarray | None = None) -> str:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    if mask.ndim == 3:  # a volume: NIfTI on its image's grid (``grid``, the canonical affine), 0/1 in uint8
        return write_atomic(store, mask_file(task, model, sample_id, ".nii.gz"),
                            lambda p: write_volume_mask(p, mask, grid))
    return write_atomic(store, mask_file(task, model, sample_id),
                        lambda p: Image.fromarray(mask.astype(bool)).save(p, format="PNG", compress_level=1))


def load_mask(store: Store, rel: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A stored mask file (``mask_path`` of a prediction) as a boolean array: an image's (resized to ``shape`` by
    nearest neighbour when it differs) or a volume's (depth, height, width)."""
    path = store.root / rel
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0) > 0
    img = Image.open(path).convert("L")
    if shape is not None and img.size != (shape[1], shape[0]):
        img = img.resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(img) > 127


def write_volume_mask(path: Path, mask: np.ndarray, grid: np.ndarray | None) -> None:
    """A (depth, height, width) mask as a NIfTI file (nibabel's x, y, z order) on ``grid`` (identity: none given)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)),
                          np.eye(4) if grid is None else np.asarray(grid, float))
    nib.save(img, str(path.with_name(path.name + ".nii.gz")))
    os.replace(path.with_name(path.name + ".nii.gz"), path)  # nibabel picks gzip by the name's ending

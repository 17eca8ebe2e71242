"""Volumes from NIfTI files: voxels in (depth, height, width) order with their spacing in millimetres, and the check
that an image and its label belong together (the first piece of volume support: docs/datasets.md).

nibabel reads them (pure Python over numpy, a few hundred kilobytes; SimpleITK would bring a 50 MB native library
for the same two calls). Every volume is brought to the closest canonical (RAS+) orientation first, so that two
files written with other axis orders or flips give the same array; the array is then transposed from nibabel's
(x, y, z) to (z, y, x): depth (slices), height, width, as the 2-D code's (rows, columns) per slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SampleError


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # (depth, height, width)
    spacing: tuple[float, float, float]  # mm per voxel along (depth, height, width)
    affine: np.ndarray  # the canonical voxel-to-world matrix (RAS+), 4 x 4
    path: Path


def read(path: str | Path, max_voxels: int | None = None) -> Volume:
    """A NIfTI file (.nii or .nii.gz) as a :class:`Volume`; SampleError naming the file when it is not one, or when it
    holds more than ``max_voxels`` voxels (``dataset.max_pixels``: checked from the header, before reading the data)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SampleError(f"missing file {path}")
    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as e:  # not NIfTI, a damaged header
        raise SampleError(f"{path}: not a readable NIfTI volume ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    if max_voxels and int(np.prod(shape)) > max_voxels:
        raise SampleError(f"{path} is {' x '.join(map(str, shape))} voxels ({np.prod(shape) / 1e6:.0f} million), over the "
                          f"limit of {max_voxels / 1e6:.0f} million: if it is meant to be that large, raise "
                          "dataset.max_pixels in the task configuration")
    try:
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj)
    except Exception as e:  # not NIfTI, truncated, compressed wrongly
        raise SampleError(f"{path}: not a readable NIfTI volume ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SampleError(f"{path}: a volume of {data.ndim} dimensions {data.shape}; expected 3 (x, y, z)")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), (zooms[2], zooms[1], zooms[0]), img.affine, path)


def check_pair(image: Volume, label: Volume, tolerance: float = 1e-3) -> None:
    """SampleError naming both files when a label does not lie on its image's grid: another shape, another spacing
    (relative difference over ``tolerance``) or another orientation or origin (the affines differ by more than
    ``tolerance`` of a voxel)."""
    where = f"{label.path} (label) and {image.path} (image)"
    if image.data.shape != label.data.shape:
        raise SampleError(f"{where} differ in shape: {label.data.shape} against {image.data.shape} (depth, height, width)")
    si, sl = np.array(image.spacing), np.array(label.spacing)
    if np.any(np.abs(si - sl) > tolerance * np.maximum(np.abs(si), 1e-9)):
        raise SampleError(f"{where} differ in voxel spacing: {tuple(round(v, 6) for v in label.spacing)} mm against "
                          f"{tuple(round(v, 6) for v in image.spacing)} mm")
    scale = float(np.min(si)) or 1.0
    if np.abs(image.affine - label.affine).max() > tolerance * scale:
        raise SampleError(f"{where} differ in orientation or origin: their voxel-to-world matrices are\n"
                          f"{np.round(label.affine, 4)}\nand\n{np.round(image.affine, 4)}")


def foreground(label: Volume, values: list[int] | None) -> np.ndarray:
    """A label volume as a boolean mask: voxels whose value is one of ``values`` (None: every non-zero voxel, the union
    of all foreground labels). A label map is integral: a fractional value is a file that is not one, refused."""
    data = label.data
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise SampleError(f"{label.path}: a label volume with fractional or non-finite values (e.g. "
                              f"{data[(data != np.round(data)) | ~np.isfinite(data)].flat[0]}); expected integer labels")
    if values is None:
        return data != 0
    return np.isin(data, values)


def nifti_stem(path: Path) -> str | None:
    """A NIfTI file's name without .nii or .nii.gz (any case); None for another file."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


#: the array axis each slicing plane cuts (arrays are (depth, height, width) of the canonical RAS+ volume)
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


def intensity_range(data: np.ndarray, window: tuple[float, float] | None,
                    percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """The values mapped to black and white: a CT window (level, width), else the volume's percentiles (on at most
    about a million voxels, evenly strided: the same answer for a 400-slice CT without sorting 100 million values)."""
    if window is not None:
        level, width = window
        return level - width / 2, level + width / 2
    step = max(1, int(round((data.size / 1e6) ** (1 / 3))))
    few = data[::step, ::step, ::step].astype(np.float32)
    few = few[np.isfinite(few)]
    if few.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(few, percentiles)
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def to_rgb(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """One slice as the 8-bit RGB image a 2-D model is given: ``lo`` black, ``hi`` white, values outside clipped."""
    grey = np.clip((plane.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
    grey = np.nan_to_num(grey, nan=0.0).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def selected(mask: np.ndarray, axis: int, select: str, margin: int, every: int) -> list[int]:
    """Indices of the slices along ``axis`` a 2-D model is asked about: every one, every ``every``-th, or those with
    reference foreground widened by ``margin`` on each side (none when the reference is empty)."""
    n = mask.shape[axis]
    if select == "all":
        return list(range(n))
    if select == "every":
        return list(range(0, n, every))
    other = tuple(a for a in range(3) if a != axis)
    hit = np.flatnonzero(mask.any(axis=other))
    keep = set()
    for k in hit:
        keep.update(range(max(0, k - margin), min(n, k + margin + 1)))
    return sorted(keep)

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


def read(path: str | Path) -> Volume:
    """A NIfTI file (.nii or .nii.gz) as a :class:`Volume`; SampleError naming the file when it is not one."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
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

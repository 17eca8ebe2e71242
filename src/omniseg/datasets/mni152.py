"""Real volumes without a download: the MNI152 2009a template (T1) and its tissue probability maps, which nilearn's
wheel ships as NIfTI files, written as a `nifti` dataset for the volume demo (`omniseg demo --volumes`) and tests.

One template is one head, so it is cut into samples: slabs of axial slices, each split into the left and right
hemisphere, subsampled to an anisotropic grid (3 mm between slices, 2 mm in plane by default). The reference is the
tissue's probability map at or above one half; the task is to find it in the T1 (white matter: the brightest tissue
of a T1, an easy target; grey matter: a hard one). nilearn is only read from, never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import OmnisegError

FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
         "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
         "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"}


def template_file(which: str) -> Path:
    """The path of one of nilearn's template files (OmnisegError saying how to install nilearn when it is absent)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise OmnisegError("the MNI152 template comes with nilearn's wheel: pip install nilearn (or pip install -e "
                           "'.[volumes]')")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / FILES[which]
    if not path.is_file():
        raise OmnisegError(f"{path}: not in this nilearn installation (nilearn >= 0.10 ships it)")
    return path


def write_slabs(root: Path, target: str = "wm", step: tuple[int, int, int] = (3, 2, 2), slab: int = 6) -> Path:
    """Write ``root/images/<id>.nii.gz`` (the T1) and ``root/labels/<id>.nii.gz`` (``target`` probability >= 0.5):
    slabs of ``slab`` slices on the grid subsampled by ``step`` (depth, height, width), each hemisphere a sample;
    slabs without any target voxel are left out. Returns ``root``."""
    import nibabel as nib

    t1 = nib.as_closest_canonical(nib.load(str(template_file("t1"))))
    prob = nib.as_closest_canonical(nib.load(str(template_file(target))))
    sz, sy, sx = step
    image = np.asarray(t1.dataobj)[::sx, ::sy, ::sz]  # nibabel's (x, y, z)
    label = (np.asarray(prob.dataobj)[::sx, ::sy, ::sz] >= 128).astype(np.uint8)  # stored as 0..255
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    half = image.shape[0] // 2
    for k in range(0, image.shape[2] - slab + 1, slab):
        for side, (x0, x1) in (("left", (0, half)), ("right", (half, image.shape[0]))):
            part = label[x0:x1, :, k:k + slab]
            if not part.any():
                continue
            affine = t1.affine @ np.array([[sx, 0, 0, x0 * sx], [0, sy, 0, 0], [0, 0, sz, k * sz], [0, 0, 0, 1]], float)
            sid = f"mni152-z{k // slab:02d}-{side}"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(image[x0:x1, :, k:k + slab]), affine),
                     str(root / "images" / f"{sid}.nii.gz"))
            nib.save(nib.Nifti1Image(np.ascontiguousarray(part), affine), str(root / "labels" / f"{sid}.nii.gz"))
    return root

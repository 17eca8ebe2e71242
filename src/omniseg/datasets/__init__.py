"""Datasets: readers of each layout (Kvasir-SEG, BUSI, DRIVE, any folder), `init`'s inference and `data fetch`.
Adding one: a module with a :class:`~.base.Dataset` subclass and one line here.

May import only the shared modules (and, for `init`, nothing else of omniseg).
"""

from __future__ import annotations

from ..registry import Registry
from .base import Dataset, Sample, SampleRef

REGISTRY = Registry(
    "dataset",
    {
        "kvasir-seg": "omniseg.datasets.kvasir:KvasirSeg",
        "drive": "omniseg.datasets.drive:Drive",
        "busi": "omniseg.datasets.busi:Busi",
        "folder": "omniseg.datasets.folder:FolderDataset",
        "nifti": "omniseg.datasets.nifti:NiftiFolder",
        "nnunet-raw": "omniseg.datasets.nnunet_raw:NnunetRaw",
    },
)
get = REGISTRY.get
names = REGISTRY.names


def open(name: str, root, options: dict | None = None, max_pixels: int | None = None) -> Dataset:
    """A dataset of the registered kind ``name`` at ``root``, its readers held to ``max_pixels`` (None: the default)."""
    ds = get(name)(root, options)
    ds.limit_pixels(max_pixels)
    return ds


__all__ = ["Dataset", "Sample", "SampleRef", "REGISTRY", "get", "names", "open"]

"""Dataset adapters. Adding one: write a module with a :class:`~.base.Dataset` subclass and add one line here."""

from __future__ import annotations

from .._registry import Registry
from .base import Dataset, Sample, SampleRef

REGISTRY = Registry(
    "dataset",
    {
        "kvasir-seg": "omniseg.datasets.kvasir:KvasirSeg",
        "drive": "omniseg.datasets.drive:Drive",
        "busi": "omniseg.datasets.busi:Busi",
        "folder": "omniseg.datasets.folder:FolderDataset",
    },
)
get = REGISTRY.get
names = REGISTRY.names

__all__ = ["Dataset", "Sample", "SampleRef", "REGISTRY", "get", "names"]

"""BUSI (Al-Dhabyani et al., Data in Brief 2020): breast ultrasound with tumour masks."""

from __future__ import annotations

import re

import numpy as np
from pydantic import Field

from ..errors import SampleError
from ..options import Options
from .base import Dataset, FetchSpec, Sample, SampleRef, files_with, read_mask, read_rgb, same_size, split_of

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<id>.+)_mask(?:_(?P<n>\d+))?$")


class BusiOptions(Options):
    include_normal: bool = Field(False, description="include 'normal' cases (empty masks); off for tumour segmentation")


class Busi(Dataset):
    """BUSI breast ultrasound. `_mask_N.png` files are OR-merged with `_mask.png`."""

    name = "busi"
    task = "breast"
    Options = BusiOptions
    layout = (
        "  <root>/{benign,malignant,normal}/<class> (N).png\n"
        "  <root>/{benign,malignant,normal}/<class> (N)_mask.png   (+ _mask_1.png, ... for multifocal cases)"
    )
    fetch = FetchSpec(
        url="https://scholar.cu.edu.eg/Dataset_BUSI.zip",
        archive_root="Dataset_BUSI_with_GT",
        expected={"benign/*).png": 437, "malignant/*).png": 210, "normal/*).png": 133},
        note="BUSI is published for research (Al-Dhabyani et al. 2020); about 19% of its images are near-duplicates.",
    )

    def _classes(self) -> tuple[str, ...]:
        return CLASSES if self.options.include_normal else CLASSES[:2]

    def _missing(self) -> list[str]:
        return [c + "/" for c in self._classes() if not (self.root / c).is_dir()]

    def _refs(self) -> list[SampleRef]:
        refs = []
        for cls in self._classes():
            images, masks = {}, {}
            for p in files_with(self.root / cls, ".png"):
                m = _MASK.match(p.stem)
                if m:
                    masks.setdefault(m["id"], []).append(p)
                else:
                    images[p.stem] = p
            for sid in sorted(images.keys() | masks.keys()):
                problem = None
                if sid not in masks:
                    problem = f"missing mask {cls}/{sid}_mask.png for {cls}/{sid}.png"
                elif sid not in images:
                    problem = f"mask {cls}/{sid}_mask.png has no image {cls}/{sid}.png"
                files = {"image": images.get(sid), "masks": sorted(masks.get(sid, []))}
                refs.append(SampleRef(sid, split_of(self.name, sid, cls), files, meta={"class": cls}, problem=problem))
        return refs

    def load(self, ref: SampleRef) -> Sample:
        if ref.problem:
            raise SampleError(ref.problem)
        image = read_rgb(ref.files["image"], self.max_pixels)
        mask = np.zeros(image.shape[:2], dtype=bool)
        notes: list[str] = []
        for p in ref.files["masks"]:
            m = read_mask(p, notes=notes, max_pixels=self.max_pixels)
            same_size(ref.id, image, mask=(p, m))
            mask |= m
        return Sample(ref.id, image, mask, meta={"split": ref.split, **ref.meta}, notes=tuple(notes))

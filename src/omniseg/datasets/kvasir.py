"""Kvasir-SEG (Jha et al., MMM 2020): 1000 colonoscopy images with polyp masks."""

from __future__ import annotations

from ..errors import SampleError
from .base import Dataset, FetchSpec, Sample, SampleRef, files_with, read_mask, read_rgb, same_size, split_of


class KvasirSeg(Dataset):
    """Kvasir-SEG polyps. Masks are JPEGs: binarized at grey level 128."""

    name = "kvasir-seg"
    task = "polyp"
    layout = "  <root>/images/<id>.jpg\n  <root>/masks/<id>.jpg   (same stem as the image)"
    fetch = FetchSpec(
        url="https://datasets.simula.no/downloads/kvasir-seg.zip",
        archive_root="Kvasir-SEG",
        expected={"images/*.jpg": 1000, "masks/*.jpg": 1000},
        note="Kvasir-SEG is free for research and education; commercial use needs permission. Cite Jha et al. 2020.",
    )

    def _missing(self) -> list[str]:
        return [d + "/" for d in ("images", "masks") if not (self.root / d).is_dir()]

    def _refs(self) -> list[SampleRef]:
        images = {p.stem: p for p in files_with(self.root / "images", ".jpg", ".jpeg")}
        masks = {p.stem: p for p in files_with(self.root / "masks", ".jpg", ".jpeg")}
        refs = []
        for sid in sorted(images.keys() | masks.keys()):
            problem = None
            if sid not in masks:
                problem = f"missing mask masks/{sid}.jpg for images/{images[sid].name}"
            elif sid not in images:
                problem = f"mask masks/{masks[sid].name} has no image images/{sid}.jpg"
            refs.append(
                SampleRef(sid, split_of(self.name, sid), {"image": images.get(sid), "mask": masks.get(sid)}, problem=problem)
            )
        return refs

    def load(self, ref: SampleRef) -> Sample:
        if ref.problem:
            raise SampleError(ref.problem)
        image = read_rgb(ref.files["image"], self.max_pixels)
        notes: list[str] = []
        mask = read_mask(ref.files["mask"], notes=notes, max_pixels=self.max_pixels)
        same_size(ref.id, image, mask=(ref.files["mask"], mask))
        return Sample(ref.id, image, mask, meta={"split": ref.split}, notes=tuple(notes))

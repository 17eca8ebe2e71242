"""DRIVE (Staal et al., IEEE TMI 2004): retinal vessels, official 20/20 train/test split."""

from __future__ import annotations

from ..errors import SampleError
from .base import Dataset, Sample, SampleRef, files_with, read_mask, read_rgb, same_size

_FOLDERS = {"train": "training", "test": "test"}


class Drive(Dataset):
    """DRIVE retinal vessels; metrics are counted inside the field-of-view mask."""

    name = "drive"
    task = "vessel"
    obtain = (
        "DRIVE may not be redistributed, so omniseg cannot download it: register at "
        "https://drive.grand-challenge.org/, download the training and test archives and unpack them "
        "so that the layout above holds"
    )
    layout = (
        "  <root>/training/{images/NN_training.tif, 1st_manual/NN_manual1.gif, mask/NN_training_mask.gif}  (NN 21-40)\n"
        "  <root>/test/{images/NN_test.tif, 1st_manual/NN_manual1.gif, 2nd_manual/NN_manual2.gif, "
        "mask/NN_test_mask.gif}  (NN 01-20)"
    )

    def _missing(self) -> list[str]:
        return [f"{d}/images/" for d in _FOLDERS.values() if not (self.root / d / "images").is_dir()]

    def _refs(self) -> list[SampleRef]:
        refs = []
        for split, folder in _FOLDERS.items():
            base = self.root / folder
            for img in files_with(base / "images", ".tif", ".tiff"):
                sid = img.stem  # e.g. 21_training, 01_test
                nn = sid.split("_")[0]
                files = {
                    "image": img,
                    "mask": base / "1st_manual" / f"{nn}_manual1.gif",
                    "fov": base / "mask" / f"{sid}_mask.gif",
                }
                if split == "test":
                    files["human"] = base / "2nd_manual" / f"{nn}_manual2.gif"
                problem = next(
                    (f"missing {k} {p.relative_to(self.root)}" for k, p in files.items() if k != "human" and not p.is_file()),
                    None,
                )
                refs.append(SampleRef(sid, split, files, problem=problem))
        return refs

    def load(self, ref: SampleRef) -> Sample:
        if ref.problem:
            raise SampleError(ref.problem)
        image = read_rgb(ref.files["image"], self.max_pixels)
        notes: list[str] = []
        mask = read_mask(ref.files["mask"], notes=notes, max_pixels=self.max_pixels)
        fov = read_mask(ref.files["fov"], max_pixels=self.max_pixels)
        same_size(ref.id, image, mask=(ref.files["mask"], mask), fov=(ref.files["fov"], fov))
        extra = {}
        human = ref.files.get("human")
        if human is not None and human.is_file():
            h = read_mask(human, max_pixels=self.max_pixels)
            same_size(ref.id, image, human=(human, h))
            extra["human"] = h
        return Sample(ref.id, image, mask, roi=fov, meta={"split": ref.split}, extra=extra, notes=tuple(notes))

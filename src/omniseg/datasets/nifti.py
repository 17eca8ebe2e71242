"""A folder of NIfTI volumes and their label volumes: the `nifti` dataset kind (docs/datasets.md, "Volumes").

``images/`` holds one volume per sample (``.nii`` or ``.nii.gz``; a trailing ``_0000``, nnU-Net's channel suffix,
is not part of the id), ``labels/`` its label volume of the same name. The foreground is every non-zero label, or
the values listed in ``labels``. An image and its label must share shape, spacing and orientation
(:func:`omniseg.datasets.volumes.check_pair`); a sample without a label is listed with that problem.
"""

from __future__ import annotations

from pathlib import Path
from pydantic import Field

from ..errors import DataMissingError
from ..options import Options
from . import volumes
from .base import Dataset, Sample, SampleRef, split_of


class NiftiOptions(Options):
    images: str = Field("images", description="folder of image volumes, relative to the dataset root")
    labels: str = Field("labels", description="folder of label volumes (same names as the images)")
    channel: int = Field(0, ge=0, description="which modality of a multi-modal case: the file {id}_000{channel}")
    foreground: list[int] | None = Field(None, min_length=1, description="label values that are the target (default: "
                                                                         "every non-zero label, their union)")
    split: str = Field("hash", description="'hash' (20% test by a salted hash of the id), 'test' or 'train'")
    tolerance: float = Field(1e-3, gt=0, description="relative difference of spacing (and of the voxel-to-world "
                                                     "matrices) above which an image and its label are refused")


class NiftiFolder(Dataset):
    name = "nifti"
    task = "volume"
    layout = "  images/<id>.nii.gz   (or <id>_0000.nii.gz, nnU-Net's naming)\n  labels/<id>.nii.gz"
    obtain = "point dataset.root at your folder of NIfTI volumes (`omniseg init` writes the configuration)"
    Options = NiftiOptions
    volumetric = True

    def _missing(self) -> list[str]:
        return [f"{d}/" for d in (self.options.images, self.options.labels) if not (self.root / d).is_dir()]

    def target(self) -> list[int] | None:
        """The label values that are the target (None: every non-zero one)."""
        return self.options.foreground

    def _split(self, sample_id: str) -> str:
        return self.options.split if self.options.split in ("test", "train") else split_of(self.name, sample_id)

    def _cases(self, images: Path, labels: Path | None) -> list[SampleRef]:
        """One ref per image volume of ``images``; its label from ``labels`` (None: an unlabelled folder)."""
        channel = f"_{self.options.channel:04d}"
        found: dict[str, Path] = {}
        for p in sorted(images.iterdir()) if images.is_dir() else []:
            stem = volumes.nifti_stem(p)
            if stem is None or p.name.startswith("."):
                continue
            if stem[-5:-4] == "_" and stem[-4:].isdigit():  # nnU-Net's {case}_{modality}: keep the chosen one
                if stem[-5:] != channel:
                    continue
                stem = stem[:-5]
            found[stem] = p
        refs = []
        for sid, image in found.items():
            label = None if labels is None else next(
                (labels / f"{sid}{s}" for s in (".nii.gz", ".nii") if (labels / f"{sid}{s}").is_file()), None)
            problem = None if label is not None else f"{image} has no label volume {sid}.nii.gz in {labels}"
            refs.append(SampleRef(sid, self._split(sid), {"image": image, "label": label}, problem=problem))
        return refs

    def _refs(self) -> list[SampleRef]:
        refs = self._cases(self.root / self.options.images, self.root / self.options.labels)
        if not refs:
            raise DataMissingError(f"{self.name}: no .nii or .nii.gz volume in {self.root / self.options.images}.\n"
                                   f"Expected layout:\n{self.layout}")
        return refs

    def load(self, ref: SampleRef) -> Sample:
        from ..errors import SampleError

        if ref.problem:
            raise SampleError(ref.problem)
        image = volumes.read(ref.files["image"], self.max_pixels)
        label = volumes.read(ref.files["label"], self.max_pixels)
        volumes.check_pair(image, label, self.options.tolerance)
        mask = volumes.foreground(label, self.target())
        notes = () if mask.any() else (f"label {label.path.name} has no voxel of the target labels",)
        return Sample(ref.id, image.data, mask, meta={"depth": int(mask.shape[0])}, notes=notes,
                      spacing=image.spacing, affine=image.affine)

"""An nnU-Net v2 (or Medical Segmentation Decathlon) raw dataset read as it is: the `nnunet-raw` dataset kind, the
reverse of `omniseg export nnunet`.

``dataset.json`` names the labels and the file ending; ``imagesTr/{case}_0000.nii.gz`` with ``labelsTr/{case}.nii.gz``
are the labelled cases. Without ``labelsTs/`` (nnU-Net's usual layout: the test images carry no labels) the labelled
cases are split by the salted hash of the id, as every dataset without an official split is; with ``labelsTs/``,
``imagesTs`` are the test split and ``imagesTr`` the training split. The target is one label, chosen by name or value
(``label``), or the union of every foreground label (the default, stated by `data verify`).
"""

from __future__ import annotations

import json

from pydantic import Field

from ..errors import DataMissingError, OmnisegError
from .base import SampleRef
from .nifti import NiftiFolder, NiftiOptions


class NnunetRawOptions(NiftiOptions):
    label: str | int | None = Field(None, description="the target: a label name of dataset.json or its value "
                                                       "(default: the union of every foreground label)")


class NnunetRaw(NiftiFolder):
    name = "nnunet-raw"
    layout = ("  dataset.json\n  imagesTr/<case>_0000.nii.gz\n  labelsTr/<case>.nii.gz\n"
              "  imagesTs/<case>_0000.nii.gz   (and labelsTs/<case>.nii.gz: then they are the test split)")
    obtain = "point dataset.root at a DatasetXXX_Name folder of nnU-Net's raw data (nnUNet_raw)"
    Options = NnunetRawOptions

    def _missing(self) -> list[str]:
        return [n for n in ("dataset.json", "imagesTr/", "labelsTr/") if not (self.root / n.rstrip("/")).exists()]

    def description(self) -> dict:
        path = self.root / "dataset.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataMissingError(f"{path}: not readable as JSON ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict):
            raise DataMissingError(f"{path}: expected an object with `labels` (e.g. {{\"background\": 0, \"tumour\": 1}})")
        return doc

    def labels(self) -> dict[str, int]:
        """name -> value of dataset.json's labels, from nnU-Net v2's {name: value} or the Decathlon's {value: name}
        (a region-based label with a list of values keeps its first)."""
        out = {}
        for k, v in self.description()["labels"].items():
            if isinstance(v, str) and k.lstrip("-").isdigit():  # Decathlon: {"0": "background", "1": "liver"}
                out[v] = int(k)
            else:
                out[k] = int(v[0] if isinstance(v, list) else v)
        return out

    def target(self) -> list[int] | None:
        """The label values that are the target (None: every non-zero one)."""
        choice = self.options.label
        if choice is None:
            return self.options.foreground
        labels = self.labels()
        if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
            if int(choice) not in labels.values() or int(choice) == 0:
                raise OmnisegError(f"{self.root / 'dataset.json'}: no foreground label of value {choice} (labels: {labels})")
            return [int(choice)]
        if choice not in labels or labels[choice] == 0:
            raise OmnisegError(f"dataset option label: {choice!r} is not a foreground label of "
                               f"{self.root / 'dataset.json'} (labels: {labels})")
        return [labels[choice]]

    def _refs(self) -> list[SampleRef]:
        self.target()  # a label that dataset.json does not have is a configuration error, said before any reading
        ending = self.description().get("file_ending", ".nii.gz")
        if ending.lower() not in (".nii.gz", ".nii"):
            raise DataMissingError(f"{self.root / 'dataset.json'}: file_ending {ending!r}; this kind reads NIfTI "
                                   "volumes (.nii.gz, .nii); a 2-D dataset in PNGs is read by the `folder` kind")
        if (self.root / "labelsTs").is_dir():
            refs = [SampleRef(r.id, "train", r.files, problem=r.problem)
                    for r in self._cases(self.root / "imagesTr", self.root / "labelsTr")]
            refs += [SampleRef(r.id, "test", r.files, problem=r.problem)
                     for r in self._cases(self.root / "imagesTs", self.root / "labelsTs")]
        else:
            refs = self._cases(self.root / "imagesTr", self.root / "labelsTr")
        if not refs:
            raise DataMissingError(f"{self.name}: no case in {self.root / 'imagesTr'}.\nExpected layout:\n{self.layout}")
        return refs

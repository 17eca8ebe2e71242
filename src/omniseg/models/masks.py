"""Predictions already on disk: the `masks` model kind (nnU-Net's, MedSAM2's, a vendor's or another lab's masks).

omniseg does not run the model; it reads one file per sample from ``folder`` (found by ``pattern`` as the
`folder` dataset finds masks) and scores it like any other model's answer. A sample with no file is a row
with status 'missing', scored as an empty prediction and counted in the failure rate: never dropped, since a
model that fails on the hard cases must not look better for it (nnU-Net's own evaluator skips such cases).

The signature hashes the name and content of every prediction file in the folder, so a changed, added or
removed file is noticed (the store then asks for ``--force`` or another model name), while moving the
folder is not a change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from ..datasets.base import DEFAULT_MAX_PIXELS, Sample, binarize_rgb, check_pixels, files_with
from ..datasets.folder import read_array, stem_matcher, to_8bit
from ..errors import OmnisegError, SampleError
from ..options import Options
from .base import Prediction, Segmenter

#: file types a prediction may have (any letter case); .npy arrays are read without pickles
SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".bmp", ".jpg", ".jpeg")


class MasksOptions(Options):
    folder: Path = Field(description="folder of prediction files; relative paths are taken from the current directory")
    pattern: str = Field("{id}", description="stem of a sample's prediction file: {id} is the sample id, * matches "
                                             "anything (several files are united), e.g. '{id}_pred'")
    values: Literal["binary", "probability", "labels"] = Field(
        "binary", description="binary: masks (0/255, or 0/1 as nnU-Net writes them); probability: maps thresholded "
                              "at `threshold`; labels: label maps, `labels` are foreground")
    threshold: float = Field(0.5, gt=0, le=1, description="probability maps: foreground at or above this, on 0..1 "
                                                          "(8- and 16-bit files are divided by their type's maximum)")
    labels: list[int] | None = Field(None, min_length=1, description="label maps: the values that are foreground")
    channel: int | None = Field(None, ge=0, description="which channel of a multi-channel file to read (default: "
                                                        "the grey level of a binary RGB file, channel 0 of a label "
                                                        "map; a probability map must then have one channel)")
    id_map: Path | None = Field(None, description="a TSV or CSV file with columns `case` (the file's {id}) and `id` "
                                                   "(the sample's), when files are not named by sample id (`omniseg "
                                                   "export nnunet` writes one)")
    size: Literal["refuse", "resize"] = Field(
        "refuse", description="a prediction whose size differs from the image's: 'refuse' (an error row naming both "
                              "sizes) or 'resize' (nearest neighbour; probability maps bilinear, then thresholded)")

    @model_validator(mode="after")
    def _labels_with_label_maps(self):
        if self.values == "labels" and self.labels is None:
            raise ValueError("values: labels needs `labels`, the values that are foreground (e.g. labels: [1])")
        if self.values != "labels" and self.labels is not None:
            raise ValueError(f"`labels` is only read with values: labels (values is {self.values!r})")
        return self


def read_npy(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A .npy array, its size checked against the pixel limit from the header, before the data is read."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # a damaged header, a pickled object array, not an .npy file at all
        raise SampleError(f"unreadable file {path}: {e}") from None
    if arr.ndim not in (2, 3):
        raise SampleError(f"{path} holds an array of shape {arr.shape}; expected HxW, HxWxC or CxHxW")
    planar = arr.ndim == 3 and arr.shape[0] <= 4 < arr.shape[2]
    h, w = arr.shape[1:3] if planar else arr.shape[:2]
    check_pixels(path, w, h, max_pixels)
    arr = np.asarray(arr)
    return np.moveaxis(arr, 0, -1) if planar else arr


def read_id_map(path: Path) -> dict[str, str]:
    """``id -> case`` from a TSV or CSV file with a header naming the columns ``case`` and ``id``."""
    import csv

    try:
        text = path.read_text()
    except OSError as e:
        raise OmnisegError(f"options.id_map {path}: {e.strerror or e}") from None
    delimiter = "\t" if "\t" in text.partition("\n")[0] else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or not {"case", "id"} <= set(rows[0]):
        raise OmnisegError(f"options.id_map {path}: expected a header with the columns 'case' and 'id'")
    out: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):
        if row["id"] in out and out[row["id"]] != row["case"]:
            raise OmnisegError(f"options.id_map {path} line {n}: id {row['id']!r} is given two cases")
        out[row["id"]] = row["case"]
    return out


class MasksFromDisk(Segmenter):
    kind = "masks"
    role = "specialist"  # nnU-Net's masks, the usual case; a config entry's `role:` says otherwise
    Options = MasksOptions
    unhashed = ("folder",)  # where the files are is not what they say (their content is hashed)

    def __init__(self, name: str, options: MasksOptions | None = None):
        super().__init__(name, options)
        self._files: list[Path] | None = None
        self._listing: str | None = None
        self._match = None
        self._cases: dict[str, str] | None = None

    def _case_of(self) -> dict[str, str] | None:
        """sample id -> the {id} of its file, from ``id_map`` (None without one)."""
        if self._cases is None and self.options.id_map is not None:
            self._cases = read_id_map(self.options.id_map)
        return self._cases

    def _prediction_files(self) -> list[Path]:
        if self._files is None:
            folder = self.options.folder
            if not folder.is_dir():
                raise OmnisegError(f"model {self.name!r}: options.folder {folder} is not a folder (the predictions "
                                   "to read; relative paths are taken from the current directory)")
            self._files = files_with(folder, *SUFFIXES)
            self._match = stem_matcher(folder, self.options.pattern, SUFFIXES)
        return self._files

    def check_ready(self) -> None:
        self._case_of()
        if not self._prediction_files():
            raise OmnisegError(f"model {self.name!r}: no prediction files ({', '.join(SUFFIXES)}) in "
                               f"{self.options.folder}")

    def listing_hash(self) -> str:
        """sha256 over the name and content of every prediction file in the folder."""
        if self._listing is None:
            h = hashlib.sha256()
            for p in self._prediction_files():
                h.update(p.name.encode() + b"\0")
                with open(p, "rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
            self._listing = h.hexdigest()
        return self._listing

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["folder"] = sig["options"].pop("folder")
        sig["files"] = {"count": len(self._prediction_files()), "sha256": self.listing_hash()}
        if self.options.id_map is not None:  # which file a sample reads is part of the answer
            sig["options"]["id_map"] = hashlib.sha256(self.options.id_map.read_bytes()).hexdigest()
        return sig

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, probability map or None) of one file, at the file's own size."""
        arr = read_npy(path) if path.suffix.lower() == ".npy" else read_array(path)
        o = self.options
        if arr.ndim == 3 and o.channel is not None:
            if o.channel >= arr.shape[2]:
                raise SampleError(f"{path} has {arr.shape[2]} channels; options.channel is {o.channel}")
            arr = arr[..., o.channel]
        if o.values == "labels":
            values = arr if arr.ndim == 2 else arr[..., 0]
            return np.isin(values, o.labels), None
        if o.values == "probability":
            if arr.ndim == 3:
                raise SampleError(f"{path} has {arr.shape[2]} channels; say which holds the probability (options.channel)")
            if np.issubdtype(arr.dtype, np.integer):
                prob = arr.astype(np.float32) / np.iinfo(arr.dtype).max
            else:
                prob = np.nan_to_num(arr.astype(np.float32))
            return prob >= o.threshold, prob
        if arr.dtype != bool and np.issubdtype(arr.dtype, np.integer) and arr.size and int(arr.max()) == 1 \
                and int(arr.min()) >= 0:
            return (arr if arr.ndim == 2 else arr.max(axis=-1)) >= 1, None  # a 0/1 label file (nnU-Net's)
        v = to_8bit(arr)
        rgb = np.repeat(v[..., None], 3, axis=-1) if v.ndim == 2 else v[..., :3]
        return binarize_rgb(np.ascontiguousarray(rgb), path, 128), None

    def predict(self, sample: Sample) -> Prediction:
        self._prediction_files()
        cases = self._case_of()
        if cases is not None and sample.id not in cases:
            return Prediction.failed(f"{sample.id} is not in options.id_map {self.options.id_map}", status="missing")
        paths = self._match(cases[sample.id] if cases is not None else sample.id)
        if not paths:
            return Prediction.failed(f"no prediction for {sample.id} in {self.options.folder} "
                                     f"(pattern {self.options.pattern!r})", status="missing")
        h, w = sample.mask.shape
        mask = np.zeros((h, w), bool)
        prob = None
        for path in paths:
            try:
                m, p = self._read(path)
            except SampleError as e:
                return Prediction.failed(str(e), file=path.name)
            if m.shape != (h, w):
                if self.options.size == "refuse":
                    return Prediction.failed(
                        f"{sample.id}: prediction {path.name} is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h} "
                        "(options.size: resize to resize it)", file=path.name)
                if p is not None:
                    p = np.asarray(Image.fromarray(p.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
                    m = p >= self.options.threshold
                else:
                    m = np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
            mask |= m
            prob = p if prob is None or p is None else np.maximum(prob, p)
        return Prediction(mask=mask, prob=prob, meta={"files": [p.name for p in paths]})

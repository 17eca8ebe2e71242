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

import fnmatch
import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from ..datasets.base import DEFAULT_MAX_PIXELS, Sample, check_pixels, files_with
from ..datasets.folder import read_array, stem_matcher, to_8bit
from ..errors import OmnisegError, SampleError
from ..options import Options
from .base import Prediction, Segmenter

#: file types a prediction may have (any letter case); .npy arrays are read without pickles; .nii and .nii.gz are a
#: volume's (nnU-Net's 3d_fullres output)
SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".bmp", ".jpg", ".jpeg", ".nii", ".gz")


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
    """``id -> case`` from a TSV or CSV file with a header naming the columns ``case`` and ``id`` (quoted fields as
    the csv module writes them, as `omniseg export nnunet` does; a byte-order mark is allowed)."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            head = f.readline()
            f.seek(0)
            delimiter = "\t" if "\t" in head else ","
            rows = list(csv.DictReader(f, delimiter=delimiter))
    except OSError as e:
        raise OmnisegError(f"options.id_map {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise OmnisegError(f"options.id_map {path}: not a UTF-8 TSV or CSV file ({e})") from None
    if not rows or not {"case", "id"} <= set(rows[0]):
        raise OmnisegError(f"options.id_map {path}: expected a header with the columns 'case' and 'id'")
    out: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):
        if row["id"] is None or row["case"] is None:
            raise OmnisegError(f"options.id_map {path} row {n}: fewer fields than the header names")
        if row["id"] in out and out[row["id"]] != row["case"]:
            raise OmnisegError(f"options.id_map {path} row {n}: id {row['id']!r} is given two cases")
        out[row["id"]] = row["case"]
    return out


def binary(arr: np.ndarray) -> np.ndarray:
    """A binary mask read by its own values, whatever its type (the rule: `foreground`); colour files are read by
    their grey level (Pillow's luma), other files with channels by their strongest channel."""
    if arr.dtype == bool:
        return arr if arr.ndim == 2 else arr.any(axis=-1)
    if np.issubdtype(arr.dtype, np.floating):
        arr = to_8bit(arr)
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and arr.min() >= 0 and 1 < arr.max() <= 255:
            rgb = np.ascontiguousarray(arr[..., :3].astype(np.uint8))
            arr = np.asarray(Image.fromarray(rgb).convert("L"))
        else:  # 0/1 label files, two-channel and wide-range files: the strongest channel
            arr = arr.max(axis=-1)
    return foreground(arr)


def foreground(arr: np.ndarray) -> np.ndarray:
    """The binary rule over values without a channel axis (an image's grey levels, a volume's voxels). Values of one
    sign (0 and positive, or 0 and negative): foreground is more than half the largest magnitude, so 0/1, 0/255,
    0/65535 and palette indices 0/2 read alike (for 8-bit files this is the grey level 128 every black-and-white
    reader uses, and JPEG noise stays background). Values of both signs (-1/1): above the middle of their range.
    Real numbers are first put on 0..1 (above 1 counts as 1; NaN is background)."""
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        arr = to_8bit(arr)
    if not arr.size:
        return np.zeros(arr.shape, bool)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 < hi:
        return arr > (lo + hi) / 2
    size = np.abs(arr.astype(np.float64))  # float64: the magnitude of int64's lowest value has no int64
    return size > size.max() / 2


def mask_values(arr: np.ndarray, path: Path) -> None:
    """SampleError naming the file when its values cannot be a mask (complex numbers, records, strings)."""
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise SampleError(f"{path} holds {arr.dtype} values; a mask holds integers, booleans or real numbers")


def probability(arr: np.ndarray, path: Path) -> np.ndarray:
    """A probability map on 0..1: real numbers as they are (NaN: 0); 8-bit files divided by 255 and 16-bit ones
    by 65535; other integer types by 255 when their values fit 8 bits, else by 65535 when they fit 16 bits."""
    if not np.issubdtype(arr.dtype, np.integer):
        return np.nan_to_num(arr.astype(np.float32))
    if arr.size and int(arr.min()) < 0:
        raise SampleError(f"{path} holds negative values ({int(arr.min())}); a probability map holds 0..1, or "
                          "0..255 / 0..65535 in an integer file")
    hi = int(arr.max()) if arr.size else 0
    if arr.dtype in (np.uint8, np.uint16):
        scale = np.iinfo(arr.dtype).max
    elif hi <= 255:
        scale = 255
    elif hi <= 65535:
        scale = 65535
    else:
        raise SampleError(f"{path} holds {arr.dtype} values up to {hi}; a probability map in an integer file is "
                          "0..255 or 0..65535")
    return arr.astype(np.float32) / scale


class MasksFromDisk(Segmenter):
    kind = "masks"
    role = "specialist"  # nnU-Net's masks, the usual case; a config entry's `role:` says otherwise
    version = "2"  # 2: binary files read by their own range (int64 0/255, 16-bit 0/255, -1/1, palette indices)
    Options = MasksOptions
    inert = ("folder",)  # where the files are is not what they say (their content is hashed) ...
    unhashed = ("folder",)  # ... but the manifest names it
    volumetric = True  # a volume's prediction is one NIfTI file, read whole

    def __init__(self, name: str, options: MasksOptions | None = None):
        super().__init__(name, options)
        self._files: list[Path] | None = None
        self._listing: str | None = None
        self._match = None
        self._cases: dict[str, str] | None = None
        self._read_files = self._empty_files = 0  # this run's: a folder that reads as empty everywhere is warned of

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
        sig["folder"] = str(self.options.folder)
        sig["files"] = {"count": len(self._prediction_files()), "sha256": self.listing_hash()}
        if self.options.id_map is not None:  # which file a sample reads is part of the answer: what the map says
            sig["options"]["id_map"] = hashlib.sha256(json.dumps(sorted(self._case_of().items())).encode()).hexdigest()
        return sig

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, probability map or None) of one file, at the file's own size."""
        limit = self.context.max_pixels or DEFAULT_MAX_PIXELS  # dataset.max_pixels, told by the run
        arr = read_npy(path, limit) if path.suffix.lower() == ".npy" else read_array(path, limit)
        mask_values(arr, path)
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
            prob = probability(arr, path)
            return prob >= o.threshold, prob
        return binary(arr), None

    def _volume(self, sample: Sample, case: str) -> Prediction:
        """A volume's prediction: the NIfTI file named by the pattern, on the image's grid (same shape and spacing,
        or an error row naming the file and both), read by ``values`` as a 2-D file is."""
        from ..datasets import volumes

        pattern = self.options.pattern
        wanted = (lambda stem: stem == pattern.replace("{id}", case)) if "*" not in pattern else \
            (lambda stem: fnmatch.fnmatchcase(stem, pattern.replace("{id}", glob.escape(case))))
        paths = [p for p in self._prediction_files() if volumes.nifti_stem(p) is not None and wanted(volumes.nifti_stem(p))]
        if not paths:
            return Prediction.failed(f"no prediction for {sample.id} in {self.options.folder} (pattern "
                                     f"{self.options.pattern!r}, .nii or .nii.gz)", status="missing")
        mask = np.zeros(sample.mask.shape, bool)
        for path in paths:
            try:
                vol = volumes.read(path, self.context.max_pixels or DEFAULT_MAX_PIXELS)
            except SampleError as e:
                return Prediction.failed(str(e), file=path.name)
            if vol.data.shape != sample.mask.shape or not np.allclose(vol.spacing, sample.spacing, rtol=1e-3):
                return Prediction.failed(
                    f"{sample.id}: prediction {path.name} is {vol.data.shape} voxels of {tuple(round(v, 4) for v in vol.spacing)} "
                    f"mm but the image is {sample.mask.shape} of {tuple(round(v, 4) for v in sample.spacing)} mm (depth, "
                    "height, width): resample the prediction onto the image's grid", file=path.name)
            o = self.options
            try:  # values that cannot be read as asked are this file's error row, as for a 2-D file
                mask_values(vol.data, path)
                if o.values == "labels":
                    m = np.isin(vol.data, o.labels)
                elif o.values == "probability":
                    m = probability(vol.data, path) >= o.threshold
                else:  # a volume has no channel axis: the rule alone
                    m = foreground(vol.data)
            except SampleError as e:
                return Prediction.failed(str(e), file=path.name)
            mask |= m
            self._read_files += 1
            self._empty_files += not m.any()
        return Prediction(mask=mask, meta={"files": [p.name for p in paths]})

    def predict(self, sample: Sample) -> Prediction:
        self._prediction_files()
        cases = self._case_of()
        if cases is not None and sample.id not in cases:
            return Prediction.failed(f"{sample.id} is not in options.id_map {self.options.id_map}", status="missing")
        if sample.is_volume:
            return self._volume(sample, cases[sample.id] if cases is not None else sample.id)
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
            self._read_files += 1
            self._empty_files += not m.any()
        return Prediction(mask=mask, prob=prob, meta={"files": [p.name for p in paths]})

    def close(self) -> None:
        import warnings

        if self._read_files >= 2 and self._empty_files == self._read_files:
            warnings.warn(f"model {self.name!r}: all {self._read_files} prediction files read in this run are empty "
                          f"masks (options.values: {self.options.values}); if they are not, check values, threshold, "
                          f"labels and channel against the files in {self.options.folder}")
        self._read_files = self._empty_files = 0

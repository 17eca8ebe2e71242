"""Any folder of images and masks, configured in YAML: the `folder` dataset kind (docs/datasets.md).

An image's id is its file stem. Its mask(s) are found in the masks folder by ``mask_pattern``
(``{id}`` stands for the id; ``*`` matches anything, and several matching masks are united), in
any of the image suffixes below, in any letter case. A mask pixel is foreground at or above
``threshold`` (on the 8-bit scale), or, for label images, when its value is one of ``labels``.
TIFFs are read with tifffile: 16-bit and multi-page files (the first page) work. The split is the
hashed rule of the built-in datasets, everything as test (a dataset to evaluate on), or a CSV/TSV
file of ``id,split`` rows.
"""

from __future__ import annotations

import bisect
import csv
import fnmatch
import glob
import itertools
from pathlib import Path

import numpy as np
from pydantic import Field

from ..errors import DataMissingError, SampleError
from ..options import Options
from .base import (
    DEFAULT_MAX_PIXELS,
    Dataset,
    Sample,
    SampleRef,
    binarize_rgb,
    check_pixels,
    files_with,
    open_image,
    same_size,
    split_of,
)

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


class FolderOptions(Options):
    images: str = Field("images", description="folder of images, relative to the dataset root")
    masks: str = Field("masks", description="folder of masks, relative to the dataset root (may be the images folder)")
    mask_pattern: str = Field("{id}", description="stem of an image's mask: {id} is the image's stem, * matches "
                                                  "anything (several masks are united), e.g. '{id}_segmentation', '{id}_mask*'")
    exclude: str | None = Field(None, description="image stems to leave out (glob), e.g. '*_mask*' when masks sit beside the images")
    threshold: int = Field(128, ge=1, le=255, description="a mask pixel at or above this grey level (8-bit scale) is foreground")
    labels: list[int] | None = Field(None, min_length=1, description="label images: these pixel values are foreground "
                                                                    "(instead of the threshold)")
    roi: str | None = Field(None, description="optional folder of region-of-interest masks (nonzero = inside)")
    roi_pattern: str = Field("{id}", description="stem of an image's region-of-interest mask")
    split: str = Field("hash", description="'hash' (20% test by a salted hash of the id), 'test' or 'train' "
                                           "(everything), or a CSV/TSV file of id,split rows relative to the root")


def read_array(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """The pixel values as stored: TIFFs through tifffile (16-bit, the first page of several), others through PIL
    (palette images keep their indices, which label images use). Checked against the pixel limit before decoding."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        if not path.is_file():
            raise SampleError(f"missing file {path}")
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                shape = page.shape
                planar = len(shape) == 3 and shape[0] in (3, 4) and shape[2] not in (3, 4)
                h, w = (shape[1], shape[2]) if planar else (shape[0], shape[1] if len(shape) > 1 else 1)
                check_pixels(path, w, h, max_pixels)
                arr = page.asarray()
        except SampleError:
            raise
        except Exception as e:  # tifffile raises several types for a damaged file
            raise SampleError(f"unreadable file {path}: {e}") from None
    else:
        with open_image(path, max_pixels) as im:
            try:
                im.seek(0)
                arr = np.asarray(im.convert("RGB") if im.mode in ("RGBA", "LA", "CMYK", "YCbCr") else im)
            except Exception as e:
                raise SampleError(f"unreadable file {path}: {e}") from None
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF: channels first
    return arr


def to_rgb8(arr: np.ndarray) -> np.ndarray:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Any image array as uint8 RGB; 16-bit and float images are scaled by their own range."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        arr = np.zeros(a.shape, np.uint8) if hi <= lo else np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """A mask's values on the 8-bit scale, channels kept: its type's full range maps to 0..255 (a 0/65535 mask
    is 0/255, a 0..1 float mask 0/255, a boolean one 0/255); 8-bit values stay as they are."""
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(np.nan_to_num(arr), 0, 1) * 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize > 1:
        return (arr.astype(np.float64) / np.iinfo(arr.dtype).max * 255).round().astype(np.uint8)
    return arr.astype(np.uint8)


def stem_matcher(folder: Path, pattern: str, suffixes: tuple[str, ...] = SUFFIXES):
    """id -> the files in ``folder`` whose stem the pattern gives for it (sorted); the `folder` dataset finds masks
    this way and the `masks` model kind its predictions."""
    files = files_with(folder, *suffixes)
    stems = sorted((p.stem, p) for p in files)
    keys = [s for s, _ in stems]

    def match(sid: str) -> list[Path]:
        if "*" not in pattern:
            want = pattern.replace("{id}", sid)
            i = bisect.bisect_left(keys, want)
            return [p for s, p in itertools.takewhile(lambda sp: sp[0] == want, stems[i:])]  # x.png and x.tif alike
        want = pattern.replace("{id}", glob.escape(sid))
        prefix = pattern.split("*", 1)[0].replace("{id}", sid)  # the literal part before the first wildcard
        i = bisect.bisect_left(keys, prefix)
        out = []
        while i < len(keys) and keys[i].startswith(prefix):
            if fnmatch.fnmatchcase(keys[i], want):
                out.append(stems[i][1])
            i += 1
        return out

    return match


class FolderDataset(Dataset):
    """Images and masks in folders of your own (see the module docstring and docs/datasets.md)."""

    name = "folder"
    task = "folder"
    Options = FolderOptions
    layout = ("  <root>/<images>/<id>.<png|jpg|jpeg|tif|tiff|bmp|gif>\n"
              "  <root>/<masks>/<mask_pattern with {id}>.<same suffixes>   (options images, masks, mask_pattern)")
    obtain = "point dataset.root at your folder; `omniseg init NAME --images DIR --masks DIR` writes a configuration"

    def __init__(self, root, options=None):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        super().__init__(root, options)
        self._labels_seen: set[int] = set()

    def _missing(self) -> list[str]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        o = self.options
        return [d + "/" for d in dict.fromkeys((o.images, o.masks) + ((o.roi,) if o.roi else ()))
                if not (self.root / d).is_dir()]


    def _splits(self) -> dict[str, str] | None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        s = self.options.split
        if s in ("hash", "test", "train"):
            return None
        path = self.root / s
        if not path.is_file():
            raise DataMissingError(f"folder: split file {path} not found (option split: 'hash', 'test', 'train' or a CSV/TSV file)")
        text = path.read_text(encoding="utf-8-sig")
        dialect = csv.Sniffer().sniff(text[:2048], delimiters=",\t;") if text.strip() else csv.excel
        table = {}
        for row in csv.reader(text.splitlines(), dialect):
            if len(row) >= 2 and row[1].strip() in ("train", "test"):
                table[row[0].strip()] = row[1].strip()
        if not table:
            raise DataMissingError(f"folder: split file {path} has no 'id,split' rows with split train or test")
        return table

    def _refs(self) -> list[SampleRef]:
        o = self.options
        images = self._images()
        masks_of = stem_matcher(self.root / o.masks, o.mask_pattern)
        roi_of = stem_matcher(self.root / o.roi, o.roi_pattern) if o.roi else None
        table = self._splits()
        refs, matched = [], 0
        by_stem: dict[str, list[Path]] = {}
        for img in images:
            by_stem.setdefault(img.stem, []).append(img)
        for sid, same in sorted(by_stem.items()):
            img = same[0]
            masks = [m for m in masks_of(sid) if m not in same]
            matched += bool(masks)
            files = {"image": img, "masks": masks, "roi": (roi_of(sid) or [None])[0] if roi_of else None}
            problem = None
            if len(same) > 1:  # one id, one row: neither image is guessed at
                problem = (f"{len(same)} images share the id {sid!r}: {', '.join(f'{o.images}/{p.name}' for p in same)}; "
                           "rename all but one, or leave them out with `exclude`")
            elif not masks:
                problem = f"no mask for {o.images}/{img.name}: nothing in {o.masks}/ matches {o.mask_pattern.replace('{id}', sid)}"
            elif roi_of and files["roi"] is None:
                problem = f"no region-of-interest mask for {img.name} in {o.roi}/"
            if table is not None:
                split = table.get(sid)
                if split is None:
                    problem = problem or f"{sid} is not listed in the split file {o.split}"
                    split = "test"
            else:
                split = o.split if o.split in ("test", "train") else split_of(self.name, sid)
            refs.append(SampleRef(sid, split, files, problem=problem))
        if images and not matched:
            raise DataMissingError(
                f"folder: mask_pattern {o.mask_pattern!r} matches no file in {self.root / o.masks} for any of the "
                f"{len(images)} images (for {images[0].name} it looks for {o.mask_pattern.replace('{id}', images[0].stem)}.*)"
            )
        return refs

    def _mask(self, path: Path, notes: list[str]) -> np.ndarray:
        arr = read_array(path, self.max_pixels)
        o = self.options
        if o.labels is not None:
            values = arr if arr.ndim == 2 else arr[..., 0]
            self._labels_seen.update(int(v) for v in np.unique(values) if int(v) in o.labels)
            return np.isin(values, o.labels)
        # the same rule as the built-in kinds (Pillow's grey level of the RGB), so one file gives one mask
        v = to_8bit(arr)
        return binarize_rgb(v if v.ndim == 2 else np.ascontiguousarray(v[..., :3]), path, o.threshold, notes)

    def load(self, ref: SampleRef) -> Sample:
        if ref.problem:
            raise SampleError(ref.problem)
        image = to_rgb8(read_array(ref.files["image"], self.max_pixels))
        notes: list[str] = []
        mask = np.zeros(image.shape[:2], dtype=bool)
        for p in ref.files["masks"]:
            m = self._mask(p, notes)
            same_size(ref.id, image, mask=(p, m))
            mask |= m
        roi = None
        if ref.files.get("roi") is not None:
            roi = to_8bit(read_array(ref.files["roi"], self.max_pixels))
            roi = (roi if roi.ndim == 2 else roi[..., :3].max(axis=-1)) > 0
            same_size(ref.id, image, roi=(ref.files["roi"], roi))
        return Sample(ref.id, image, mask, roi=roi, meta={"split": ref.split}, notes=tuple(notes))

    def _images(self) -> list[Path]:
        o = self.options
        return [p for p in files_with(self.root / o.images, *SUFFIXES)
                if not (o.exclude and fnmatch.fnmatchcase(p.stem, o.exclude))]

    def orphan_masks(self) -> list[Path]:
        """Mask files that belong to no image (a typo in a name, an image left out): data verify lists them."""
        used = {m for r in self._refs() for m in r.files["masks"]} | set(self._images())
        return [p for p in files_with(self.root / self.options.masks, *SUFFIXES) if p not in used]

    def verify(self, progress: bool = True):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self._labels_seen = set()
        n, problems, warned = super().verify(progress)
        for p in self.orphan_masks():
            problems.append((f"({self.options.masks}/{p.name})", f"a mask without an image: no image in "
                                                                f"{self.options.images}/ is named after it "
                                                                f"(mask_pattern {self.options.mask_pattern!r})"))
        if self.options.labels is not None and n:
            absent = sorted(set(self.options.labels) - self._labels_seen)
            if absent:
                problems.append(("(dataset)", f"label value(s) {absent} appear in no mask under {self.root / self.options.masks}; "
                                              "check `labels` (`omniseg init` lists the values it found)"))
        return n, problems, warned

"""What every dataset adapter yields, and the shared file-reading and split rules."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ..errors import DataMissingError, SampleError
from ..options import NoOptions, Options

#: Share of each dataset (or class) held out for testing where no official split exists.
TEST_FRACTION = 0.2
#: Largest image or mask a reader decodes (width x height), like Pillow's guard against decompression bombs:
#: a 15000 x 15000 TIFF is 245 KB on disk and gigabytes in memory. ``dataset.max_pixels`` raises it.
DEFAULT_MAX_PIXELS = 100_000_000
_SPLIT_SALT = "omniseg-split-v1:"


@dataclass(frozen=True)
class Sample:
    """One image with its reference, or one volume with its reference (``spacing`` set). ``extra`` holds other
    references (e.g. DRIVE's 2nd annotator)."""

    id: str
    image: np.ndarray  # uint8 HxWx3; a volume: its intensities as stored (e.g. CT in HU), DxHxW
    mask: np.ndarray  # bool HxW; a volume: DxHxW
    roi: np.ndarray | None = None  # bool HxW; metrics are counted inside it
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # warnings about the files (a mask that is not black-and-white)
    #: a volume's voxel spacing in mm along (depth, height, width), and its voxel-to-world matrix (RAS+, 4x4): the
    #: mask files of its predictions are written on this grid (NIfTI), its distances are in mm
    spacing: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None

    @property
    def is_volume(self) -> bool:
        return self.spacing is not None


@dataclass(frozen=True)
class SampleRef:
    """A sample found on disk, before reading. ``problem`` is set when the layout is already broken."""

    id: str
    split: str
    files: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class FetchSpec:
    """Where a dataset's public archive lives and what a good download holds."""

    url: str
    archive_root: str  # folder inside the archive that becomes the dataset root
    expected: dict[str, int]  # glob (relative to the root) -> file count in the publisher's release
    sha256: str | None = None
    note: str = ""


class Dataset:
    """Base class of dataset adapters: subclasses list samples and read one."""

    name: ClassVar[str]
    task: ClassVar[str]  # the task this dataset serves by default (for `data fetch`)
    layout: ClassVar[str]  # the expected folder layout, shown when it is missing
    fetch: ClassVar[FetchSpec | None] = None
    obtain: ClassVar[str] = ""  # how to get the data when it cannot be fetched
    Options: ClassVar[type[Options]] = NoOptions  # the adapter's options (omniseg.options)
    #: its samples are volumes (``Sample.spacing`` set): 2-D models see them slice by slice (omniseg.models.slicewise)
    volumetric: ClassVar[bool] = False

    max_pixels: int = DEFAULT_MAX_PIXELS  # passed to every reader by load(); see limit_pixels

    def __init__(self, root: str | Path, options: dict | None = None):
        self.root = Path(root)
        self.options = self.Options.model_validate(options or {})

    def limit_pixels(self, max_pixels: int | None) -> None:
        """Hold the readers to ``max_pixels`` (``dataset.max_pixels``; None: the default)."""
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        if Image.MAX_IMAGE_PIXELS is not None and self.max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = self.max_pixels  # Pillow's own guard would refuse what the user allowed

    # -- to implement -------------------------------------------------------------------------
    def _refs(self) -> list[SampleRef]:
        """Every sample on disk, without reading it (ids unique; the split decided here).

        A sample whose layout is already broken (a mask without its image) is listed with ``problem``
        set, never left out: it becomes a 'sample_error' row. Raise :class:`DataMissingError` when
        nothing usable is there at all (it names the layout and how to get the data).
        """
        raise NotImplementedError

    def load(self, ref: SampleRef) -> Sample:
        """Read one sample. For a broken one (unreadable file, missing mask, size mismatch) raise
        :class:`SampleError` naming the file and what is wrong: the run records it and goes on. Any
        other exception is a bug. Warnings about readable but suspicious files go in ``Sample.notes``."""
        raise NotImplementedError

    def _missing(self) -> list[str]:
        """Required top-level folders that are absent (empty when the layout looks right)."""
        raise NotImplementedError

    def group(self, sample_id: str) -> str:
        """What must not be split between training and validation: the sample itself (a slice: its volume)."""
        return sample_id

    # -- shared -------------------------------------------------------------------------------
    def check_root(self) -> None:
        """Raise :class:`DataMissingError` naming the expected layout and the fetch command."""
        if self.root.is_dir():
            missing = self._missing()
            if not missing:
                return
            what = f"{self.root} lacks {', '.join(missing)}"
        else:
            what = f"dataset folder {self.root} does not exist"
        how = self.obtain or f"run `omniseg data fetch {self.task}`, or point dataset.root (or --data-root) at your copy"
        raise DataMissingError(f"{self.name}: {what}.\nExpected layout:\n{self.layout}\nTo get it: {how}")

    def refs(self, split: str = "all") -> list[SampleRef]:
        """Samples of ``split`` ('train', 'test' or 'all'), sorted by id."""
        self.check_root()
        refs = sorted(self._refs(), key=lambda r: r.id)
        return refs if split == "all" else [r for r in refs if r.split == split]

    def verify(self, progress: bool = True) -> tuple[int, list[tuple[str, str]], list[tuple[str, str]]]:
        """Read every sample: (samples checked, [(id, problem)], [(id, warning)]), never stopping at the first.

        No samples at all is a problem too: a folder of the right shape with nothing usable in it.
        """
        from ..progress import bar

        refs = self.refs("all")
        problems, warned = [], []
        if not refs:
            problems.append(("(dataset)", f"no samples found under {self.root}; expected layout:\n{self.layout}"))
        for ref in bar(refs, desc=f"verify {self.name}", unit="img", disable=not progress):
            try:
                sample = self.load(ref)
            except SampleError as e:
                problems.append((ref.id, str(e)))
                continue
            warned.extend((ref.id, n) for n in sample.notes)
        return len(refs), problems, warned


def split_of(dataset: str, sample_id: str, group: str = "") -> str:
    """'train' or 'test' for datasets without an official split.

    The committed list ``omniseg/splits/<dataset>.tsv`` decides for the publisher's files;
    ids not in it (your own data) fall to the rule that made the list: a salted sha256
    of the id below :data:`TEST_FRACTION`.
    """
    table = _split_table(dataset)
    if sample_id in table:
        return table[sample_id]
    h = int(hashlib.sha256((_SPLIT_SALT + group + sample_id).encode()).hexdigest()[:12], 16)
    return "test" if h / 16**12 < TEST_FRACTION else "train"


def rank_split(ids: list[str], group: str = "") -> dict[str, str]:
    """The rule behind the committed lists: the lowest-hashing fifth of a group is the test set."""
    key = lambda i: hashlib.sha256((_SPLIT_SALT + group + i).encode()).hexdigest()  # noqa: E731
    ordered = sorted(ids, key=key)
    n_test = round(len(ids) * TEST_FRACTION)
    return {i: ("test" if k < n_test else "train") for k, i in enumerate(ordered)}


_TABLES: dict[str, dict[str, str]] = {}


def _split_table(dataset: str) -> dict[str, str]:
    if dataset not in _TABLES:
        table: dict[str, str] = {}
        f = resources.files("omniseg") / "splits" / f"{dataset}.tsv"
        if f.is_file():
            for line in f.read_text().splitlines():
                if line and not line.startswith("#"):
                    sid, split = line.split("\t")
                    table[sid] = split
        _TABLES[dataset] = table
    return _TABLES[dataset]


def split_fingerprint(refs: list[SampleRef]) -> str:
    """sha256 over the sorted (id, split) pairs: two runs saw the same split iff these match."""
    blob = "\n".join(f"{r.id}\t{r.split}" for r in sorted(refs, key=lambda r: r.id))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_pixels(path: Path, width: int, height: int, limit: int | None) -> None:
    """Refuse, before decoding, a file larger than the pixel limit (naming it and how to allow it)."""
    if limit and width * height > limit:
        raise SampleError(f"{path} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), over the limit "
                          f"of {limit / 1e6:.0f} megapixels: if it is meant to be that large, raise dataset.max_pixels "
                          "in the task configuration")


def open_image(path: Path, limit: int | None = DEFAULT_MAX_PIXELS):
    """A PIL image, opened lazily and checked against the pixel limit before anything is decoded."""
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise SampleError(f"missing file {path}") from None
    except Image.DecompressionBombError:  # over Pillow's own limit: say it our way
        raise SampleError(f"{path} is over the pixel limit of {(limit or 0) / 1e6:.0f} megapixels: if it is meant "
                          "to be that large, raise dataset.max_pixels in the task configuration") from None
    except Exception as e:  # PIL raises several types for a damaged file
        raise SampleError(f"unreadable image {path}: {e}") from None
    try:
        check_pixels(path, im.width, im.height, limit)
    except SampleError:
        im.close()
        raise
    return im


def read_rgb(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    with open_image(path, max_pixels) as im:
        try:
            return np.asarray(im.convert("RGB"))
        except Exception as e:
            raise SampleError(f"unreadable image {path}: {e}") from None


def files_with(folder: Path, *suffixes: str) -> list[Path]:
    """Files in ``folder`` whose suffix is one of ``suffixes``, in any letter case (.jpg, .JPG, .Jpg)."""
    if not folder.is_dir():
        return []
    wanted = {s.lower() for s in suffixes}
    # scandir's entries know their type without a stat per file (a second saved per 4,000 files listed)
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if os.path.splitext(e.name)[1].lower() in wanted and e.is_file()]
    return [folder / n for n in sorted(names)]  # the order of Paths in one folder is that of their names


#: share of a mask's pixels that may be coloured or mid-grey before it is reported as not black-and-white
#: (the real Kvasir-SEG and BUSI masks have none, JPEG edge noise included)
MASK_GREY_TOLERANCE = 0.005


def read_mask(path: Path, threshold: int = 128, notes: list[str] | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A grey-level mask binarized at ``threshold`` (JPEG masks carry compression noise at edges).

    A mask that is not black-and-white (coloured, or with grey regions) binarizes to a reference
    that may be empty or speckled: it is read as such, and a warning is appended to ``notes``.
    """
    with open_image(path, max_pixels) as im:
        try:  # a grey file is its own grey level (no RGB copy three times its size)
            pixels = np.asarray(im) if im.mode == "L" else np.asarray(im.convert("RGB"))
        except Exception as e:
            raise SampleError(f"unreadable mask {path}: {e}") from None
    return binarize_rgb(pixels, path, threshold, notes)


def binarize_rgb(rgb: np.ndarray, path: Path, threshold: int, notes: list[str] | None = None) -> np.ndarray:
    """An 8-bit RGB mask as foreground where its grey level (Pillow's luma) is at or above ``threshold``; a 2-D one is
    that grey level already (the luma of three equal channels is their value, exactly).

    Every reader of black-and-white masks goes through here, so the same file gives the same mask
    whichever dataset kind reads it; a coloured or grey mask adds a warning to ``notes``."""
    grey = rgb if rgb.ndim == 2 else np.asarray(Image.fromarray(rgb).convert("L"))
    if notes is not None:  # on every 4th pixel each way: a sixteenth of the work, the same verdict
        few, g = rgb[::4, ::4], grey[::4, ::4]
        coloured = 0.0 if rgb.ndim == 2 else float(((few.max(axis=2).astype(np.int16) - few.min(axis=2)) > 32).mean())
        mid = float(((g > 32) & (g < 223)).mean())
        if coloured > MASK_GREY_TOLERANCE:
            notes.append(f"mask {path.name} is in colour ({coloured:.1%} of pixels): read by grey level >= {threshold}, "
                         "so a dark-coloured object becomes background; save masks as black and white")
        elif mid > MASK_GREY_TOLERANCE:
            notes.append(f"mask {path.name} is not black-and-white ({mid:.1%} of pixels are grey): binarized at "
                         f"grey level {threshold}; save masks as 0 and 255")
    return grey >= threshold


def same_size(sample_id: str, image: np.ndarray, **masks: tuple[Path, np.ndarray]) -> None:
    for what, (path, m) in masks.items():
        if m.shape != image.shape[:2]:
            raise SampleError(
                f"{sample_id}: {what} {path} is {m.shape[1]}x{m.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )

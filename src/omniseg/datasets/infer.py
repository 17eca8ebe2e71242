"""`omniseg init`: look at a folder of images and a folder of masks, infer a `folder` dataset configuration.

It finds how masks are named after their images (trying the usual suffixes and several masks per
image), how a mask becomes foreground (black-and-white masks: a threshold; label images: their
values), and writes a task configuration the user edits from there. Every guess is printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OmnisegError
from . import volumes
from .base import files_with
from .folder import SUFFIXES, FolderOptions, read_array, stem_matcher

#: mask names tried, best first: the same stem, the usual suffixes, several masks per image
PATTERNS = ("{id}", "{id}_mask", "{id}_segmentation", "{id}_Segmentation", "{id}_seg", "{id}-mask", "{id}_gt",
            "{id}_GT", "{id}_label", "p{id}", "mask_{id}", "{id}_mask*", "{id}_*")


@dataclass
class Inferred:
    root: Path
    options: dict
    lines: list[str] = field(default_factory=list)  # what was inferred, for the user
    kind: str = "folder"  # the dataset kind
    slices: dict | None = None  # volumes: how 2-D models see them (the task's `slices` section)


def infer(images: Path, masks: Path, roi: Path | None = None, split: str = "hash", sample: int = 25) -> Inferred:
    images, masks = Path(images).resolve(), Path(masks).resolve()
    for what, d in (("--images", images), ("--masks", masks)) + ((("--roi", Path(roi).resolve()),) if roi else ()):
        if not d.is_dir():
            raise OmnisegError(f"{what} {d}: not a folder")
    if any(volumes.nifti_stem(p) for p in images.iterdir()):
        return infer_volumes(images, masks, split)
    img_files = files_with(images, *SUFFIXES)
    if not img_files:
        raise OmnisegError(f"--images {images}: no image files ({', '.join(SUFFIXES)}, any case)")
    root = Path(os.path.commonpath([images, masks] + ([Path(roi).resolve()] if roi else [])))
    rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    opts: dict = {"images": rel(images), "masks": rel(masks), "split": split}
    lines = [f"root {root}", f"images {rel(images)}/: {len(img_files)} files "
             f"({', '.join(sorted({p.suffix for p in img_files}))})"]
    same = images == masks
    if same:
        opts["exclude"] = "*_mask*"
        lines.append("masks sit beside the images: image stems matching '*_mask*' are left out (option exclude)")
    # the pattern that finds masks for the most images, then the most masks (several per image); ties: the first
    best, best_score, several = None, (0, 0), False
    for pattern in PATTERNS:
        if same and pattern == "{id}":
            continue
        match = stem_matcher(masks, pattern)
        ids = [p.stem for p in img_files if not (same and "_mask" in p.stem)]
        counts = [len([m for m in match(i) if m.parent != images or m.stem != i]) for i in ids]
        score = (sum(c > 0 for c in counts), sum(counts))
        if score > best_score:
            best, best_score, several = pattern, score, any(c > 1 for c in counts)
    best_n = best_score[0]
    if best is None:
        raise OmnisegError(f"no mask in {masks} is named after an image of {images} (tried: {', '.join(PATTERNS)}); "
                           "write mask_pattern yourself (docs/datasets.md)")
    opts["mask_pattern"] = best
    lines.append(f"masks {rel(masks)}/: named {best!r}, found for {best_n} of {len(img_files)} images"
                 + ("; some images have several masks (united)" if several else ""))
    opts.update(_foreground(masks, best, img_files, lines, sample))
    if roi:
        opts["roi"] = rel(Path(roi).resolve())
        lines.append(f"region of interest: {opts['roi']}/ (same stems)")
    FolderOptions.model_validate(opts)
    return Inferred(root, opts, lines)


def infer_volumes(images: Path, masks: Path, split: str) -> Inferred:
    """NIfTI volumes: nnU-Net's raw layout (imagesTr, labelsTr, dataset.json) or a `nifti` folder; a CT window when
    the intensities look like Hounsfield units, else the volume's percentiles."""
    from . import volumes as vol

    files = sorted(p for p in images.iterdir() if vol.nifti_stem(p))
    if images.name == "imagesTr" and masks.name == "labelsTr" and (images.parent / "dataset.json").is_file():
        kind, root, opts = "nnunet-raw", images.parent, {"split": split}
        lines = [f"root {root}: nnU-Net's raw layout (dataset.json, imagesTr/, labelsTr/), {len(files)} image files; "
                 "target: the union of every foreground label (option label: a name or value of dataset.json)"]
    else:
        root = Path(os.path.commonpath([images, masks]))
        kind, opts = "nifti", {"images": os.path.relpath(images, root), "labels": os.path.relpath(masks, root), "split": split}
        lines = [f"root {root}: NIfTI volumes in {opts['images']}/ ({len(files)} files), labels in {opts['labels']}/; "
                 "target: every non-zero label (option foreground: the values)"]
    first = vol.read(files[0])
    low = float(np.percentile(first.data[::2, ::4, ::4], 1))
    slices: dict = {"axis": "axial", "select": "all"}
    if low <= -500:  # air at -1000 HU: a CT
        slices["window"] = [40.0, 400.0]
        lines.append(f"{files[0].name}: 1st percentile {low:.0f}, a CT in Hounsfield units: soft-tissue window "
                     "[level 40, width 400] (slices.window)")
    else:
        lines.append(f"{files[0].name}: intensities from {low:.3g}, not CT: each volume scaled by its 0.5 and 99.5 "
                     "percentiles (slices.percentiles)")
    lines.append(f"spacing {tuple(round(v, 3) for v in first.spacing)} mm (depth, height, width); 2-D models see "
                 f"{first.data.shape[0]} axial slices of {first.data.shape[1]} x {first.data.shape[2]}")
    return Inferred(root, opts, lines, kind, slices)


def _foreground(masks: Path, pattern: str, img_files: list[Path], lines: list[str], sample: int) -> dict:
    """Threshold or label values, from the values of up to ``sample`` masks."""
    ds_match = stem_matcher(masks, pattern)
    values: set = set()
    dtypes = set()
    seen = 0
    for img in img_files:
        for m in ds_match(img.stem)[:1]:
            arr = read_array(m)
            dtypes.add(str(arr.dtype))
            u = np.unique(arr if arr.ndim == 2 else arr[..., 0])
            values.update(int(v) for v in u[:64])
            seen += 1
        if seen >= sample:
            break
    shown = sorted(values)[:12]
    if values <= {0, 1}:
        lines.append(f"mask values {shown} ({', '.join(sorted(dtypes))}): 0/1 masks, foreground = 1 (labels: [1])")
        return {"labels": [1]}
    if 2 < len(values) <= 10 and max(values) < 64:
        fg = [v for v in sorted(values) if v != 0]
        lines.append(f"mask values {shown}: a label image; foreground = every nonzero label {fg} "
                     "(edit `labels` to keep some)")
        return {"labels": fg}
    lines.append(f"mask values {shown}{' ...' if len(values) > 12 else ''} ({', '.join(sorted(dtypes))}): "
                 "black and white, foreground at grey >= 128 (threshold)")
    return {"threshold": 128}


def config_text(name: str, inferred: Inferred, like: dict | None) -> str:
    """The YAML of a task configuration for the inferred dataset, with the models of ``like`` (a task
    configuration as a dict) or training-free floors."""
    import yaml

    doc: dict = {"task": name, "description": f"{name}: images and masks from {inferred.root}",
                 "dataset": {"name": inferred.kind, "root": str(inferred.root), "options": inferred.options},
                 "split": "test"}
    if inferred.slices:
        doc["slices"] = inferred.slices
    if like:
        for key in ("models", "metrics", "curation", "train"):
            if like.get(key) is not None:
                doc[key] = like[key]
    else:
        doc["models"] = [{"name": "otsu", "kind": "otsu", "options": {"foreground": "bright"}},
                         {"name": "ellipse", "kind": "ellipse", "options": {"radius": 0.28}}]
        doc["curation"] = {"reference": "otsu", "metric": "dice", "extremes": 50}
    head = (f"# {name}: written by `omniseg init` from what it found in the folders; edit freely.\n"
            "# dataset.options: docs/datasets.md. Models and curation"
            + (" copied from the --like task.\n" if like else ": training-free floors until you add yours.\n"))
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)

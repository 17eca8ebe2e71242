"""A task's dataset in nnU-Net v2's raw format (`omniseg export nnunet`), so nnU-Net trains on our split.

``Dataset{id}_{Name}/`` holds ``imagesTr/`` and ``labelsTr/`` (every sample not in the test split: nnU-Net runs
its own cross-validation on them), ``imagesTs/`` (exactly our test split, never trained on), ``dataset.json``
and ``omniseg_ids.tsv`` (nnU-Net case id -> our sample id: case ids are the sample ids made file-name safe).
Images are RGB PNGs (``{case}_0000.png``, channels R, G, B), labels 0/1 PNGs. nnU-Net's predictions of
``imagesTs`` are then read back by the `masks` model kind, with the entry :func:`masks_entry` prints.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OmnisegError
from .base import Dataset, split_fingerprint

IDS_FILE = "omniseg_ids.tsv"


@dataclass
class Export:
    folder: Path
    dataset_id: int
    training: list[str] = field(default_factory=list)  # nnU-Net case ids
    test: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample id, why): unreadable samples


def folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise OmnisegError(f"--id {dataset_id}: nnU-Net dataset ids are 1..999 (use 500 or more for your own)")
    safe = re.sub(r"[^A-Za-z0-9]+", "", name.title()) or "Omniseg"
    return f"Dataset{dataset_id:03d}_{safe}"


def case_ids(sample_ids: list[str]) -> dict[str, str]:
    """sample id -> nnU-Net case id: letters, digits, '-' and '_' only; clashes numbered."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for sid in sample_ids:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", sid).strip("_") or "case"
        case, k = base, 1
        while case in taken:
            k += 1
            case = f"{base}_{k}"
        taken.add(case)
        out[sid] = case
    return out


def export(ds: Dataset, task: str, out_root: Path, dataset_id: int, *, progress=None) -> Export:
    """Write the task's dataset under ``out_root`` (nnUNet_raw); refuses to write into an existing export."""
    folder = out_root / folder_name(dataset_id, task)
    if folder.exists() and any(folder.iterdir()):
        raise OmnisegError(f"{folder} exists and is not empty; remove it or pass another --id/--out")
    existing = sorted(out_root.glob(f"Dataset{dataset_id:03d}_*")) if out_root.is_dir() else []
    if any(p != folder for p in existing):
        raise OmnisegError(f"nnU-Net dataset id {dataset_id} is taken in {out_root} by {existing[0].name}; "
                           "pass another --id")
    refs = ds.refs("all")
    if not refs:
        raise OmnisegError(f"{task}: no samples under {ds.root}")
    cases = case_ids([r.id for r in refs])
    result = Export(folder, dataset_id)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for r in refs:
        if progress:
            progress()
        try:
            s = ds.load(r)
        except Exception as e:  # nnU-Net cannot take a sample we cannot read either: say which, go on
            result.skipped.append((r.id, f"{type(e).__name__}: {e}"))
            continue
        case = cases[r.id]
        test = r.split == "test"
        images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        # the fastest lossless level: nnU-Net reads these once, to preprocess (4x faster to write than level 6)
        Image.fromarray(s.image).save(folder / images / f"{case}_0000.png", compress_level=1)
        # labelsTs is not read by nnU-Net: it keeps the test references beside their images for its evaluator
        Image.fromarray(s.mask.astype(np.uint8)).save(folder / labels / f"{case}.png")
        (result.test if test else result.training).append(case)
        rows.append(f"{case}\t{r.id}\t{r.split}")
    if not result.training:
        raise OmnisegError(f"{task}: every sample is in the test split; nnU-Net needs training cases")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, task: 1},
        "numTraining": len(result.training),
        "file_ending": ".png",
        "name": folder.name,
        "description": f"exported by omniseg from task {task!r}: imagesTs is exactly its test split "
                       f"(split fingerprint {split_fingerprint(refs)})",
    }, indent=2) + "\n")
    (folder / IDS_FILE).write_text("case\tid\tsplit\n" + "\n".join(rows) + "\n")
    return result


def commands(e: Export, out_root: Path, predictions: Path) -> list[str]:
    """nnU-Net's three steps for this export: plan and preprocess, train, predict the test split."""
    d = e.dataset_id
    return [
        f"export nnUNet_raw={out_root} nnUNet_preprocessed={out_root.parent / 'nnUNet_preprocessed'} "
        f"nnUNet_results={out_root.parent / 'nnUNet_results'}",
        f"nnUNetv2_plan_and_preprocess -d {d} --verify_dataset_integrity",
        f"nnUNetv2_train {d} 2d all",
        f"nnUNetv2_predict -i {e.folder / 'imagesTs'} -o {predictions} -d {d} -c 2d -f all",
    ]


def masks_entry(e: Export, predictions: Path, name: str = "nnunet") -> str:
    """The `masks` model entry that reads nnU-Net's predictions back (YAML, to paste under ``models:``)."""
    return (f"  - name: {name}\n    kind: masks\n    role: specialist\n    options:\n"
            f"      folder: {predictions}\n      values: labels\n      labels: [1]\n"
            f"      id_map: {e.folder / IDS_FILE}\n")

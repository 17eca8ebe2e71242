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


#: the longest case id, in characters (ASCII): nnU-Net adds ``_0000.png`` and our writers a temporary suffix
CASE_CHARS = 100


def case_ids(sample_ids: list[str]) -> dict[str, str]:
    """sample id -> nnU-Net case id: letters, digits, '-' and '_' only, at most :data:`CASE_CHARS`; clashes numbered."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for sid in sample_ids:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", sid).strip("_")[:CASE_CHARS - 8].strip("_") or "case"
        case, k = base, 1
        while case in taken:
            k += 1
            case = f"{base}_{k}"
        taken.add(case)
        out[sid] = case
    return out


def write_ids(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """``omniseg_ids.tsv``: case, id and split a row, as CSV with tabs and RFC 4180's line ends (a field holding a
    tab, a quote, a CR or an LF is quoted), read back by :func:`omniseg.models.masks.read_id_map`."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\r\n")
        w.writerow(("case", "id", "split"))
        w.writerows(rows)


def export(ds: Dataset, task: str, out_root: Path, dataset_id: int, *, progress=None) -> Export:
    """Write the task's dataset under ``out_root`` (nnUNet_raw); refuses to write into an existing export.

    Everything is written into a hidden folder beside the export and renamed into place at the end, so a failed
    or killed export leaves nothing that blocks the next one."""
    import os
    import shutil

    if ds.volumetric:  # 2-D PNGs are what this writes; NIfTI volumes are nnU-Net's own input already
        raise OmnisegError(f"task {task!r} reads volumes ({ds.name}): `export nnunet` writes 2-D images as PNGs. Give "
                           "nnU-Net the NIfTI files themselves (a `nnunet-raw` dataset is its raw format already), then "
                           "read its predictions with a `masks` model (.nii.gz files, docs/datasets.md \"Volumes\")")
    folder = out_root / folder_name(dataset_id, task)
    if out_root.exists() and not out_root.is_dir():
        raise OmnisegError(f"--out {out_root} is a file; name a folder (nnU-Net's nnUNet_raw) to write into")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OmnisegError(f"{folder} exists and is not empty; remove it or pass another --id/--out")
    existing = sorted(out_root.glob(f"Dataset{dataset_id:03d}_*")) if out_root.is_dir() else []
    if any(p != folder for p in existing):
        raise OmnisegError(f"nnU-Net dataset id {dataset_id} is taken in {out_root} by {existing[0].name}; "
                           "pass another --id")
    refs = ds.refs("all")
    if not refs:
        raise OmnisegError(f"{task}: no samples under {ds.root}")
    if all(r.split == "test" for r in refs):
        raise OmnisegError(f"{task}: every sample is in the test split; nnU-Net needs training cases (set the "
                           "dataset's split so that some samples are in train)")
    cases = case_ids([r.id for r in refs])
    result = Export(folder, dataset_id)
    work = out_root / f".{folder.name}.{os.getpid()}.partial"
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (work / sub).mkdir(parents=True, exist_ok=True)
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
            Image.fromarray(s.image).save(work / images / f"{case}_0000.png", compress_level=1)
            # labelsTs is not read by nnU-Net: it keeps the test references beside their images for its evaluator
            Image.fromarray(s.mask.astype(np.uint8)).save(work / labels / f"{case}.png")
            (result.test if test else result.training).append(case)
            rows.append((case, r.id, r.split))
        if not result.training:
            raise OmnisegError(f"{task}: no training sample could be read ({len(result.skipped)} left out); nnU-Net "
                               "needs training cases")
        (work / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "R", "1": "G", "2": "B"},
            # nnU-Net's label 0 must be called background: a task of that name gives its label another
            "labels": {"background": 0, (task if task != "background" else "foreground"): 1},
            "numTraining": len(result.training),
            "file_ending": ".png",
            "name": folder.name,
            "description": f"exported by omniseg from task {task!r}: imagesTs is exactly its test split "
                           f"(split fingerprint {split_fingerprint(refs)})",
        }, indent=2) + "\n")
        write_ids(work / IDS_FILE, rows)
        if folder.is_dir():
            folder.rmdir()  # empty (checked above)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def commands(e: Export, out_root: Path, predictions: Path) -> list[str]:
    """nnU-Net's three steps for this export: plan and preprocess, train, predict the test split (paths quoted
    for the shell)."""
    from shlex import quote

    d = e.dataset_id
    return [
        f"export nnUNet_raw={quote(str(out_root))} "
        f"nnUNet_preprocessed={quote(str(out_root.parent / 'nnUNet_preprocessed'))} "
        f"nnUNet_results={quote(str(out_root.parent / 'nnUNet_results'))}",
        f"nnUNetv2_plan_and_preprocess -d {d} --verify_dataset_integrity",
        f"nnUNetv2_train {d} 2d all",
        f"nnUNetv2_predict -i {quote(str(e.folder / 'imagesTs'))} -o {quote(str(predictions))} -d {d} -c 2d -f all",
    ]


def masks_entry(e: Export, predictions: Path, name: str = "nnunet") -> str:
    """The `masks` model entry that reads nnU-Net's predictions back (YAML, to paste under ``models:``; written by
    a YAML writer, so any path reads back as it is)."""
    import yaml

    entry = {"name": name, "kind": "masks", "role": "specialist",
             "options": {"folder": str(predictions), "values": "labels", "labels": [1],
                         "id_map": str(e.folder / IDS_FILE)}}
    text = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, width=10**6)
    return "".join(f"  {line}\n" for line in text.splitlines())

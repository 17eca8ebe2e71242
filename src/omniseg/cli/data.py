"""Commands for data: `omniseg init` (a configuration for your own folders), `data verify`, `data fetch`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import ConfigOpt, TaskOpt, friendly

data_app = typer.Typer(help="Check and download datasets.", no_args_is_help=True, rich_markup_mode="markdown")
from ..errors import OmnisegError


@friendly
def init(
    name: str = typer.Argument(..., help="the new task's name: writes `<config-dir>/NAME.yaml`"),
    images: Path = typer.Option(..., "--images", help="folder of images"),
    masks: Path = typer.Option(..., "--masks", help="folder of masks (may be the images folder)"),
    like: Optional[str] = typer.Option(None, "--like", help="copy models, metrics, curation and training from this task (e.g. polyp: its specialist is then evaluated on your data)"),
    roi: Optional[Path] = typer.Option(None, "--roi", help="folder of region-of-interest masks"),
    split: str = typer.Option("hash", help="hash (20% test by id), test or train (everything), or a CSV/TSV file of id,split"),
    config_dir: Path = typer.Option(Path("configs"), "--config-dir", help="where to write the configuration"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing configuration"),
) -> None:
    """Look at a folder of images and one of masks (or of NIfTI volumes and their labels: nnU-Net's imagesTr and
    labelsTr are read as its raw layout) and write a task configuration for them.

    Prints what it inferred (mask names, several masks per image, threshold or label values) and what
    `data verify` finds; edit the file from there (docs/datasets.md)."""
    from .. import config as config_mod
    from ..config import safe_name
    from .. import datasets
    from ..datasets.infer import config_text, infer

    try:
        safe_name(name)
    except ValueError as e:
        raise OmnisegError(f"task name {name!r}: {e}") from None
    out = config_dir / f"{name}.yaml"
    package = config_mod.builtin_dir().resolve()
    if config_dir.resolve() == package or package in config_dir.resolve().parents:
        raise OmnisegError(f"{config_dir} is the package's own folder of built-in configurations ({package}; the "
                           "repository's configs/ links there): a configuration of yours never goes inside the package. "
                           f"Pass --config-dir DIR (e.g. --config-dir my-configs), then run it with --config DIR/{name}.yaml")
    if out.exists() and not force:
        raise OmnisegError(f"{out} exists; pass --force to overwrite it")
    like_cfg = config_mod.find(like, None).model_dump(mode="json") if like else None
    if split not in ("hash", "test", "train"):
        split = str(Path(split).resolve())
    inferred = infer(images, masks, roi, split=split)
    if split not in ("hash", "test", "train"):
        inferred.options["split"] = str(Path(split).relative_to(inferred.root)) if Path(split).is_relative_to(inferred.root) else split
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(config_text(name, inferred, like_cfg))
    for line in inferred.lines:
        typer.echo(f"  {line}")
    cfg = config_mod.load(out)
    n, problems, warned = datasets.open(inferred.kind, inferred.root, inferred.options).verify(progress=False)
    typer.echo(f"wrote {out}: task {cfg.task!r}, models {', '.join(m.name for m in cfg.models)}")
    typer.echo(f"data verify: {n} samples, {len(problems)} with problems, {len(warned)} warnings")
    for sid, why in (problems + warned)[:5]:
        typer.echo(f"  {sid}: {why}")
    typer.echo(f"next: omniseg data verify --config {out}; omniseg run --config {out}")


@data_app.command("verify")
@friendly
def data_verify(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding dataset.root"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Read every sample of a task's dataset and list every problem (exit 1 if any)."""
    from .. import config as config_mod
    from ..inference.runner import open_dataset

    cfg = config_mod.find(task, config)
    ds = open_dataset(cfg, data_root)
    n, problems, warned = ds.verify(progress=not quiet)
    for sid, why in problems:
        typer.echo(f"{sid}: {why}")
    for sid, why in warned:
        typer.echo(f"{sid}: warning: {why}")
    typer.echo(f"{ds.name} at {ds.root}: {n} samples, {len(problems)} with problems, {len(warned)} warnings")
    if problems:
        raise typer.Exit(1)


@data_app.command("fetch")
@friendly
def data_fetch(
    task: str = typer.Argument(..., help="polyp (Kvasir-SEG), breast (BUSI) or vessel (DRIVE: explains how to get it)"),
    dest: Path = typer.Option(Path("data"), help="folder that receives the dataset"),
    url: Optional[str] = typer.Option(None, help="download from this address instead of the publisher's"),
    force: bool = typer.Option(False, "--force", help="download again even if the folder exists"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Download a public dataset from its publisher, unpack it and verify the file counts."""
    from .. import datasets
    from ..datasets.fetch import fetch

    by_task = {datasets.get(n).task: datasets.get(n) for n in datasets.names()}
    if task not in by_task:
        from ..errors import unknown_name

        raise OmnisegError(unknown_name("task", task, list(by_task)))
    cls = by_task[task]
    if cls.fetch is None:
        typer.echo(f"{cls.name}: {cls.obtain}.\nExpected layout:\n{cls.layout}")
        raise typer.Exit(1)
    root = fetch(cls.fetch, dest, url=url, progress=not quiet, force=force)
    typer.echo(f"{cls.name} ready at {root}\n{cls.fetch.note}")


export_app = typer.Typer(help="Write a task's dataset in another tool's layout.", no_args_is_help=True,
                         rich_markup_mode="markdown")


@export_app.command("nnunet")
@friendly
def export_nnunet(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    dataset_id: int = typer.Option(501, "--id", help="nnU-Net dataset id (1..999; 500 and up are yours)"),
    out: Path = typer.Option(Path("nnUNet_raw"), "--out", help="nnU-Net's raw folder (nnUNet_raw) to write into"),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="where nnU-Net will write its test "
                                               "predictions (default: nnunet_predictions/DatasetXXX_Name)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding dataset.root"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Write the task's dataset in nnU-Net v2's raw format, our split kept exactly (the test split is
    imagesTs, never trained on), and print nnU-Net's three commands and the `masks` model entry that reads
    its predictions back (docs/specialists.md)."""
    from .. import config as config_mod
    from ..datasets import nnunet
    from ..inference.runner import open_dataset
    from ..progress import bar

    cfg = config_mod.find(task, config)
    ds = open_dataset(cfg, data_root)
    with bar(total=len(ds.refs("all")), desc="export", disable=quiet) as pbar:
        e = nnunet.export(ds, cfg.task, out, dataset_id, progress=lambda: pbar.update(1))
    preds = predictions or Path("nnunet_predictions") / e.folder.name
    typer.echo(f"wrote {e.folder}: {len(e.training)} training cases (imagesTr, labelsTr), "
               f"{len(e.test)} test cases (imagesTs; their references in labelsTs)")
    for sid, why in e.skipped:
        typer.echo(f"  left out {sid}: {why}")
    typer.echo("\nthen, with nnU-Net v2 installed (pip install nnunetv2):")
    for line in nnunet.commands(e, out.resolve(), preds):
        typer.echo(f"  {line}")
    typer.echo(f"\nand add this entry under models: in {cfg.source or 'the task configuration'}, then "
               f"`omniseg run --task {cfg.task} --models nnunet`:\n")
    typer.echo(nnunet.masks_entry(e, preds))

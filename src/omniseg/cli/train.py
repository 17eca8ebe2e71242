"""`omniseg train`: the specialist, with the config's `train:` recipe (registered on the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import ConfigOpt, TaskOpt, friendly
from ..errors import OmnisegError


@friendly
def train(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    epochs: Optional[int] = typer.Option(None, min=1, help="override train.epochs"),
    max_minutes: Optional[float] = typer.Option(None, help="override train.max_minutes (the schedule fits the budget)"),
    out: Optional[Path] = typer.Option(None, help="checkpoint file (default: the unet model's options.checkpoint)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue an interrupted training run"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding dataset.root"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="the models entry (kind unet) to train (default: train.model)"),
    seed: Optional[int] = typer.Option(None, help="override train.seed: a second specialist for the study's controls (docs/study.md)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Train the task's specialist (the config's `train:` recipe) and keep the best checkpoint by validation Dice."""
    from .. import config as config_mod
    from pydantic import ValidationError

    from ..config import TrainConfig
    from ..inference.runner import open_dataset
    from ..training.train import train as train_task

    cfg = config_mod.find(task, config)
    tc = cfg.train or TrainConfig()
    updates = {k: v for k, v in (("epochs", epochs), ("max_minutes", max_minutes), ("model", model), ("seed", seed))
               if v is not None}
    try:  # validated like the config itself: --max-minutes 0 is an error, not a run
        tc = TrainConfig.model_validate({**tc.model_dump(), **updates})
    except ValidationError as e:
        raise OmnisegError("; ".join(f"--{str(x['loc'][0]).replace('_', '-')}: {x['msg']}" for x in e.errors())) from None
    entry = cfg.model(tc.model)
    from .. import models

    if not models.get(entry.kind).trainable:
        raise OmnisegError(f"{cfg.source}: model {tc.model!r} is of kind {entry.kind!r}, which `train` cannot train")
    target = out or entry.options.get("checkpoint")
    if target is None:
        raise OmnisegError(f"{cfg.source}: key 'models' entry {tc.model!r} has no options.checkpoint; pass --out")
    res = train_task(cfg, tc, open_dataset(cfg, data_root), Path(target), device=device, progress=not quiet,
                     resume=resume)
    typer.echo(f"{cfg.task}: {res.epochs} epochs on {res.device} ({res.precision}), {res.images_per_s:.1f} images/s, "
               f"{res.minutes:.1f} min (stopped by {res.stopped}); best validation Dice {res.best_val_dice:.4f}; "
               f"checkpoint {res.checkpoint}")

"""`omniseg batch wait|list|cancel`: the batch jobs a `run --batch` recorded in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    ConfigOpt,
    StoreOpt,
    TaskOpt,
    existing_store,
    split_names,
    store_path,
    friendly,
    run_and_tell,
)
from ..errors import OmnisegError

batch_app = typer.Typer(help="Batch jobs of API models (`omniseg run --batch` submits them): wait, list, cancel.",
                        no_args_is_help=True, rich_markup_mode="markdown")


@batch_app.command()
@friendly
def wait(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    models: Optional[list[str]] = typer.Option(None, "--models", "-m", help="only these models (default: all in the config)"),
    split: Optional[str] = typer.Option(None, help="train, test or all (default: the config's split)"),
    limit: Optional[int] = typer.Option(None, min=1, help="only the first N samples (sorted by id)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding dataset.root"),
    store: Optional[Path] = StoreOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Wait for the recorded jobs, collect their answers and write their rows; submit nothing new."""
    from .. import config as config_mod

    cfg = config_mod.find(task, config)
    path = store_path(store)
    if not path.is_file():
        raise OmnisegError(f"{path}: no store there, so no batch jobs to wait for")
    run_and_tell(cfg, path, model_names=split_names(models), split=split, limit=limit, data_root=data_root,
                 progress=not quiet, batch=True, submit=False)


@batch_app.command("list")
@friendly
def list_jobs(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="only this task"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """The batch jobs recorded in the store: name, state, requests, answers, failures."""
    from ..store.jobs import JobBook

    with existing_store(store) as st:
        rows = JobBook(st).all(task)
    if not rows:
        typer.echo("no batch jobs recorded")
    for r in rows:
        got = (f"{int(r['answered'] or 0)} answered, {int(r['failed'] or 0)} failed, {int(r['unanswered'] or 0)} unanswered"
               if r["collected_at"] else "not collected yet")
        typer.echo(f"{r['task']}/{r['model']}: {r['name'] or '(not created)'} {r['state']} ({r['input']}, "
                   f"{r['requests']} requests; {got})" + (f" - {r['message']}" if r["message"] else ""))


@batch_app.command()
@friendly
def cancel(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    models: Optional[list[str]] = typer.Option(None, "--models", "-m", help="only these models (default: all in the config)"),
    name: Optional[str] = typer.Option(None, "--name", help="only the job of this name (batches/...)"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Cancel the open jobs; `omniseg batch wait` then collects what they finished, the rest stays to do."""
    from ..inference import batch
    from .. import config as config_mod
    from ..inference.runner import run_context, select_models

    cfg = config_mod.find(task, config)
    with existing_store(store) as st:
        done = []
        for m in select_models(cfg, split_names(models)):
            if batch.supports(m):
                m.bind(run_context(st.root))
                try:
                    done += batch.cancel(st, m, cfg.task, name)
                finally:
                    m.close()
    typer.echo("\n".join(f"cancelling {n}" for n in done) or "no open batch job to cancel")

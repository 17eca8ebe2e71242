"""`omniseg review`: blinded expert review of the regions where models and the annotation disagree."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import OmnisegError
from .common import StoreOpt, existing_store, friendly
from ..store import results as store_results


@friendly
def review(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="task to review (default: the store's only task)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma-separated models whose regions are reviewed "
                                         "(default: the specialists, omnimodels and foundation models)"),
    subset: Optional[str] = typer.Option(None, "--subset", help="only images of a curated subset: easiest or hardest "
                                         "(default: every image of --split)"),
    split: str = typer.Option("test", help="images of this split: train, test or all"),
    max_items: int = typer.Option(200, "--max", min=1, help="at most this many regions (a random sample beyond it)"),
    min_area: int = typer.Option(64, "--min-area", min=1, help="smallest region reviewed, in pixels"),
    seed: int = typer.Option(0, "--seed", help="seed of the random sample of regions above --max"),
    rebuild: bool = typer.Option(False, "--rebuild", help="build the items again with new options, dropping the "
                                 "answers recorded against the old ones"),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", "-r", help="who reviews: serves the page for them "
                                           "(or, with --export, writes theirs)"),
    order_seed: Optional[int] = typer.Option(None, "--order-seed", help="seed of this reviewer's shuffled order at "
                                             "their first start (default: random; the seed is recorded)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: this machine only)"),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="port (default: any free one)"),
    export: Optional[Path] = typer.Option(None, "--export", help="write a self-contained page for --reviewer to "
                                          "this folder instead of serving (answers come back as a CSV)"),
    import_file: Optional[Path] = typer.Option(None, "--import", help="read the answers of an exported page (CSV)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding the recorded root"),
    store: Optional[Path] = StoreOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Show an expert the regions where a model and the annotation disagree, blinded to which model marked them.

    Without --reviewer: build the review items (the regions) and say how many. With --reviewer NAME: serve the
    review page on 127.0.0.1 (the URL printed carries a one-time token); every answer is saved at once, and a
    later start resumes. --export DIR writes a page that needs no Python (answers download as CSV), --import
    reads that CSV back. `omniseg report` then tests claim 4 (docs/study.md, "Expert review")."""
    from ..study.review import items, page

    if split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    if subset is not None and subset not in ("easiest", "hardest"):
        raise OmnisegError(f"--subset must be easiest or hardest, not {subset!r}")
    if export is not None and export.exists() and not export.is_dir():  # before a reviewer's order is recorded
        raise OmnisegError(f"--export {export} is a file; name a folder for the review page")
    with existing_store(store) as st:
        if import_file is not None:
            for t, n in sorted(page.import_csv(st, import_file, task).items()):
                typer.echo(f"{t}: {n} answers imported from {import_file}")
            return
        tasks = store_results.tasks(st)
        if task is None:
            if len(tasks) != 1:
                raise OmnisegError(f"{st.path} holds tasks {', '.join(tasks) or '(none)'}: choose one with --task")
            task = tasks[0]
        elif task not in tasks:
            from ..errors import unknown_name

            raise OmnisegError(f"{st.path}: " + unknown_name("task", task, tasks))
        chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
        got = items.build(st, task, models=chosen, subset=subset, split=split, max_items=max_items, min_area=min_area,
                          seed=seed, rebuild=rebuild, data_root=data_root, progress=not quiet)
        typer.echo(f"{task}: {got['items']} review items ({got['model-only']} model-only, "
                   f"{got['reference-only']} reference-only regions)")
        if export is not None:
            if not reviewer:
                raise OmnisegError("--export needs --reviewer NAME (each reviewer gets their own page and order)")
            path = page.export(st, task, reviewer, export, order_seed, data_root=data_root, progress=not quiet)
            typer.echo(f"wrote {path}: open it in a browser (no network needed); the answers come back with "
                       f"`omniseg review --import FILE.csv`")
        elif reviewer:
            from ..study.review import server

            server.serve(st, task, reviewer, host=host, port=port, seed=order_seed, data_root=data_root,
                         say=lambda line: typer.echo(line))
        else:
            typer.echo(f"next: `omniseg review --task {task} --reviewer NAME` to review them in the browser, "
                       "or add --export DIR for a reviewer without Python")

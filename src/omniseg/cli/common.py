"""What the command modules share: the options every command takes, the error handling that turns an
OmnisegError into one line and exit code 2, and the store helpers. Imports no command module and no app."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Optional

import typer

from ..errors import OmnisegError
from ..redaction import redact

STORE_HELP = "SQLite store (the source of truth); default $OMNISEG_STORE or runs/omniseg.sqlite"
TaskOpt = typer.Option(None, "--task", "-t", help="task name: reads `configs/<task>.yaml`")
ConfigOpt = typer.Option(None, "--config", "-c", help="a task configuration file instead of `configs/<task>.yaml`")
StoreOpt = typer.Option(None, "--store", help=STORE_HELP)


def store_path(store: Optional[Path]) -> Path:
    from ..store.database import DEFAULT_PATH

    return store or Path(os.environ.get("OMNISEG_STORE") or DEFAULT_PATH)


def friendly(fn):
    """Print OmnisegError messages without a traceback (exit 2); Ctrl-C says how to resume."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = fn(*args, **kwargs)
            for w in caught:
                if issubclass(w.category, UserWarning) and w.filename.startswith(str(Path(__file__).parents[1])):
                    typer.secho(redact(f"warning: {w.message}"), fg="yellow", err=True)
            return result
        except OmnisegError as e:
            typer.secho(redact(f"error: {e}"), fg="red", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: finished pairs are saved; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def existing_store(store: Optional[Path], readonly: bool = False):
    """The store at the given (or default) path; an error naming the path when there is none.
    ``readonly`` for commands that only read it (report): they work on a read-only file, and beside a run."""
    from ..store.database import Store

    path = store_path(store)
    if not path.is_file():
        raise OmnisegError(f"{path}: no store there; run `omniseg run --task <task>` first, or pass --store")
    return Store(path, readonly=readonly)


def retry_statuses(text: str) -> tuple[str, ...]:
    from ..models.base import STATUSES
    from ..models.api.decoders import STATUSES as DECODED

    known = (set(STATUSES) | set(DECODED)) - {"ok"}
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise OmnisegError(f"--retry-status {text!r}: expected failure statuses among {', '.join(sorted(known))}")
    return names


def split_names(values: Optional[list[str]]) -> Optional[list[str]]:
    """--models a,b (or repeated): the names; None when the option was not given."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise OmnisegError(f"--models {','.join(values)!r} names no model; leave it out to run the config's models")
    return names


def run_and_tell(cfg, path: Path, **kw) -> None:
    """Run (runner.run) and print what the run did: statuses, API answers and cost, model drift."""
    from ..inference.runner import run as run_task
    from ..store.database import Store

    archive = path.with_name("answers.sqlite")
    created = [p for p in (path.parent, path, archive) if not p.exists()]  # what a run failing at once must not leave
    try:
        with Store(path) as st:
            s = run_task(cfg, st, **kw)
            _tell(st, s, path)
    except BaseException:
        _remove_if_unused(path, archive, created)
        raise


def _remove_if_unused(path: Path, archive: Path, created: list[Path]) -> None:
    """The store, answer archive and folder this command created, removed again when it failed before writing a
    row or keeping an answer: a command that fails writes nothing."""
    from ..store.database import count_rows

    for db_path, tables in ((path, ("predictions", "batch_jobs")), (archive, ("answers",))):
        if db_path in created and db_path.is_file() and count_rows(db_path, tables) == 0:
            for p in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
                p.unlink(missing_ok=True)
    if path.parent in created and path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


def _tell(st, s, path: Path) -> None:
    from ..store import bookings

    api = bookings.of_run(st, s.run_id)
    versions = bookings.versions_of_run(st, s.run_id)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items())) or "nothing new"
    typer.echo(f"{s.task} [{s.split}]: {s.samples} samples x {s.pairs // max(s.samples, 1)} models = {s.pairs} pairs; "
               f"{s.skipped} already done; this run: {statuses} ({s.seconds:.1f}s). Store: {path}")
    for r in api.itertuples():
        typer.echo(f"  {r.model}: {int(r.answered)} API answers, {int(r.errors)} errors retried or final, "
                   f"{int(r.cached)} from the archive" + (f", {int(r.batch)} batch-job answers" if r.batch else "")
                   + f"; cost {r.cost:.4f} USD"
                   + (f" ({int(r.recovered)} answers of an interrupted run booked now)" if r.recovered else ""))
    for r in versions.itertuples():
        if isinstance(r.asked, str) and r.asked and not str(r.model_version).startswith(r.asked):
            typer.secho(f"warning: {r.model} asked for {r.asked} but {r.n} answer(s) came from {r.model_version}: "
                        "the API routes a retired model to another one (docs/omnimodels.md)", fg="yellow", err=True)
    for note in s.notes:
        typer.secho(f"warning: {note}", fg="yellow", err=True)

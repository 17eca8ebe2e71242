"""The `omniseg` command line: thin Typer commands that wire config, datasets, models, store and reports."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from .errors import OmnisegError
from .redaction import redact

app = typer.Typer(
    help="Benchmark general-purpose omnimodels against specialist networks on medical image segmentation.\n\n"
    "Typical use: `omniseg run --task polyp`, then `omniseg curate --extremes 50`, then `omniseg report`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's lines join into paragraphs (no break in mid-phrase at any width)
)
data_app = typer.Typer(help="Check and download datasets.", no_args_is_help=True, rich_markup_mode="markdown")


def _version(value: bool) -> None:
    if value:
        from . import __version__
        from .manifest import git_commit

        commit = git_commit()
        typer.echo(f"omniseg {__version__}" + (f" (git {commit})" if commit else ""))
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and the git commit of the source, then exit"),
         plugin: Optional[list[Path]] = typer.Option(None, "--plugin", help="an extension module to load (dataset kinds, model kinds, metrics); repeatable")) -> None:
    """Benchmark general-purpose omnimodels against specialist networks on medical image segmentation."""
    from . import plugins

    for p in plugin or []:
        try:
            plugins.load_path(p)
        except ValueError as e:
            typer.secho(f"error: --plugin {e}", fg="red", err=True)
            raise typer.Exit(2) from None
app.add_typer(data_app, name="data")

STORE_HELP = "SQLite store (the source of truth); default $OMNISEG_STORE or runs/omniseg.sqlite"
TaskOpt = typer.Option(None, "--task", "-t", help="task name: reads configs/<task>.yaml")
ConfigOpt = typer.Option(None, "--config", "-c", help="a task configuration file instead of configs/<task>.yaml")
StoreOpt = typer.Option(None, "--store", help=STORE_HELP)


def _store_path(store: Optional[Path]) -> Path:
    from .store import DEFAULT_PATH

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
                if issubclass(w.category, UserWarning) and w.filename.startswith(str(Path(__file__).parent)):
                    typer.secho(redact(f"warning: {w.message}"), fg="yellow", err=True)
            return result
        except OmnisegError as e:
            typer.secho(redact(f"error: {e}"), fg="red", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: finished pairs are saved; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _existing_store(store: Optional[Path], readonly: bool = False):
    """The store at the given (or default) path; an error naming the path when there is none.
    ``readonly`` for commands that only read it (report): they work on a read-only file, and beside a run."""
    from .store import Store

    path = _store_path(store)
    if not path.is_file():
        raise OmnisegError(f"{path}: no store there; run `omniseg run --task <task>` first, or pass --store")
    return Store(path, readonly=readonly)


def _retry_statuses(text: str) -> tuple[str, ...]:
    from .models.base import STATUSES
    from .models.decoders import STATUSES as DECODED

    known = (set(STATUSES) | set(DECODED)) - {"ok"}
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise OmnisegError(f"--retry-status {text!r}: expected failure statuses among {', '.join(sorted(known))}")
    return names


def _split_names(values: Optional[list[str]]) -> Optional[list[str]]:
    """--models a,b (or repeated): the names; None when the option was not given."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise OmnisegError(f"--models {','.join(values)!r} names no model; leave it out to run the config's models")
    return names


@app.command()
@friendly
def run(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    models: Optional[list[str]] = typer.Option(None, "--models", "-m", help="models to run, comma-separated or repeated (default: all in the config)"),
    split: Optional[str] = typer.Option(None, help="train, test or all (default: the config's split)"),
    limit: Optional[int] = typer.Option(None, min=1, help="only the first N samples (sorted by id)"),
    force: bool = typer.Option(False, "--force", help="redo pairs that are already in the store"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding dataset.root"),
    store: Optional[Path] = StoreOpt,
    batch_size: Optional[int] = typer.Option(None, min=1, help="samples loaded and predicted together (default: what the models prefer, at least 8)"),
    refresh: bool = typer.Option(False, "--refresh", help="ask the API again instead of using cached answers"),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0, help="stop before API calls would cost more than this many USD"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the API calls and estimated cost; call nothing, write nothing"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="also redo pairs whose status is a failure listed by --retry-status (a plain rerun skips every recorded pair)"),
    retry_status: str = typer.Option("api_error", "--retry-status", help="comma-separated statuses --retry-failed redoes (answers come from the archive unless --refresh)"),
    batch: bool = typer.Option(False, "--batch", help="send API models' pairs as batch jobs: half price, answered within 24 h; a killed run finds its job again (docs/omnimodels.md)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Predict and score every (sample, model) pair of a task; resumes where a previous run stopped."""
    from . import config as config_mod
    from .runner import dry_run as estimate
    from .store import Store

    if split is not None and split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    cfg = config_mod.find(task, config)
    retry = _retry_statuses(retry_status) if retry_failed else ()
    path = _store_path(store)
    if dry_run:
        st = Store(path, readonly=True) if path.is_file() else None
        try:
            est = estimate(cfg, st, store_root=path.parent, model_names=_split_names(models), split=split,
                           limit=limit, force=force, data_root=data_root, refresh=refresh, progress=not quiet,
                           retry=retry)
        finally:
            if st is not None:
                st.close()
        for name, e in est.items():
            both = f" online, {e['batch_cost_usd']:.4f} USD as a batch job" if e.get("batch_cost_usd") is not None else ""
            typer.echo(f"{name}: {e['pairs']} pairs to do; {e['calls']} API calls, {e['cached']} answers cached; "
                       f"estimated cost {e['cost_usd']:.4f} USD{both}")
        typer.echo(f"total estimated cost: {sum(e['cost_usd'] for e in est.values()):.4f} USD (dry run: nothing called or written)")
        return
    run_and_tell(cfg, path, model_names=_split_names(models), split=split, limit=limit, force=force,
                 data_root=data_root, batch_size=batch_size, progress=not quiet, argv=sys.argv[1:],
                 refresh=refresh, max_cost=max_cost, retry=retry, batch=batch)


def run_and_tell(cfg, path: Path, **kw) -> None:
    """Run (runner.run) and print what the run did: statuses, API answers and cost, model drift."""
    from .runner import run as run_task
    from .store import Store

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
    import sqlite3

    def count(db_path: Path, tables: tuple[str, ...]) -> int | None:
        try:
            with sqlite3.connect(db_path) as db:
                return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
        except sqlite3.Error:
            return None

    for db_path, tables in ((path, ("predictions", "batch_jobs")), (archive, ("answers",))):
        if db_path in created and db_path.is_file() and count(db_path, tables) == 0:
            for p in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
                p.unlink(missing_ok=True)
    if path.parent in created and path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


def _tell(st, s, path: Path) -> None:
    api = st.query("SELECT model, SUM(outcome = 'answered') AS answered, SUM(outcome = 'recovered') AS recovered,"
                   " SUM(outcome = 'error') AS errors, SUM(outcome = 'batch') AS batch,"
                   " SUM(outcome = 'cache_hit') AS cached, SUM(cost_usd) AS cost FROM api_calls"
                   " WHERE run_id = ? GROUP BY model", (s.run_id,))
    versions = st.query("SELECT c.model, c.model_version, COUNT(*) n, json_extract(m.signature, '$.options.model')"
                        " AS asked FROM api_calls c JOIN models m ON m.task = c.task AND m.model = c.model"
                        " WHERE c.run_id = ? AND c.model_version IS NOT NULL GROUP BY 1, 2", (s.run_id,))
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items())) or "nothing new"
    typer.echo(f"{s.task} [{s.split}]: {s.samples} samples x {s.pairs // max(s.samples, 1)} models = {s.pairs} pairs; "
               f"{s.skipped} already done; this run: {statuses} ({s.seconds:.1f}s). Store: {path}")
    for r in api.itertuples():
        typer.echo(f"  {r.model}: {int(r.answered)} API answers, {int(r.errors)} errors retried or final, "
                   f"{int(r.cached)} from the archive" + (f", {int(r.batch)} batch-job answers" if r.batch else "")
                   + f"; cost {r.cost:.4f} USD"
                   + (f" ({int(r.recovered)} answers of an interrupted run booked now)" if r.recovered else ""))
    for r in versions.itertuples():
        if r.asked and not str(r.model_version).startswith(r.asked):
            typer.secho(f"warning: {r.model} asked for {r.asked} but {r.n} answer(s) came from {r.model_version}: "
                        "the API routes a retired model to another one (docs/omnimodels.md)", fg="yellow", err=True)
    for note in s.notes:
        typer.secho(f"warning: {note}", fg="yellow", err=True)


@app.command()
@friendly
def curate(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="task to curate (default: every task in the store)"),
    extremes: Optional[int] = typer.Option(None, "--extremes", "-n", min=1, help="how many easiest and how many hardest cases (default: the config's curation.extremes, else 50)"),
    by: Optional[str] = typer.Option(None, "--by", help="reference model whose score ranks the cases (default: the config's curation.reference)"),
    metric: Optional[str] = typer.Option(None, help="dice or iou (default: the config's curation.metric, else dice)"),
    split: Optional[str] = typer.Option(None, help="train, test or all (default: the split(s) the reference model was scored on)"),
    control: Optional[str] = typer.Option(None, "--control", help="a second specialist (another seed) that picks its own lists too: the selection-bias controls (default: curation.control)"),
    strata: Optional[bool] = typer.Option(None, "--strata/--no-strata", help="also store lesion-size and contrast quartiles read from the images (default: curation.strata)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder for --strata, overriding the recorded root"),
    store: Optional[Path] = StoreOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Pick the N easiest and N hardest cases by the reference model's per-image score.

    The study's controls for the selection bias this brings (docs/study.md): --control picks lists by a
    second specialist, --strata by lesion size and contrast; `omniseg report` tests the claims with each."""
    from .curate import curate as curate_task

    if split is not None and split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    with _existing_store(store) as st:
        tasks = [task] if task else st.tasks()
        if not tasks:
            raise OmnisegError(f"{st.path} has no results yet: run `omniseg run --task <task>` first")
        if task and task not in st.tasks():
            from .errors import unknown_name

            raise OmnisegError(f"{st.path}: " + unknown_name("task", task, st.tasks()))
        for t in tasks:
            lists = curate_task(st, t, extremes, reference=by, metric=metric, split=split, control=control,
                                strata=strata, data_root=data_root, progress=not quiet)
            e, h = lists["easiest"], lists["hardest"]
            ref, used = e[0]["reference"], e[0]["metric"]
            typer.echo(f"{t}: {len(e)} easiest + {len(h)} hardest by {ref} {used} on split {lists['split']} "
                       f"(easiest {e[-1]['value']:.3f}..{e[0]['value']:.3f}, hardest {h[0]['value']:.3f}..{h[-1]['value']:.3f})")
            extra = sorted(k for k in lists if k not in ("easiest", "hardest", "split"))
            if extra:
                typer.echo(f"{t}: controls stored: " + ", ".join(f"{k} ({len(lists[k])})" for k in extra))


@app.command()
@friendly
def report(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="only this task (default: all)"),
    out: Path = typer.Option(Path("runs") / "report", "--out", "-o", help="folder for the CSVs and report.md"),
    split: str = typer.Option("test", help="samples of this split form the 'all' subset: train, test or all"),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the PNG figures"),
    cases: int = typer.Option(4, min=1, help="easiest and hardest cases shown in the montage"),
    html: bool = typer.Option(True, "--html/--no-html", help="also write report.html (every case, sortable, with pictures in thumbs/)"),
    specialist: Optional[str] = typer.Option(None, help="model routed from (default: the curation reference)"),
    omnimodel: Optional[str] = typer.Option(None, help="model routed to (default: the task's first gemini model)"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Write the report folder: report.md (figures embedded), report.html (every case, sortable and
    filterable, with pictures), per-image, summary, comparison and routing CSVs, figures/ and
    manifest.json, all from the store."""
    from . import report as report_mod

    if split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    with _existing_store(store, readonly=True) as st:
        if not st.tasks():
            raise OmnisegError(f"{st.path} has no results yet: run `omniseg run --task <task>` first")
        if task and task not in st.tasks():
            from .errors import unknown_name

            raise OmnisegError(f"{st.path}: " + unknown_name("task", task, st.tasks()))
        paths = report_mod.write(st, out, task=task, split=split, figures=figures, k=cases,
                                 specialist=specialist, omnimodel=omnimodel, html=html)
    for kind, p in paths.items():
        typer.echo(f"{kind:10s} {p}")


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("omniseg-demo"), "--out", "-o", help="folder for the demo's data, store and report"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="a Kvasir-SEG folder to use (default: "
                                             "data/Kvasir-SEG when present, else a generated dataset)"),
    live: bool = typer.Option(False, "--live", help="ask the real Gemini API (needs GEMINI_API_KEY; prints the "
                                                    "estimated cost first) instead of the local stand-in"),
    minutes: float = typer.Option(2.0, "--minutes", min=0.1, help="training time for the demo specialist"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """The whole job in a few minutes, offline: train a small specialist, run it with two floors and an
    omnimodel (a local stand-in unless --live), curate, report; prints where report.html is."""
    from .demo import run as run_demo

    d = run_demo(out, data_root=data_root, live=live, minutes=minutes, say=typer.echo, progress=not quiet)
    typer.echo(f"done: {d.report}\n(a demo: {d.data_kind} data, the omnimodel is {d.omnimodel}; every number in the "
               "report is labelled demo. The study: README, then `omniseg data fetch polyp`.)")


@app.command("list")
@friendly
def list_plugins() -> None:
    """List the tasks (and which file configures each), the datasets, model kinds and metrics (and where each comes from)."""
    from . import datasets, models
    from .config import builtin_dir, task_files

    builtin = builtin_dir().resolve()
    typer.echo("tasks:")
    for name, path in task_files().items():
        where = "built-in" if path.resolve().parent == builtin else "this folder's configs/"
        typer.echo(f"  {name:12s} {path}  ({where})")
    from . import metrics, plugins
    from .models.base import ROLES

    for title, reg, describe in (("datasets", datasets.REGISTRY, lambda c: ""),
                                 ("model kinds", models.REGISTRY, lambda c: f"role {c.role}"),
                                 ("metrics", metrics.REGISTRY, lambda m: m.description + (" (opt-in)" if m.opt_in else ""))):
        typer.echo(f"{title}:")
        for name in reg.names():
            try:
                what = describe(reg.get(name))
            except Exception as e:  # a broken entry is shown, not fatal
                what = f"cannot load: {type(e).__name__}: {e}"
            typer.echo(f"  {name:12s} {what:44s} {reg.origin(name)}")
    typer.echo("roles: " + "; ".join(f"{r}: {d}" for r, d in ROLES.items()))
    for origin, error in plugins.FAILURES:
        typer.secho(f"extension not loaded: {origin}: {error}", fg="yellow")


from . import cli_api, cli_batch, cli_data, cli_train  # noqa: E402,F401  (redecode, probe, models; batch; init, data; train)

if __name__ == "__main__":  # pragma: no cover
    # `python -m omniseg.cli`: this module runs as __main__, while the command modules registered
    # themselves on the app of `omniseg.cli`, the one imported by name: run that one
    from omniseg.cli import app as _app

    _app()

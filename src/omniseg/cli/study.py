"""The study's commands: `omniseg curate`, `omniseg report`, `omniseg demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import OmnisegError
from .common import StoreOpt, existing_store, friendly
from ..store import results as store_results



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
    replace: bool = typer.Option(False, "--replace", help="replace stored lists of another size or reference (refused otherwise: reports and reviews may rest on them)"),
    store: Optional[Path] = StoreOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Pick the N easiest and N hardest cases by the reference model's per-image score.

    The study's controls for the selection bias this brings (docs/study.md): --control picks lists by a
    second specialist, --strata by lesion size and contrast; `omniseg report` tests the claims with each."""
    from ..study.curate import curate as curate_task

    if split is not None and split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    with existing_store(store) as st:
        tasks = [task] if task else store_results.tasks(st)
        if not tasks:
            raise OmnisegError(f"{st.path} has no results yet: run `omniseg run --task <task>` first")
        if task and task not in store_results.tasks(st):
            from ..errors import unknown_name

            raise OmnisegError(f"{st.path}: " + unknown_name("task", task, store_results.tasks(st)))
        for t in tasks:
            lists = curate_task(st, t, extremes, reference=by, metric=metric, split=split, control=control,
                                strata=strata, data_root=data_root, progress=not quiet, replace=replace)
            e, h = lists["easiest"], lists["hardest"]
            ref, used = e[0]["reference"], e[0]["metric"]
            typer.echo(f"{t}: {len(e)} easiest + {len(h)} hardest by {ref} {used} on split {lists['split']} "
                       f"(easiest {e[-1]['value']:.3f}..{e[0]['value']:.3f}, hardest {h[0]['value']:.3f}..{h[-1]['value']:.3f})")
            extra = sorted(k for k in lists if k not in ("easiest", "hardest", "split"))
            if extra:
                typer.echo(f"{t}: controls stored: " + ", ".join(f"{k} ({len(lists[k])})" for k in extra))


@friendly
def report(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="only this task (default: all)"),
    out: Path = typer.Option(Path("runs") / "report", "--out", "-o", help="folder for the CSVs and report.md"),
    split: str = typer.Option("test", help="samples of this split form the 'all' subset: train, test or all"),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw the figures (PNG, and SVG for a paper)"),
    cases: int = typer.Option(4, min=1, help="easiest and hardest cases shown in the montage"),
    html: bool = typer.Option(True, "--html/--no-html", help="also write report.html (every case, sortable, with pictures in thumbs/)"),
    latex: bool = typer.Option(False, "--latex", help="also write report.tex: the main tables as booktabs LaTeX (compiles with pdflatex)"),
    specialist: Optional[str] = typer.Option(None, help="model routed from (default: the curation reference)"),
    omnimodel: Optional[str] = typer.Option(None, help="model routed to (default: the task's first gemini model)"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Write the report folder: report.md (figures embedded), report.html (every case, sortable and
    filterable, with pictures), per-image, summary, comparison and routing CSVs, figures/ and
    manifest.json, all from the store."""
    from ..study import report as report_mod

    if split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    with existing_store(store, readonly=True) as st:
        if not store_results.tasks(st):
            raise OmnisegError(f"{st.path} has no results yet: run `omniseg run --task <task>` first")
        if task and task not in store_results.tasks(st):
            from ..errors import unknown_name

            raise OmnisegError(f"{st.path}: " + unknown_name("task", task, store_results.tasks(st)))
        paths = report_mod.write(st, out, task=task, split=split, figures=figures, k=cases,
                                 specialist=specialist, omnimodel=omnimodel, html=html, latex=latex)
    for kind, p in paths.items():
        typer.echo(f"{kind:10s} {p}")


@friendly
def demo(
    out: Path = typer.Option(Path("omniseg-demo"), "--out", "-o", help="folder for the demo's data, store and report"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="a Kvasir-SEG folder to use (default: "
                                             "data/Kvasir-SEG when present, else a generated dataset)"),
    live: bool = typer.Option(False, "--live", help="ask the real Gemini API (needs GEMINI_API_KEY; prints the "
                                                    "estimated cost first) instead of the local stand-in"),
    minutes: float = typer.Option(2.0, "--minutes", min=0.1, help="training time for the demo specialist"),
    volumes: bool = typer.Option(False, "--volumes", help="the volume demo: the MNI152 template's white matter (from "
                                                          "nilearn's wheel), every 2-D model slice by slice, scored in mm"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """The whole job in a few minutes, offline: train a small specialist, run it with two floors and an
    omnimodel (a local stand-in unless --live), curate, report; prints where report.html is."""
    from ..study.demo import run as run_demo

    d = run_demo(out, data_root=data_root, live=live, minutes=minutes, say=typer.echo, progress=not quiet,
                 volumes=volumes)
    typer.echo(f"done: {d.report}\n(a demo: {d.data_kind} data, the omnimodel is {d.omnimodel}; every number in the "
               "report is labelled demo. The study: README, then `omniseg data fetch polyp`.)")

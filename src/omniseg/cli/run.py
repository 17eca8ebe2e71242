"""`omniseg run`: every (sample, model) pair of a task predicted, scored and recorded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import EmptyShard, OmnisegError
from .common import ConfigOpt, StoreOpt, TaskOpt, friendly, retry_statuses, run_and_tell, split_names, store_path



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
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only the K-th of N disjoint, stable slices of the samples (by a hash of the id), into this --store; `omniseg merge` combines the N stores (docs/scaling.md)"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local, slurm or ray: run the work as --shards N shard runs through that engine, follow them and merge their stores into --store (docs/scaling.md)"),
    shards: int = typer.Option(1, "--shards", min=1, help="with --executor: how many shards"),
    partition: Optional[str] = typer.Option(None, "--partition", help="with --executor slurm: the SLURM partition"),
    time_min: Optional[int] = typer.Option(None, "--time-min", min=1, help="with --executor slurm: each shard's time limit in minutes (default 60)"),
    gpus_per_shard: int = typer.Option(0, "--gpus-per-shard", min=0, help="with --executor: GPUs per shard (local: shard K uses GPU K mod count)"),
    executor_param: Optional[list[str]] = typer.Option(None, "--executor-param", help="KEY=VALUE passed to the engine (submitit: e.g. cluster=local, slurm_mem_gb=32; ray: address=auto, num_cpus=2); repeatable"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Predict and score every (sample, model) pair of a task; resumes where a previous run stopped."""
    from .. import config as config_mod
    from ..inference.runner import dry_run as estimate, parse_shard
    from ..store.database import Store

    if split is not None and split not in ("train", "test", "all"):
        raise OmnisegError(f"--split must be train, test or all, not {split!r}")
    cfg = config_mod.find(task, config)
    retry = retry_statuses(retry_status) if retry_failed else ()
    sliced = parse_shard(shard)
    path = store_path(store)
    if dry_run:
        st = Store(path, readonly=True) if path.is_file() else None
        try:
            est = estimate(cfg, st, store_root=path.parent, model_names=split_names(models), split=split,
                           limit=limit, force=force, data_root=data_root, refresh=refresh, progress=not quiet,
                           retry=retry, shard=sliced)
        finally:
            if st is not None:
                st.close()
        for name, e in est.items():
            if e.get("missing_checkpoint"):
                typer.echo(f"{name}: {e['pairs']} pairs to do; no checkpoint yet at {e['missing_checkpoint']} (train it "
                           f"with `omniseg train --task {cfg.task}`); a local model: no API cost")
                continue
            both = f" online, {e['batch_cost_usd']:.4f} USD as a batch job" if e.get("batch_cost_usd") is not None else ""
            typer.echo(f"{name}: {e['pairs']} pairs to do; {e['calls']} API calls, {e['cached']} answers cached; "
                       f"estimated cost {e['cost_usd']:.4f} USD{both}")
        typer.echo(f"total estimated cost: {sum(e['cost_usd'] for e in est.values()):.4f} USD (dry run: nothing called or written)")
        return
    if executor is not None:
        if sliced is not None:
            raise OmnisegError("--executor runs the shards itself: leave --shard out (it takes --shards N)")
        argv = _shard_command(task, config, models, split, limit, force, data_root, batch_size, refresh, max_cost,
                              retry_failed, retry_status, batch)
        _execute(cfg, argv, executor, shards, path, split, limit, data_root, models, not quiet, partition, time_min,
                 gpus_per_shard, executor_param or [])
        return
    try:
        run_and_tell(cfg, path, model_names=split_names(models), split=split, limit=limit, force=force,
                     data_root=data_root, batch_size=batch_size, progress=not quiet, argv=sys.argv[1:],
                     refresh=refresh, max_cost=max_cost, retry=retry, batch=batch, shard=sliced)
    except EmptyShard as e:  # more shards than samples: this task of a job array succeeds with nothing to do
        typer.echo(f"note: {e}")


def _shard_command(task, config, models, split, limit, force, data_root, batch_size, refresh, max_cost, retry_failed,
                   retry_status, batch) -> list[str]:
    """The options of this `omniseg run` that each shard's command repeats."""
    argv = [*(["--task", task] if task else []), *(["--config", str(Path(config).resolve())] if config else [])]
    for name in split_names(models) or []:
        argv += ["--models", name]
    for flag, value in (("--split", split), ("--limit", limit), ("--data-root", data_root and Path(data_root).resolve()),
                        ("--batch-size", batch_size), ("--max-cost", max_cost)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--force", force), ("--refresh", refresh), ("--retry-failed", retry_failed),
                                   ("--batch", batch)) if on]
    return argv + (["--retry-status", retry_status] if retry_failed else [])


def _execute(cfg, argv, executor, shards, path, split, limit, data_root, models, progress, partition, time_min,
             gpus_per_shard, executor_param) -> None:
    from ..inference.executor import execute
    from ..inference.runner import open_dataset, select_refs

    params = {}
    for item in executor_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OmnisegError(f"--executor-param {item!r}: expected KEY=VALUE, e.g. cluster=local")
        params[key] = value
    n_models = len(split_names(models) or [m for m in cfg.models if m.default])
    pairs = len(select_refs(open_dataset(cfg, data_root), split or cfg.split, limit)) * n_models
    out = execute(argv, executor=executor, shards=shards, store=path, pairs=pairs, progress=progress,
                  partition=partition, time_min=time_min, gpus_per_shard=gpus_per_shard, params=params)
    typer.echo(f"{cfg.task}: {shards} shard(s) through {executor}; {len(out.merged)} merged into {path} "
               f"({out.pairs_added} pairs added)")
    if out.failed:
        raise OmnisegError("shard(s) " + "; ".join(f"{k}/{shards}: {why}" for k, why in sorted(out.failed.items()))
                           + " — rerun the same command: finished shards redo nothing, failed ones resume, and "
                           "the merge adds each pair once")


@friendly
def merge(
    stores: list[Path] = typer.Argument(..., help="the shard stores (`omniseg run --shard K/N --store ...`)"),
    into: Path = typer.Option(..., "--into", help="the store that receives them (created when missing)"),
) -> None:
    """Combine the stores of a sharded run into one: every pair once, its bookings once, models checked to
    carry the same settings in every store; running it again adds nothing (docs/scaling.md). Curate and
    report on the merged store."""
    from ..store.merge import merge as merge_stores

    for p in stores:
        if not p.is_file():
            raise OmnisegError(f"{p}: no store there (expected the --store of an `omniseg run --shard K/N`)")
    m = merge_stores(stores, into)
    typer.echo(f"merged {len(stores)} store(s) into {into}: {m.pairs_added} pairs added, {m.pairs_present} already "
               f"there; {m.runs_added} runs, {m.calls_added} API call records, {m.files_copied} mask files, "
               f"{m.answers_added} archived answers added")
    for note in m.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"next: omniseg curate --store {into}; omniseg report --store {into}")

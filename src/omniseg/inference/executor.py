"""`omniseg run ... --executor local|slurm --shards N`: a sharded run submitted, followed and merged in one command.

Each shard is the ordinary `omniseg run --shard K/N` (omniseg.inference.runner) into its own store under
``<store folder>/shards/<store name>/``, sharing one answer archive there, so the store and archive rules hold as
they are: a shard killed by the scheduler resumes when the same command runs again, every pair ends once and each
answer is paid once; the stores of the shards that finished are then merged into the target store, exactly once
(omniseg.store.merge: a second merge adds nothing). A shard that failed is named with its log and the command that
resumes it (the same one).

Engines: ``local`` runs the shards as processes on this machine (on a multi-GPU box, shard K sees GPU K mod
count); ``slurm`` submits them as a job array through submitit (the library most PyTorch labs already use for
SLURM; ``--executor-param cluster=local`` runs the same path on this machine); ``ray`` runs each shard as a Ray
task (on the cluster ``--executor-param address=...`` names, else a local Ray runtime started for the command).
docs/scaling.md has examples.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OmnisegError
from ..progress import bar as progress_bar
from ..store import results as store_results

EXECUTORS = ("local", "slurm", "ray")
#: the options of `omniseg run` that belong to the executor, not to a shard's command
_OWN = {"--executor": 1, "--shards": 1, "--store": 1, "--partition": 1, "--time-min": 1, "--gpus-per-shard": 1,
        "--executor-param": 1, "--shard": 1, "--quiet": 0, "-q": 0}


@dataclass
class Outcome:
    shards: int
    merged: list[Path] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # shard -> what happened (exit code, log)
    pairs_added: int = 0


def shard_argv(argv: list[str], k: int, n: int, store: Path) -> list[str]:
    """The `omniseg run` arguments of shard ``k`` of ``n``: the command's own, without the executor's options, into
    the shard's store, quiet (the executor draws the progress)."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in _OWN:
            skip = _OWN[name] if "=" not in a else 0
            continue
        out.append(a)
    return [*out, "--shard", f"{k}/{n}", "--store", str(store), "-q"]


def shard_store(folder: Path, k: int, n: int) -> Path:
    return folder / f"shard-{k}-of-{n}.sqlite"


def run_shard(argv: list[str], log: str) -> int:
    """One shard's `omniseg run` in a fresh interpreter, its output in ``log`` (what a submitit job runs)."""
    with open(log, "ab") as f:
        return subprocess.run([sys.executable, "-m", "omniseg", "run", *argv], stdout=f, stderr=subprocess.STDOUT).returncode


def _rows(path: Path) -> int:
    """Pairs a shard has recorded so far (0 before its store exists or while it is being made)."""
    from ..store.database import Store

    if not path.is_file():
        return 0
    try:
        with Store(path, readonly=True) as st:
            return store_results.pairs_recorded(st)
    except (OmnisegError, sqlite3.Error):
        return 0


def execute(argv: list[str], *, executor: str, shards: int, store: Path, pairs: int, progress: bool = True,
            partition: str | None = None, time_min: int | None = None, gpus_per_shard: int = 0,
            params: dict[str, str] | None = None, poll_s: float = 1.0) -> Outcome:
    """Run the N shards of the command ``argv`` through ``executor``, follow them, merge the finished ones into
    ``store``; failed shards are listed in the outcome (their stores are kept for the rerun)."""
    if executor not in EXECUTORS:
        raise OmnisegError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if shards < 1:
        raise OmnisegError("--shards must be at least 1")
    folder = store.parent / "shards" / store.stem
    folder.mkdir(parents=True, exist_ok=True)
    plan = [(k, shard_store(folder, k, shards), folder / f"shard-{k}-of-{shards}.log") for k in range(1, shards + 1)]
    close = None
    if executor == "local":
        waiters = _local(argv, plan, shards, gpus_per_shard)
    elif executor == "slurm":
        waiters = _slurm(argv, plan, shards, folder, partition, time_min, gpus_per_shard, params or {})
    else:
        waiters, close = _ray(argv, plan, shards, gpus_per_shard, params or {})
    out = Outcome(shards)
    bar = progress_bar(total=pairs, desc=f"{shards} shards ({executor})", unit="pair", disable=not progress)
    try:
        pending = dict(waiters)
        while pending:
            for k, check in list(pending.items()):
                rc = check()
                if rc is not None:
                    del pending[k]
                    if rc != 0:
                        out.failed[k] = (f"exit {rc}" if isinstance(rc, int) else rc) + f"; log {plan[k - 1][2]}"
            bar.n = sum(_rows(p) for _, p, _ in plan)
            bar.refresh()
            if pending:
                time.sleep(poll_s)
    finally:
        bar.close()
        if close is not None:
            close()
    from ..store.merge import merge

    done = [p for k, p, _ in plan if k not in out.failed and p.is_file()]  # an empty shard writes no store
    if done:
        out.pairs_added = merge(done, store).pairs_added
        out.merged = done
    return out


def _local(argv, plan, n: int, gpus_per_shard: int) -> dict:
    """Each shard a process; with several GPUs, shard K on GPU (K - 1) mod count."""
    gpus = _gpu_count() if gpus_per_shard else 0
    procs = {}
    for k, path, log in plan:
        env = dict(os.environ)
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str((k - 1) % gpus)
        f = open(log, "ab")
        procs[k] = (subprocess.Popen([sys.executable, "-m", "omniseg", "run", *shard_argv(argv, k, n, path)],
                                     stdout=f, stderr=subprocess.STDOUT, env=env), f)

    def waiter(k):
        def check():
            p, f = procs[k]
            rc = p.poll()
            if rc is not None:
                f.close()
            return rc
        return check

    return {k: waiter(k) for k in procs}


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch CUDA: shards share what there is
        return 0


def _slurm(argv, plan, n: int, folder: Path, partition, time_min, gpus_per_shard: int, params: dict) -> dict:
    """The shards as a submitit job array (SLURM, or submitit's local executor with ``cluster=local``)."""
    try:
        import submitit
    except ImportError:
        raise OmnisegError("--executor slurm needs submitit: pip install 'omniseg[cluster]'") from None
    params = dict(params)
    cluster = params.pop("cluster", None)
    ex = submitit.AutoExecutor(folder=str(folder / "submitit"), cluster=cluster)
    settings = {"timeout_min": time_min or 60, **({"slurm_partition": partition} if partition else {}),
                **({"gpus_per_node": gpus_per_shard} if gpus_per_shard else {})}
    for key, value in params.items():  # the executor's own parameters, passed through (numbers as numbers)
        settings[key] = int(value) if value.isdigit() else value
    try:
        ex.update_parameters(**settings)
    except (ValueError, TypeError) as e:
        raise OmnisegError(f"--executor slurm: submitit refused the parameters {sorted(settings)}: {e}") from None
    jobs = {k: ex.submit(run_shard, shard_argv(argv, k, n, path), str(log)) for k, path, log in plan}

    def waiter(k):
        def check():
            job = jobs[k]
            if not job.done():
                return None
            try:
                return int(job.result())
            except Exception as e:  # the scheduler killed it, or it could not start: a failed shard, said
                return f"job {job.job_id} failed: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else e}"
        return check

    return {k: waiter(k) for k in jobs}


def _ray(argv, plan, n: int, gpus_per_shard: int, params: dict):
    """Each shard a Ray task: on the cluster at ``address`` (``auto``: the one this machine belongs to), else on a
    local Ray runtime started for this command (and stopped after it)."""
    try:
        import ray
    except ImportError:
        raise OmnisegError("--executor ray needs ray: pip install 'omniseg[cluster]'") from None
    params = dict(params)
    address = params.pop("address", None)
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": int(params.pop("num_cpus", os.cpu_count() or 1))}))
        except Exception as e:  # no cluster at that address, a runtime that cannot start
            raise OmnisegError(f"--executor ray: cannot start or reach Ray ({type(e).__name__}: {e})") from None
    options = {"num_gpus": gpus_per_shard, **{k: int(v) if v.isdigit() else v for k, v in params.items()}}
    try:
        task = ray.remote(run_shard).options(**options)
    except (ValueError, TypeError) as e:
        raise OmnisegError(f"--executor ray: Ray refused the task options {sorted(options)}: {e}") from None
    refs = {k: task.remote(shard_argv(argv, k, n, path), str(log)) for k, path, log in plan}

    def waiter(k):
        def check():
            ready, _ = ray.wait([refs[k]], timeout=0)
            if not ready:
                return None
            try:
                return int(ray.get(refs[k]))
            except Exception as e:  # the task died (its worker was killed, the node lost)
                return f"Ray task failed: {type(e).__name__}"
        return check

    return {k: waiter(k) for k in refs}, (ray.shutdown if started else None)

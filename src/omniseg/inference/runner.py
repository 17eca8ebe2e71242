"""`omniseg run`: every (sample, model) pair asked for ends as exactly one row in the store.

Pairs already in the store are skipped, so rerunning a killed or finished command resumes;
``force`` redoes them. A sample that cannot be read gets a 'sample_error' row for every
model, a model that fails gets an 'error' row scored as an empty prediction.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..progress import bar as progress_bar

from .. import datasets, models
from ..scoring import metrics
from ..config import TaskConfig
from ..datasets.base import SampleRef, split_fingerprint
from ..errors import CheckpointMissing, EmptyShard, OmnisegError, SampleError
from ..models.base import Prediction, RunContext, Segmenter
from ..store.archive import FILE_NAME as ARCHIVE_FILE, AnswerArchive
from ..store.database import Store
from .batch import supports as batch_supports
from ..store import results as store_results
from ..store import runs as store_runs
from ..store import workers as store_workers


#: statuses `omniseg run --retry-failed` redoes by default: the API call failed without an answer
#: (after its retries, or with an error such as 403); answers that were read but failed to decode are
#: better re-read with `omniseg redecode`, or asked again with --retry-status S --refresh
RETRY_DEFAULT = ("api_error",)


class RunStopped(OmnisegError):
    """A model stopped the run cleanly (budget or daily quota); what was recorded stays."""


@dataclass
class RunSummary:
    task: str
    split: str
    run_id: int
    samples: int
    pairs: int
    skipped: int = 0
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    train_split_fingerprint: str | None = None  # of the task's training split: does a checkpoint know this data?
    notes: list[str] = field(default_factory=list)  # for the user: batch jobs that ended without every answer

    def as_dict(self) -> dict:
        return {"samples": self.samples, "pairs": self.pairs, "skipped": self.skipped,
                "statuses": dict(self.statuses), "seconds": round(self.seconds, 2),
                "train_split_fingerprint": self.train_split_fingerprint}


@dataclass(frozen=True)
class RunOptions:
    """How one `omniseg run` goes, past which pairs it does: :func:`run`'s keywords, passed on as one value."""

    split: str
    force: bool = False
    batch_size: int | None = None
    progress: bool = True
    argv: list[str] | None = None
    refresh: bool = False
    max_cost: float | None = None
    retry: tuple[str, ...] = ()
    batch: bool = False
    submit: bool = True


def open_dataset(cfg: TaskConfig, data_root: str | Path | None = None) -> datasets.Dataset:
    return datasets.open(cfg.dataset.name, data_root or cfg.dataset.root, cfg.dataset.options, cfg.dataset.max_pixels)


def select_models(cfg: TaskConfig, names: list[str] | None, *, missing: dict | None = None) -> list[Segmenter]:
    """The models a run asks for, built. A missing checkpoint is an error naming the command that trains it and the
    models that can run without it; with ``missing`` (a dict) such models are left out and listed there instead
    (name -> checkpoint path: a dry run estimates the others)."""
    chosen = [cfg.model(n) for n in names] if names else [m for m in cfg.models if m.default]
    built = []
    for m in chosen:
        try:
            built.append(models.build(m))
        except CheckpointMissing as e:  # the model does not know its task: say the whole command here
            if missing is not None:
                missing[m.name] = str(e.path)
                continue
            others = [c.name for c in chosen if c.name != m.name and _runnable(c)]
            raise CheckpointMissing(e.path).with_command(
                f"omniseg train --task {cfg.task}" + ("" if m.name == (cfg.train.model if cfg.train else "unet")
                                                      else f" --model {m.name}"),
                others) from None
    return models.link(built, cfg.models)


def run_context(store_root: Path, **settings) -> RunContext:
    """What a run tells its models: the store's folder, the answer archive beside it (the models open it through the
    store's :class:`AnswerArchive`: the models' layer opens no store file itself) and the run's ``settings``."""
    return RunContext(store_root=store_root, archive_path=Path(store_root) / ARCHIVE_FILE, open_archive=AnswerArchive,
                      **settings)


def _runnable(entry) -> bool:
    """Whether a model entry could run now (built, and ready: an API model with its key or archive), so that the
    command a hint suggests works."""
    try:
        seg = models.build(entry)
    except OmnisegError:
        return False
    try:
        seg.check_ready()
        return True
    except OmnisegError:
        return False
    finally:
        seg.close()


def _check_signatures(store: Store, task: str, segs: list[Segmenter], force: bool) -> None:
    """Refuse to mix results of one model name made with different settings."""
    for m in segs:
        old = store_runs.model_signature(store, task, m.name)
        if old is not None and old != m.signature_hash():
            if not force:
                raise OmnisegError(
                    f"model {m.name!r} of task {task!r} has stored results made with other settings; "
                    "rerun with --force to redo them all, or give the new settings another model name"
                )
            store_results.delete_model(store, task, m.name)
        store_runs.set_model(store, task, m.name, m.kind, m.signature(), m.signature_hash(), m.role)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N), 1 <= K <= N; None for None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)  # ASCII digits only: '²'.isdigit() is true
    if m is None or not 1 <= int(m[1]) <= int(m[2]):
        raise OmnisegError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. --shard 2/4")
    return int(m[1]), int(m[2])


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether a sample whose :func:`shard_key` is ``key`` belongs to shard K of N: a salted sha256 of the key, so
    the N slices are disjoint, cover every sample and stay the same whatever the machine, the order or the other
    samples."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(b"omniseg-shard:" + key.encode(errors="surrogatepass")).hexdigest()[:12], 16) % n == k - 1


#: bytes of an image file that decide its shard, with its size (copies of a file agree on both)
SHARD_BYTES = 64 * 1024


def shard_key(ref: SampleRef) -> str:
    """What decides a sample's shard: its image file's content (size and first 64 KiB), so that copies of one
    image under several ids land in one shard and are asked for once (two shards would each pay for the same
    answer); the id when the sample has no readable image file."""
    path = (ref.files or {}).get("image")
    try:
        with open(path, "rb") as f:
            head = f.read(SHARD_BYTES)
            size = os.fstat(f.fileno()).st_size
    except (OSError, TypeError):
        return ref.id
    return f"{size}:{hashlib.sha256(head).hexdigest()}"


def select_refs(ds, split: str, limit: int | None = None, shard: tuple[int, int] | None = None) -> list[SampleRef]:
    """The samples a run does: the split's, in id order, cut to the first ``limit``, then to ``shard`` K/N."""
    refs = ds.refs(split)
    if limit is not None:
        refs = refs[:limit]
    return refs if shard is None else [r for r in refs if in_shard(shard_key(r), shard)]


def for_dataset(cfg: TaskConfig, ds, segs: list[Segmenter]) -> list[Segmenter]:
    """The models as the dataset's samples need them: on volumes, every 2-D model slice by slice."""
    if not ds.volumetric:
        return segs
    from ..models.slicewise import for_volumes

    return for_volumes(segs, cfg.slicing)


def score_prediction(cfg: TaskConfig, sample, pred: Prediction) -> tuple[Prediction, dict | None]:
    """Scores of a prediction; failures are scored as empty predictions, never dropped. A volume is scored whole, its
    distances in mm with its voxel spacing."""
    if pred.status == "unavailable":
        return pred, None
    if pred.status == "ok" and (pred.mask is None or pred.mask.shape != sample.mask.shape):
        got = None if pred.mask is None else pred.mask.shape
        pred = Prediction.failed(f"model returned a mask of shape {got}, expected {sample.mask.shape}", **pred.meta)
    used = pred.mask if pred.status == "ok" else np.zeros_like(sample.mask)
    if sample.is_volume:
        return pred, metrics.volume_scores(used.astype(bool), sample.mask, sample.spacing, cfg.metrics.nsd_tolerance)
    return pred, metrics.score(used.astype(bool), sample.mask, sample.roi, with_cldice=cfg.metrics.cldice,
                               include=cfg.metrics.include, geometry=cfg.metrics.geometry())


def run(cfg: TaskConfig, store: Store, *, model_names: list[str] | None = None, split: str | None = None,
        limit: int | None = None, force: bool = False, data_root: str | Path | None = None,
        batch_size: int | None = None, progress: bool = True, argv: list[str] | None = None,
        refresh: bool = False, max_cost: float | None = None, retry: tuple[str, ...] = (),
        batch: bool = False, submit: bool = True, shard: tuple[int, int] | None = None) -> RunSummary:
    """Predict and record every (sample, model) pair of the split not yet in the store.

    ``retry`` lists statuses whose pairs are done again (``--retry-failed``); ``force`` redoes all.
    ``batch`` (or a model's ``batch: true``) sends an API model's pairs as batch jobs first
    (:mod:`omniseg.inference.batch`); ``submit=False`` only finishes the jobs already recorded (`batch wait`).
    ``shard`` (K, N) does only the K-th of N disjoint slices of the samples (:func:`in_shard`): N processes, each
    with its own store, then `omniseg merge` (omniseg.store.merge).
    """
    split = split or cfg.split
    ds = open_dataset(cfg, data_root)
    refs: list[SampleRef] = select_refs(ds, split, limit, shard)
    if not refs and shard and select_refs(ds, split, limit, None):
        raise EmptyShard(f"{cfg.task}: no sample of split {split!r} falls in shard {shard[0]}/{shard[1]}: nothing to "
                         "do (no store written)")
    if not refs:
        raise OmnisegError(f"{cfg.task}: no samples in split {split!r} under {ds.root}")
    segs = for_dataset(cfg, ds, select_models(cfg, model_names))
    names = [m.name for m in segs]
    store_workers.claim(store, cfg.task, names, " ".join(argv) if argv else f"run --task {cfg.task}")
    opts = RunOptions(split=split, force=force, batch_size=batch_size, progress=progress, argv=argv, refresh=refresh,
                      max_cost=max_cost, retry=retry, batch=batch, submit=submit)
    try:
        return _run_claimed(cfg, store, ds, refs, segs, opts)
    finally:
        store_workers.release(store, cfg.task, names)


def _run_claimed(cfg: TaskConfig, store: Store, ds, refs: list[SampleRef], segs: list[Segmenter],
                 opts: RunOptions) -> RunSummary:
    """:func:`run` once this process is the one worker of its models."""
    split, progress = opts.split, opts.progress
    _check_signatures(store, cfg.task, segs, opts.force)
    for m in segs:
        m.bind(run_context(store.root, refresh=opts.refresh, max_cost=opts.max_cost, max_pixels=cfg.dataset.max_pixels))
    # volumes one at a time: two in memory (one read ahead), each of them possibly gigabytes
    batch_size = opts.batch_size or (1 if ds.volumetric else max([m.preferred_batch or 8 for m in segs]))

    store_results.add_samples(store, cfg.task, [(r.id, r.split, r.problem, r.meta) for r in refs])
    done = set() if opts.force else store_results.done_pairs(store, cfg.task, redo=opts.retry)
    for m in segs:  # fail now, not after a progress bar, when a model cannot work at all (no API key, no answers)
        if any((r.id, m.name) not in done for r in refs):
            m.check_ready()
    notes = _batch_stage(cfg, store, ds, segs, refs, done, opts)
    recorded = cfg.model_dump(mode="json")
    recorded["dataset"]["root"] = str(ds.root.resolve())  # where the data really was (--data-root included)
    run_id = store_runs.start_run(store, cfg.task, split, [m.name for m in segs], recorded, cfg.fingerprint(),
                             split_fingerprint(refs), opts.argv)
    summary = RunSummary(cfg.task, split, run_id, samples=len(refs), pairs=len(refs) * len(segs),
                         train_split_fingerprint=split_fingerprint(ds.refs("train")), notes=notes)
    chunks = []
    for start in range(0, len(refs), batch_size):
        chunk = refs[start:start + batch_size]
        todo = {m.name: [r for r in chunk if (r.id, m.name) not in done] for m in segs}
        summary.skipped += sum(len(chunk) - len(v) for v in todo.values())
        chunks.append((chunk, todo))
    t0 = time.perf_counter()
    status = "interrupted"
    bar = progress_bar(total=len(refs), desc=f"{cfg.task} [{split}]", unit="img", disable=not progress)
    # One thread reads the next chunk's files and another scores and writes the last chunk's results
    # while the models work on this one (decoding, encoding, numpy and SQLite release the GIL).
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniseg-load")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniseg-write")
    written = None
    current = nxt = None
    noted: list = []  # samples whose files came with a warning

    def prepare(loaded_broken, todo):
        noted.extend(s for s in loaded_broken[0].values() if s.notes)
        return _prepare(segs, *loaded_broken, todo)

    try:
        work = _lead([(c, t) for c, t in chunks if any(t.values())])
        bar.update(len(refs) - sum(len(c) for c, _ in work))
        # Pipeline: chunk k+1 is read and submitted to the models before chunk k is collected.
        nxt = prepare(_load(ds, *work[0]), work[0][1]) if work else None
        pending = pool.submit(_load, ds, *work[1]) if len(work) > 1 else None
        for k, (chunk, todo) in enumerate(work):
            current, nxt = nxt, None  # chunks submitted but not yet handed to the writer
            if pending is not None:
                nxt = prepare(pending.result(), work[k + 1][1])
                pending = pool.submit(_load, ds, *work[k + 2]) if k + 2 < len(work) else None
            results = _run_chunk(segs, todo, current)
            if written is not None:
                written.result()  # at most one chunk waits to be written; a write error surfaces here
            written, current = writer.submit(_write, cfg, store, run_id, results, summary), None
            bar.update(len(chunk))
            bar.set_postfix(dict(summary.statuses), refresh=False)
            stops = [f"{m.name}: {m.stop_reason}" for m in segs if m.stop_reason]
            if stops:
                status = "stopped"
                written.result()
                raise RunStopped("; ".join(stops) + f"\n{summary.statuses.total()} pairs were recorded this run")
        if written is not None:
            written.result()
        status = "finished"
        _warn_about_files(noted)
    except KeyboardInterrupt:
        # answers already received (and paid for) become rows before the process exits
        if written is not None:
            written.result()
        for prepared in (current, nxt):
            if prepared is not None:
                _write(cfg, store, run_id, _received(segs, prepared), summary)
        raise
    finally:
        writer.shutdown(wait=True)  # whatever was predicted is written before the run is closed
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        summary.seconds = time.perf_counter() - t0
        store_runs.finish_run(store, run_id, status, summary.as_dict())
        for m in segs:
            m.close()
    after = store_results.done_pairs(store, cfg.task) if any(m.context.answers_only for m in segs) else set()
    left = sum(1 for m in segs if m.context.answers_only for r in refs if (r.id, m.name) not in after)
    if left:
        summary.notes.append(f"{left} pair(s) have no batch answer yet: rerun `omniseg run --batch` to submit them")
    return summary


def _lead(work: list[tuple[list[SampleRef], dict]]) -> list[tuple[list[SampleRef], dict]]:
    """The first chunk split so that its first quarter goes alone: the models start on it while the rest is
    read (an API model's first requests leave after a few images are read, not a whole chunk's)."""
    if not work or len(work[0][0]) < 4:
        return work
    chunk, todo = work[0]
    n = len(chunk) // 4
    head = {r.id for r in chunk[:n]}
    return [(chunk[:n], {m: [r for r in v if r.id in head] for m, v in todo.items()}),
            (chunk[n:], {m: [r for r in v if r.id not in head] for m, v in todo.items()})] + work[1:]


def _batch_stage(cfg, store, ds, segs, refs, done, opts: RunOptions) -> list[str]:
    """Send each batch-capable model's pairs still to do as batch jobs and collect their answers; the
    ordinary run then writes rows from the archive only (no online call) for those models."""
    import dataclasses

    from . import batch as batch_mod

    notes: list[str] = []
    if ds.volumetric:  # batch jobs hold images: a volume's slices go online, and the user who asked is told so
        from ..models.slicewise import SliceWise

        notes += [f"{m.name}: batch jobs send images, not volumes, so its slices are asked online, at the online price "
                  "(docs/datasets.md, \"Volumes\")" for m in segs if isinstance(m, SliceWise)
                  and batch_mod.supports(m.inner) and (opts.batch or getattr(m.options, "batch", False))]
    try:
        for m in segs:
            if not batch_mod.supports(m):
                continue
            if not (opts.batch or getattr(m.options, "batch", False) or not opts.submit):  # online: what a killed
                notes.extend(batch_mod.tidy(cfg.task, store, m, opts.progress))  # batch run left
                continue
            todo = [r for r in refs if (r.id, m.name) not in done]
            settled = batch_mod.settle(cfg.task, store, ds, m, todo, submit=opts.submit, retry=opts.retry,
                                       max_cost=opts.max_cost, progress=opts.progress)
            # from here its answers come from the archive only, and a request its job failed is a row as such
            m.bind(dataclasses.replace(m.context, answers_only=True, batch_failures=settled.failures))
            notes.extend(settled.notes)
    except BaseException:
        for m in segs:
            m.close()
        raise
    return notes


def _load(ds, chunk: list[SampleRef], todo: dict[str, list[SampleRef]]):
    """Read the samples of a chunk that some model still needs: ({id: Sample}, {id: reason})."""
    needed = {r.id for refs in todo.values() for r in refs}
    loaded, broken = {}, {}
    for r in chunk:
        if r.id in needed:
            try:
                loaded[r.id] = ds.load(r)
            except SampleError as e:
                broken[r.id] = str(e)
    return loaded, broken


def _warn_about_files(samples) -> None:
    """One warning for the run about references that may not be what they seem (see `data verify`)."""
    noted = [s for s in samples if s.notes]
    if noted:
        warnings.warn(f"{len(noted)} reference mask(s) read with a warning, e.g. {noted[0].id}: {noted[0].notes[0]}; "
                      "`omniseg data verify` lists them all", stacklevel=2)


def _prepare(segs, loaded, broken, todo):
    """Submit a loaded chunk to every model that still needs its samples."""
    handles = {}
    for m in segs:
        samples = [loaded[r.id] for r in todo[m.name] if r.id in loaded]
        handles[m.name] = (samples, m.submit(samples) if samples else None, time.perf_counter())
    return broken, handles


def _run_chunk(segs, todo, prepared) -> list[tuple]:
    """Collect every model's predictions for a chunk: [(model, sample id, sample or None, prediction, seconds)]."""
    broken, handles = prepared
    results = []
    for m in segs:
        for r in todo[m.name]:
            if r.id in broken:
                results.append((m.name, r.id, None, Prediction.failed(broken[r.id], status="sample_error"), None))
        samples, handle, t = handles[m.name]
        if not samples:
            continue
        if not m.works_in_submit:  # a local model computes in collect(): time that, not the wait
            t = time.perf_counter()
        preds = m.collect(handle)
        each = (time.perf_counter() - t) / len(samples)
        results.extend((m.name, s.id, s, p, each) for s, p in zip(samples, preds) if p.status != "skipped")
    return results


def _received(segs, prepared) -> list[tuple]:
    """The predictions of a submitted chunk that have already arrived (API answers, on interrupt)."""
    _, handles = prepared
    out = []
    for m in segs:
        samples, handle, _ = handles[m.name]
        if not samples or not m.works_in_submit or not isinstance(handle, list):  # nothing submitted, a local model or a
            # chain (nothing paid of its own: its first stage archived what it received)
            continue
        for s, f in zip(samples, handle):
            if f.done() and not f.cancelled() and f.exception() is None and f.result().status != "skipped":
                out.append((m.name, s.id, s, f.result(), None))
    return out


def _write(cfg, store, run_id, results, summary) -> None:
    """Score and record a chunk's predictions (on the writer thread), one transaction per pair."""
    for model, sample_id, sample, pred, each in results:
        if sample is None:  # the sample could not be read: a row without a score
            store_results.record(store, run_id, cfg.task, sample_id, model, status=pred.status, reason=pred.reason)
        else:
            pred, scores = score_prediction(cfg, sample, pred)
            store_results.record(store, run_id, cfg.task, sample_id, model, status=pred.status, reason=pred.reason,
                         mask=pred.mask if pred.status == "ok" else None, prob=pred.prob, scores=scores,
                         elapsed_s=pred.meta.pop("elapsed_s", each), meta=pred.meta, calls=pred.calls,
                         grid=sample.affine if sample.is_volume else None)
        summary.statuses[pred.status] += 1
    store_workers.heartbeat(store, cfg.task)  # this process still works on its models (seen from other machines: store.workers.claim)


def dry_run(cfg: TaskConfig, store: Store | None, *, store_root: Path, model_names: list[str] | None = None,
            split: str | None = None, limit: int | None = None, force: bool = False,
            data_root: str | Path | None = None, refresh: bool = False, progress: bool = True,
            retry: tuple[str, ...] = (), shard: tuple[int, int] | None = None) -> dict[str, dict]:
    """Per model: pairs to do, API calls they would make, answers already archived, estimated USD.

    Creates and writes nothing: ``store`` is a read-only store or None when there is none yet, and
    the answer archive beside ``store_root`` is only read.
    """
    ds = open_dataset(cfg, data_root)
    refs = select_refs(ds, split or cfg.split, limit, shard)
    missing: dict[str, str] = {}
    segs = for_dataset(cfg, ds, select_models(cfg, model_names, missing=missing))  # an untrained one costs nothing
    done = set() if force or store is None else store_results.done_pairs(store, cfg.task, redo=retry)
    out = {name: {"pairs": sum((r.id, name) not in done for r in refs), "calls": 0, "cached": 0, "cost_usd": 0.0,
                  "missing_checkpoint": path} for name, path in missing.items()}
    for m in segs:
        m.bind(run_context(store_root, refresh=refresh, look_only=True))
        todo = [r for r in refs if (r.id, m.name) not in done]
        est = {"pairs": len(todo), "calls": 0, "cached": 0, "cost_usd": 0.0} | ({"slices": 0} if ds.volumetric else {})
        for start in progress_bar(range(0, len(todo), 64), desc=f"estimate {m.name}", disable=not progress):
            loaded, _ = _load(ds, todo[start:start + 64], {m.name: todo[start:start + 64]})
            e = m.estimate(list(loaded.values()))
            for k in ("calls", "cached", "cost_usd", "slices"):
                if k in est:
                    est[k] += e.get(k, 0)
        if batch_supports(m):  # the same requests as a batch job
            est["batch_cost_usd"] = est["cost_usd"] * m.options.price.batch_factor
        m.close()
        out[m.name] = est
    return out

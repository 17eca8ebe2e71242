"""`omniseg redecode`: today's decoders applied to the kept raw answers, with zero API calls.

For every row of an API model that was decoded by another decoder version than today's (or every
row with ``everything``), the raw answer kept in the archive is decoded again, rescored against
the ground truth and written back in one transaction per pair: the run, creation time and API
calls of the row stay, ``meta`` records the new decoder version and the previous status. Rows are
rewritten one at a time, so a killed redecode resumes where it stopped and no pair is rewritten
twice for one decoder version. Rows without a kept answer (an API error, or answers from before
the archive existed) are counted and left as they are.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import bar as progress_bar

from .. import models, plugins
from ..config import TaskConfig
from ..errors import OmnisegError
from ..models.api import forms
from ..models.api.remote import RemoteSegmenter
from .runner import open_dataset, run_context, score_prediction
from ..store import results, runs as store_runs
from ..store import results as store_results
from ..store.database import Store
from ..store import workers as store_workers


@dataclass
class Redecoded:
    task: str
    model: str
    rows: int = 0  # rows looked at
    rewritten: int = 0
    without_answer: int = 0
    transitions: Counter = field(default_factory=Counter)  # (old status, new status) -> rows


def _recorded(store: Store, task: str, model: str) -> TaskConfig | None:
    """The configuration of the latest run of ``task`` that had ``model``."""
    for raw in store_runs.configs(store, task):
        cfg = json.loads(raw)
        if any(m["name"] == model for m in cfg.get("models", [])):
            plugins.load_recorded(cfg)
            return TaskConfig.model_validate(cfg)
    return None


def api_models(store: Store, task: str) -> list[str]:
    out = []
    for model, kind in store_runs.kinds(store, task).items():
        try:
            if issubclass(models.get(kind), RemoteSegmenter):
                out.append(model)
        except KeyError:
            continue
    return out


def redecode(store: Store, *, task: str | None = None, model: str | None = None,
             data_root: str | Path | None = None, everything: bool = False, progress: bool = True) -> list[Redecoded]:
    tasks = [task] if task else store_results.tasks(store)
    results = []
    for t in tasks:
        names = api_models(store, t)
        if model is not None:
            if model not in names:
                raise OmnisegError(f"task {t!r} in {store.path} has no API model {model!r} "
                                   f"(API models: {', '.join(names) or 'none'})")
            names = [model]
        store_workers.claim(store, t, names, f"redecode --task {t}")  # a run of the model would rewrite the same rows
        try:
            for name in names:
                results.append(_one_model(store, t, name, data_root, everything, progress))
        finally:
            store_workers.release(store, t, names)
    return results


def _one_model(store: Store, task: str, name: str, data_root, everything: bool, progress: bool) -> Redecoded:
    res = Redecoded(task, name)
    cfg = _recorded(store, task, name)
    if cfg is None:
        raise OmnisegError(f"no recorded run of task {task!r} used model {name!r}")
    rows = results.metas(store, task, name)
    todo = []
    for r in rows.itertuples():
        meta = json.loads(r.meta or "{}")
        if everything or meta.get("decoder_version") != forms.DECODER_VERSION:
            todo.append((r.sample_id, r.status, meta))
    res.rows = len(todo)
    if not todo:
        return res
    ds = open_dataset(cfg, data_root)
    if ds.volumetric:  # a volume's row holds many slices' answers: the run itself re-reads them from the archive
        raise OmnisegError(f"{task}: redecode reads one answer per row; a volume's row holds one per slice. Rerun "
                           f"`omniseg run --task {task} --models {name} --force`: every slice's answer comes from the "
                           "archive (no call, nothing paid) and is decoded by this version")
    seg = models.build(cfg.model(name))
    seg.bind(run_context(store.root))
    refs = {r.id: r for r in ds.refs("all")}
    try:
        for sample_id, old, meta in progress_bar(todo, desc=f"redecode {task}/{name}", unit="row", disable=not progress):
            key = meta.get("cache_key")
            raw = (seg.archive.get(key) if key else None) or meta.get("unkept_answer")  # a full disk kept it in the row
            if raw is None or sample_id not in refs:
                res.without_answer += 1
                continue
            sample = ds.load(refs[sample_id])
            pred, scores = score_prediction(cfg, sample, seg.redecode(raw, sample))
            pred.meta.pop("tokens", None)
            kept = {k: meta[k] for k in ("cache_hit", "cache_key", "attempts", "unkept_answer") if k in meta}
            new_meta = {**pred.meta, **kept, "redecoded_from": {"status": old, "decoder_version": meta.get("decoder_version")}}
            store_results.rewrite(store, task, sample_id, name, status=pred.status, reason=pred.reason,
                          mask=pred.mask if pred.status == "ok" else None, scores=scores, meta=new_meta)
            res.rewritten += 1
            res.transitions[(old, pred.status)] += 1
        store_runs.set_model(store, task, name, seg.kind, seg.signature(), seg.signature_hash(), seg.role)
    finally:
        seg.close()
    return res

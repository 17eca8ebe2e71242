"""`omniseg curate`: the N easiest and N hardest cases by the reference model's score.

Easiest = highest score, hardest = lowest; ties are broken by sample id (ascending) so the
lists are deterministic. Failed predictions of the reference count with their empty-mask
score. When fewer than 2N cases exist, each list gets half of them so the two never overlap.
"""

from __future__ import annotations

import warnings

from .errors import OmnisegError
from .store import Store


def default_reference(store: Store, task: str) -> str:
    cfg = store.last_config(task)
    if cfg is None:
        raise OmnisegError(f"no runs of task {task!r} in {store.path}: run `omniseg run --task {task}` first")
    return cfg["curation"]["reference"] or cfg["models"][0]["name"]


def curate(store: Store, task: str, extremes: int, *, reference: str | None = None, metric: str = "dice",
           split: str | None = None) -> dict[str, list[dict]]:
    if metric not in ("dice", "iou"):
        raise OmnisegError(f"--metric must be dice or iou, not {metric!r}")
    if extremes < 1:
        raise OmnisegError("--extremes must be at least 1")
    reference = reference or default_reference(store, task)
    if split is None:
        split = (store.last_config(task) or {}).get("split", "test")
    where = "" if split == "all" else "AND s.split = ?"
    params = (task, reference) + (() if split == "all" else (split,))
    df = store.query(
        f"SELECT c.sample_id, s.split, c.{metric} AS value FROM scores c JOIN samples s"
        f" ON s.task = c.task AND s.sample_id = c.sample_id WHERE c.task = ? AND c.model = ? {where}",
        params,
    )
    if df.empty:
        known = store.query("SELECT DISTINCT model FROM scores WHERE task = ?", (task,))["model"].tolist()
        raise OmnisegError(
            f"no scores of model {reference!r} for task {task!r} on split {split!r} in {store.path}"
            f" (models with scores: {', '.join(known) or 'none'}); run `omniseg run --task {task} --models {reference}`"
        )
    n = min(extremes, len(df) // 2)
    if n < extremes:
        warnings.warn(
            f"{task}: only {len(df)} scored cases on split {split!r}; taking {n} easiest and {n} hardest instead of {extremes}",
            stacklevel=2,
        )
    easiest = df.sort_values(["value", "sample_id"], ascending=[False, True]).head(n)
    hardest = df.sort_values(["value", "sample_id"], ascending=[True, True]).head(n)
    rows = []
    for subset, part in (("easiest", easiest), ("hardest", hardest)):
        for rank, r in enumerate(part.itertuples(index=False), start=1):
            rows.append({"subset": subset, "rank": rank, "sample_id": r.sample_id, "split": r.split,
                         "reference": reference, "metric": metric, "value": float(r.value)})
    store.set_subsets(task, rows)
    return {"easiest": [r for r in rows if r["subset"] == "easiest"], "hardest": [r for r in rows if r["subset"] == "hardest"]}

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


def scored_split(store: Store, task: str, reference: str) -> str:
    """The split the reference model's scores cover: 'train', 'test', or 'all' when both."""
    splits = store.query("SELECT DISTINCT s.split FROM scores c JOIN samples s ON s.task = c.task AND"
                         " s.sample_id = c.sample_id WHERE c.task = ? AND c.model = ?", (task, reference))["split"]
    return splits.iloc[0] if len(splits) == 1 else "all"


def curate(store: Store, task: str, extremes: int | None = None, *, reference: str | None = None,
           metric: str | None = None, split: str | None = None) -> dict[str, list[dict]]:
    """Rank and store the easiest and hardest cases; arguments left None come from the task's
    recorded ``curation`` block (then the defaults: 50, dice), the split from what was scored."""
    recorded = (store.last_config(task) or {}).get("curation") or {}
    extremes = extremes if extremes is not None else recorded.get("extremes", 50)
    metric = metric or recorded.get("metric") or "dice"
    if metric not in ("dice", "iou"):
        raise OmnisegError(f"--metric must be dice or iou, not {metric!r}")
    if extremes < 1:
        raise OmnisegError("--extremes must be at least 1")
    reference = reference or default_reference(store, task)
    split = split or scored_split(store, task, reference)
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
    if n == 0:
        raise OmnisegError(f"{task}: only {len(df)} scored case of {reference!r} on split {split!r}; at least 2 are "
                           "needed for an easiest and a hardest case (the stored subsets are unchanged)")
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
    store.set_subsets(task, rows)  # last, in one transaction: a failure above leaves the old lists
    return {"easiest": [r for r in rows if r["subset"] == "easiest"], "hardest": [r for r in rows if r["subset"] == "hardest"],
            "split": split}

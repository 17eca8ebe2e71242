"""`omniseg curate`: the N easiest and N hardest cases by the reference model's score, and the controls.

Easiest = highest score, hardest = lowest; ties are broken by sample id (ascending) so the
lists are deterministic. Failed predictions of the reference count with their empty-mask
score. When fewer than 2N cases exist, each list gets half of them so the two never overlap.

Because the reference's own score picks the cases, the study's selection-bias controls
(docs/study.md) can be stored alongside: ``control`` (a second specialist, another seed) picks its
own lists ``easiest@<control>`` / ``hardest@<control>``, and ``strata`` stores the lowest and highest
quartiles of lesion size and contrast read from the images (``lesion-small`` ... ``contrast-high``).
Everything is replaced as a whole, in one transaction, after every list was computed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from ..errors import OmnisegError
from ..store import results
from ..store.database import Store
from ..store import runs as store_runs
from ..store import subsets as store_subsets


def default_reference(store: Store, task: str) -> str:
    cfg = store_runs.last_config(store, task)
    if cfg is None:
        raise OmnisegError(f"no runs of task {task!r} in {store.path}: run `omniseg run --task {task}` first")
    if cfg["curation"]["reference"]:
        return cfg["curation"]["reference"]
    roles, privileged = store_runs.roles(store, task), store_runs.privileged(store, task)  # else the first fair specialist, else the first model
    names = [m["name"] for m in cfg["models"]]
    return next((n for n in names if roles.get(n) == "specialist" and n not in privileged), names[0])


def scored_split(store: Store, task: str, reference: str) -> str:
    """The split the reference model's scores cover: 'train', 'test', or 'all' when both."""
    splits = results.scored_splits(store, task, reference)
    return splits[0] if len(splits) == 1 else "all"


def _scores(store: Store, task: str, model: str, metric: str, split: str) -> pd.DataFrame:
    df = results.metric_of(store, task, model, metric, split)
    if df.empty:
        known = results.scored_models(store, task)
        raise OmnisegError(
            f"no scores of model {model!r} for task {task!r} on split {split!r} in {store.path}"
            f" (models with scores: {', '.join(known) or 'none'}); run `omniseg run --task {task} --models {model}`"
        )
    return df


def _ranked(df: pd.DataFrame, n: int, suffix: str, reference: str, metric: str) -> list[dict]:
    easiest = df.sort_values(["value", "sample_id"], ascending=[False, True]).head(n)
    # the hardest from the others: with ties across the middle (Dice 0 and 1 repeat) a case is never in both
    rest = df[~df["sample_id"].isin(easiest["sample_id"])]
    hardest = rest.sort_values(["value", "sample_id"], ascending=[True, True]).head(n)
    rows = []
    for subset, part in (("easiest", easiest), ("hardest", hardest)):
        for rank, r in enumerate(part.itertuples(index=False), start=1):
            rows.append({"subset": subset + suffix, "rank": rank, "sample_id": r.sample_id, "split": r.split,
                         "reference": reference, "metric": metric, "value": float(r.value)})
    return rows


def curate(store: Store, task: str, extremes: int | None = None, *, reference: str | None = None,
           metric: str | None = None, split: str | None = None, control: str | None = None,
           strata: bool | None = None, data_root: str | Path | None = None, progress: bool = True,
           replace: bool = False) -> dict[str, list[dict]]:
    """Rank and store the easiest and hardest cases (and the controls asked for); arguments left None
    come from the task's recorded ``curation`` block (then the defaults), the split from what was scored.

    Stored lists of another size, or picked by another model, are replaced only with ``replace``: a report, a
    review or a paper may already rest on them."""
    recorded = (store_runs.last_config(store, task) or {}).get("curation") or {}
    extremes = extremes if extremes is not None else recorded.get("extremes", 50)
    metric = metric or recorded.get("metric") or "dice"
    control = control or recorded.get("control")
    strata = strata if strata is not None else recorded.get("strata", False)
    if metric not in ("dice", "iou"):
        raise OmnisegError(f"--metric must be dice or iou, not {metric!r}")
    if extremes < 1:
        raise OmnisegError("--extremes must be at least 1")
    reference = reference or default_reference(store, task)
    if control == reference:
        raise OmnisegError(f"--control {control!r} is the reference itself; name a second specialist (another seed)")
    split = split or scored_split(store, task, reference)
    df = _scores(store, task, reference, metric, split)
    n = min(extremes, len(df) // 2)
    if n == 0:
        raise OmnisegError(f"{task}: only {len(df)} scored case of {reference!r} on split {split!r}; at least 2 are "
                           "needed for an easiest and a hardest case (the stored subsets are unchanged)")
    if n < extremes:
        warnings.warn(
            f"{task}: only {len(df)} scored cases on split {split!r}; taking {n} easiest and {n} hardest instead of {extremes}",
            stacklevel=2,
        )
    stored = store_subsets.curated(store, task)
    if stored is not None and stored != (n, reference) and not replace:
        raise OmnisegError(f"{task}: the stored lists hold {stored[0]} easiest and {stored[0]} hardest cases picked by "
                           f"{stored[1]!r}; this would replace them with {n} and {n} by {reference!r}"
                           + (f" (only {len(df)} cases are scored)" if n < extremes else "")
                           + ": pass --replace to do so (reports and reviews made on the old lists no longer match)")
    rows = _ranked(df, n, "", reference, metric)
    if control:
        rows += _ranked(_scores(store, task, control, metric, split), n, f"@{control}", control, metric)
    if strata:
        rows += _image_strata(store, task, df, data_root, progress)
    store_subsets.set_subsets(store, task, rows)  # last, in one transaction: a failure above leaves the old lists
    lists: dict = {"split": split}
    for r in rows:
        lists.setdefault(r["subset"], []).append(r)
    return lists


def _image_strata(store: Store, task: str, scored: pd.DataFrame, data_root, progress: bool) -> list[dict]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Lesion size and contrast of every scored sample, from the dataset the run recorded."""
    from .. import datasets
    from .difficulty import features, strata
    from ..progress import bar

    cfg = store_runs.last_config(store, task)
    try:
        ds = datasets.open(cfg["dataset"]["name"], data_root or cfg["dataset"]["root"], cfg["dataset"].get("options"),
                           cfg["dataset"].get("max_pixels"))
        refs = {r.id: r for r in ds.refs("all")}
    except OmnisegError as e:
        raise OmnisegError(f"--strata reads the images: {str(e).splitlines()[0]} (pass --data-root)") from None
    values = {}
    splits = dict(zip(scored["sample_id"], scored["split"]))
    for sid in bar(sorted(splits), desc=f"{task}: lesion size and contrast", unit="img", disable=not progress):
        if sid in refs:
            try:
                values[sid] = features(ds.load(refs[sid]))
            except OmnisegError:
                continue
    store_subsets.set_difficulty(store, task, values)
    rows = []
    for subset, members in strata(values).items():
        feature = "lesion_share" if subset.startswith("lesion") else "contrast"
        rows += [{"subset": subset, "rank": rank, "sample_id": sid, "split": splits[sid], "reference": "image",
                  "metric": feature, "value": float(v)} for rank, (sid, v) in enumerate(members, start=1)]
    return rows

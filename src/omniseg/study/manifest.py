"""The manifest written with every report: what produced each number, read from the store.

Versions of omniseg and its packages and the git commit of the omniseg source describe the
environment that wrote the report; everything else (configs and their hashes, prompts, model
signatures with checkpoint hashes, reported model versions, split fingerprints, API calls and
cost) comes from the store, so the same store gives the same manifest.
"""

from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path

from ..store import bookings, results, runs as store_runs, subsets as store_subsets
from ..store.database import Store

PACKAGES = ("numpy", "pandas", "scipy", "scikit-image", "pillow", "torch", "segmentation-models-pytorch",
            "google-genai", "pydantic", "matplotlib")


@functools.lru_cache(maxsize=None)
def _version(name: str) -> str | None:
    """An installed package's version (read once per process: the metadata files do not change under it)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the omniseg source in use, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _json(text, default):
    """A JSON column's value; ``default`` for NULL (a killed run has no summary; pandas reads NULL as NaN)."""
    return json.loads(text) if isinstance(text, str) and text else default


def _evaluation(signature: dict, task: str, runs) -> dict:
    """For a trained model: the data it learnt from against this task's, and a note when they differ
    (a checkpoint evaluated on another dataset, e.g. trained on Kvasir-SEG and run on CVC-ClinicDB)."""
    trained = signature.get("trained_on")
    if not trained or runs.empty:
        return {}
    finished = [r for r in runs.itertuples() if _json(r.summary, {}).get("train_split_fingerprint")]
    last = finished[-1] if finished else runs.iloc[-1]
    dataset = json.loads(last.config)["dataset"]["name"]
    fingerprint = _json(last.summary, {}).get("train_split_fingerprint")
    same = trained.get("dataset") == dataset and trained.get("split_fingerprint") == fingerprint
    out = {"evaluation": {"trained_on": trained, "evaluated_on": {"task": task, "dataset": dataset,
                                                                 "train_split_fingerprint": fingerprint},
                          "same_training_data": same}}
    if not same:
        out["evaluation"]["note"] = (f"evaluated on data it was not trained on: the checkpoint learnt from "
                                     f"{trained.get('dataset')} (task {trained.get('task')}, training split "
                                     f"{trained.get('split_fingerprint')}), this task's training split is "
                                     f"{dataset} {fingerprint}")
    return out


def _number(v, kind):
    """A SQL sum as a JSON number; None when nothing was summed (e.g. a model whose calls all failed)."""
    return None if v is None or v != v else kind(v)


def build(store: Store, tasks: list[str], split: str) -> dict:
    from .. import __version__

    doc: dict = {"omniseg_version": __version__, "git_commit": git_commit(),
                 "packages": {p: _version(p) for p in PACKAGES}, "split": split, "tasks": {}}
    for task in tasks:
        runs = store_runs.of_task(store, task)
        models = store_runs.signature_table(store, task)
        versions = bookings.versions_of_task(store, task)
        api = bookings.tallies(store, task)
        subsets = store_subsets.summary(store, task)
        # the models the report compares: a subset chosen by one of them is selected on its own score
        compared = results.predicted_models(store, task)
        states = store_runs.run_states(store, task)
        doc["tasks"][task] = {
            "runs": [{"run_id": int(r.run_id), "split": r.split, "models": json.loads(r.models), "status": r.status,
                      "ended": states.get(int(r.run_id), r.status),
                      "config_hash": r.config_hash, "split_fingerprint": r.split_fingerprint,
                      "omniseg_version": r.omniseg_version, "argv": _json(r.argv, []),
                      "summary": _json(r.summary, {})} for r in runs.itertuples()],
            "configs": {r.config_hash: json.loads(r.config) for r in runs.itertuples()},
            "models": {r.model: {"kind": r.kind, "signature_hash": r.signature_hash, "signature": json.loads(r.signature),
                                 **_evaluation(json.loads(r.signature), task, runs)}
                       for r in models.itertuples()},
            "reported_model_versions": {m: dict(zip(g["model_version"], g["n"].astype(int)))
                                        for m, g in versions.groupby("model")},
            "api": {r.model: {k: _number(v, float if k == "cost_usd" else int)
                              for k, v in r._asdict().items() if k not in ("Index", "model")}
                    for r in api.itertuples()},
            "subsets": [{**{k: (int(v) if k == "n" else v) for k, v in r._asdict().items() if k != "Index"},
                         "chosen_by": r.reference, "chosen_by_is_compared": r.reference in compared}
                        for r in subsets.itertuples()],
        }
    return doc


def write(store: Store, tasks: list[str], split: str, path: Path) -> Path:
    path.write_text(json.dumps(build(store, tasks, split), indent=2, sort_keys=True, default=str) + "\n")
    return path

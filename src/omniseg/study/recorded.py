"""The samples a task's runs recorded: its dataset reopened from the store's record, for the pictures reports,
report.html and the review page draw (a report goes on without them when the data moved or is gone)."""

from __future__ import annotations

from ..store.database import Store
from ..store import runs as store_runs


def recorded_samples(store: Store, task: str, root=None):
    """A function sample id -> Sample (None when it cannot be read) over the dataset the task's last
    run recorded (at ``root`` when given: the data moved); a string says why there is none (reports go on
    without it)."""
    from .. import datasets

    dataset = (store_runs.last_config(store, task) or {}).get("dataset") or {}
    if not dataset.get("name"):
        return "no run with a dataset recorded"
    try:
        ds = datasets.open(dataset["name"], root or dataset.get("root"), dataset.get("options"), dataset.get("max_pixels"))
        refs = {r.id: r for r in ds.refs("all")}
    except Exception as e:
        return f"dataset not readable ({str(e).splitlines()[0]})"

    def load(sample_id: str):
        try:
            return ds.load(refs[sample_id]) if sample_id in refs else None
        except Exception:
            return None

    return load

"""Reads of what ran (tables ``runs`` and ``models``): the recorded configurations, runs and model signatures that
redecode, the caveats and the manifest go by."""

from __future__ import annotations

import pandas as pd

from .database import Store


def configs(store: Store, task: str) -> list[str]:
    """The task's recorded run configurations (JSON text), the newest first."""
    return store.query("SELECT config FROM runs WHERE task = ? ORDER BY run_id DESC", (task,))["config"].tolist()


def of_task(store: Store, task: str) -> pd.DataFrame:
    """The task's runs in order: what each was asked, with its configuration and summary."""
    return store.query("SELECT run_id, split, models, status, config, config_hash, split_fingerprint,"
                       " omniseg_version, argv, summary FROM runs WHERE task = ? ORDER BY run_id", (task,))


def kinds(store: Store, task: str) -> dict[str, str]:
    """Model name -> its kind, for the task's models."""
    rows = store.query("SELECT model, kind FROM models WHERE task = ? ORDER BY model", (task,))
    return dict(zip(rows["model"], rows["kind"]))


def signatures(store: Store, task: str) -> pd.DataFrame:
    """The task's models with their kind, signature (JSON text) and its hash."""
    return store.query("SELECT model, kind, signature, signature_hash FROM models WHERE task = ? ORDER BY model", (task,))

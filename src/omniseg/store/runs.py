"""Reads of what ran (tables ``runs`` and ``models``): the recorded configurations, runs and model signatures that
redecode, the caveats and the manifest go by."""

from __future__ import annotations

import json
import time

import pandas as pd

from ..redaction import redact
from .database import Store
from .schema import field
from .workers import process_alive, this_process


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


def signature_table(store: Store, task: str) -> pd.DataFrame:
    """The task's models with their kind, signature (JSON text) and its hash."""
    return store.query("SELECT model, kind, signature, signature_hash FROM models WHERE task = ? ORDER BY model", (task,))


def start_run(store: Store, task: str, split: str, models: list[str], config: dict, config_hash: str,
              split_fingerprint: str | None, argv: list[str] | None = None) -> int:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    from .. import __version__

    cur = store.db.execute(
        "INSERT INTO runs (task, split, models, started_at, status, config, config_hash, split_fingerprint,"
        " omniseg_version, argv, host, pid, pid_started) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (task, split, json.dumps(models), time.time(), "running", json.dumps(config, sort_keys=True),
         config_hash, split_fingerprint, __version__, redact(json.dumps(argv or [])), *this_process()),
    )
    return int(cur.lastrowid)


def run_states(store: Store, task: str) -> dict[int, str]:
    """run id -> how the run ended: finished, stopped, interrupted, failed; or, for a run still marked
    running, 'running' (its process is alive) or 'did not end' (its process is gone: killed)."""
    out = {}
    who = "host, pid, pid_started" if "host" in store.columns("runs") else "NULL AS host, NULL AS pid, NULL AS pid_started"
    for r in store.db.execute(f"SELECT run_id, status, {who} FROM runs WHERE task=?", (task,)):
        state = r["status"]
        if state == "running":
            alive = process_alive(r["host"], r["pid"], r["pid_started"])
            state = "running" if alive else "running elsewhere?" if alive is None else "did not end"
        out[int(r["run_id"])] = state
    return out


def finish_run(store: Store, run_id: int, status: str, summary: dict) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    store.db.execute(
        "UPDATE runs SET finished_at=?, status=?, summary=? WHERE run_id=?",
        (time.time(), status, json.dumps(summary, sort_keys=True), run_id),
    )


def last_config(store: Store, task: str) -> dict | None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    row = store.db.execute("SELECT config FROM runs WHERE task=? ORDER BY run_id DESC LIMIT 1", (task,)).fetchone()
    return json.loads(row["config"]) if row else None


def model_signature(store: Store, task: str, model: str) -> str | None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    row = store.db.execute("SELECT signature_hash FROM models WHERE task=? AND model=?", (task, model)).fetchone()
    return row[0] if row else None


def set_model(store: Store, task: str, model: str, kind: str, signature: dict, signature_hash: str,
              role: str | None = None) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    asked = (signature.get("options") or {}).get("model")
    store.db.execute(
        "INSERT INTO models (task, model, kind, signature, signature_hash, role, privileged, api_model)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(task, model) DO UPDATE SET kind=excluded.kind,"
        " signature=excluded.signature, signature_hash=excluded.signature_hash, role=excluded.role,"
        " privileged=excluded.privileged, api_model=excluded.api_model",
        (task, model, kind, json.dumps(signature, sort_keys=True), signature_hash, role,
         int(bool(signature.get("privileged"))), asked if isinstance(asked, str) else None),
    )


def roles(store: Store, task: str) -> dict[str, str]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Model -> role for a task (a store written before roles were recorded: the kind's role)."""
    from ..models import role_of

    rows = store.db.execute("SELECT model, kind, role FROM models WHERE task = ?", (task,)).fetchall()
    return {r[0]: role_of(r[1], r[2]) for r in rows}


def privileged(store: Store, task: str) -> set[str]:
    """The task's models told something a fair contender is not (SAM 3's box-oracle): never in claims, routing,
    curation or review, whatever their role."""
    rows = store.db.execute(f"SELECT model FROM models WHERE task = ? AND {field(store, 'privileged', '')}",
                            (task,)).fetchall()
    return {r[0] for r in rows}


def signatures(store: Store, task: str) -> dict[str, dict]:
    """Model -> its recorded signature (kind, options, and what each kind adds: a chain's source, SAM 3's mode)."""
    rows = store.db.execute("SELECT model, kind, signature FROM models WHERE task = ?", (task,)).fetchall()
    return {r[0]: {"kind": r[1], **(json.loads(r[2]) if r[2] else {})} for r in rows}

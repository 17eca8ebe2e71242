"""Reads of the API bookings (table ``api_calls``) that the commands and the manifest show."""

from __future__ import annotations

import math
import time

import pandas as pd

from ..redaction import redact
from .database import Store
from .schema import field


def of_run(store: Store, run_id: int) -> pd.DataFrame:
    """Per model of one run: answers, recovered answers, errors, batch answers, archive hits and cost."""
    return store.query("SELECT model, SUM(outcome = 'answered') AS answered, SUM(outcome = 'recovered') AS recovered,"
                       " SUM(outcome = 'error') AS errors, SUM(outcome = 'batch') AS batch,"
                       " SUM(outcome = 'cache_hit') AS cached, SUM(cost_usd) AS cost FROM api_calls"
                       " WHERE run_id = ? GROUP BY model", (run_id,))


def versions_of_run(store: Store, run_id: int) -> pd.DataFrame:
    """Per model and answering model version of one run: the count and the model the configuration asked for."""
    return store.query(f"SELECT c.model, c.model_version, COUNT(*) n, {field(store, 'api_model', 'm')}"
                       " AS asked FROM api_calls c JOIN models m ON m.task = c.task AND m.model = c.model"
                       " WHERE c.run_id = ? AND c.model_version IS NOT NULL GROUP BY 1, 2", (run_id,))


def versions_of_task(store: Store, task: str) -> pd.DataFrame:
    """Per model and answering model version of a task: how many answers."""
    return store.query("SELECT model, model_version, COUNT(*) n FROM api_calls WHERE task = ? AND"
                       " model_version IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2", (task,))


def tallies(store: Store, task: str) -> pd.DataFrame:
    """Per model of a task: calls by outcome, tokens of the calls that were paid, cost, and calls of unknown cost."""
    return store.query(
        "SELECT model, COUNT(*) AS calls, SUM(outcome = 'answered') AS answered, SUM(outcome = 'recovered') AS recovered,"
        " SUM(outcome = 'error') AS errors,"
        " SUM(outcome = 'cache_hit') AS cache_hits, SUM(CASE WHEN outcome != 'cache_hit' THEN prompt_tokens END)"
        " AS prompt_tokens, SUM(CASE WHEN outcome != 'cache_hit' THEN output_tokens END) AS output_tokens,"
        " SUM(CASE WHEN outcome != 'cache_hit' THEN thoughts_tokens END) AS thoughts_tokens,"
        " ROUND(SUM(cost_usd), 6) AS cost_usd, "
        + ("SUM(cost_known = 0)" if "cost_known" in store.columns("api_calls") else "0")
        + " AS calls_of_unknown_cost FROM api_calls WHERE task = ? GROUP BY model ORDER BY model", (task,))


def add_calls(store: Store, run_id: int, task: str, sample_id: str, model: str, calls: list[dict]) -> None:
    """API calls behind one prediction (successes, retried errors and cache hits alike).

    A cache hit carries the ``booking`` of the call that once paid for its answer. If no row
    ever booked that answer (the run that received it was interrupted before recording it), it
    is booked now as 'recovered', once: the cost of every answer received reaches the store. An answer
    of a batch job (:mod:`omniseg.inference.batch`) is booked as 'batch' by the first row that uses it.
    """
    now = time.time()
    calls = list(calls)
    for c in [c for c in calls if c.get("booking") and c.get("cache_key")]:
        booked = store.db.execute("SELECT 1 FROM api_calls WHERE cache_key = ? AND outcome IN ('answered', 'recovered',"
                                 " 'batch') LIMIT 1", (c["cache_key"],)).fetchone()
        if booked:
            continue
        if c["booking"].get("outcome") == "batch":  # a batch job's answer: booked as such by its first row
            calls[calls.index(c)] = {**c["booking"], "cache_key": c["cache_key"]}
        else:
            calls.insert(0, {**c["booking"], "outcome": "recovered", "cache_key": c["cache_key"]})
    store.db.executemany(
        "INSERT INTO api_calls (task, sample_id, model, run_id, attempt, outcome, http_status, error, latency_s,"
        " prompt_tokens, output_tokens, thoughts_tokens, cost_usd, model_version, cache_key, created_at, cost_known)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(task, sample_id, model, run_id, c.get("attempt", 0), c.get("outcome", ""), count(c.get("http_status")),
          redact(str(c["error"])) if c.get("error") is not None else None, finite(c.get("latency_s")),
          *(count(c.get(k)) for k in ("prompt_tokens", "output_tokens", "thoughts_tokens")),
          finite(c.get("cost_usd")) or 0.0, c.get("model_version") if isinstance(c.get("model_version"), str) else None,
          c.get("cache_key"), now, int(_cost_known(c)))
         for c in calls],
    )


def count(v) -> int | None:
    """A token count or HTTP status as stored: a non-negative integer, else NULL."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 else None


def _cost_known(call: dict) -> bool:
    """False for a call whose cost could not be read from its usage (or is not a non-negative number)."""
    if call.get("outcome") not in ("answered", "recovered", "batch"):
        return True
    return bool(call.get("cost_known", True)) and finite(call.get("cost_usd")) is not None

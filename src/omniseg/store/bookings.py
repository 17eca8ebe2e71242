"""Reads of the API bookings (table ``api_calls``) that the commands and the manifest show."""

from __future__ import annotations

import pandas as pd

from .database import Store


def of_run(store: Store, run_id: int) -> pd.DataFrame:
    """Per model of one run: answers, recovered answers, errors, batch answers, archive hits and cost."""
    return store.query("SELECT model, SUM(outcome = 'answered') AS answered, SUM(outcome = 'recovered') AS recovered,"
                       " SUM(outcome = 'error') AS errors, SUM(outcome = 'batch') AS batch,"
                       " SUM(outcome = 'cache_hit') AS cached, SUM(cost_usd) AS cost FROM api_calls"
                       " WHERE run_id = ? GROUP BY model", (run_id,))


def versions_of_run(store: Store, run_id: int) -> pd.DataFrame:
    """Per model and answering model version of one run: the count and the model the configuration asked for."""
    return store.query("SELECT c.model, c.model_version, COUNT(*) n, json_extract(m.signature, '$.options.model')"
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

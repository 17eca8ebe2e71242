"""`omniseg report`: per-image and summary CSVs and a Markdown table, from the store alone.

Subsets: ``all`` (every sample of the chosen split), ``easiest`` and ``hardest`` (the
lists `omniseg curate` stored). A pair whose model failed counts with its empty-mask score
and in ``failure_rate``; 'sample_error' and 'unavailable' pairs have no score and are
left out of n. docs/outputs.md documents each column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import SCORE_COLUMNS
from .store import Store

PER_IMAGE_COLUMNS = ["task", "split", "sample_id", "model", "status", "reason", "easiest_rank", "hardest_rank",
                     *SCORE_COLUMNS, "elapsed_s", "mask_path"]
SUMMARY_COLUMNS = ["task", "subset", "model", "n", "failures", "failure_rate",
                   "dice_mean", "dice_std", "dice_median", "iou_mean", "iou_std", "iou_median",
                   "precision_mean", "recall_mean", "hd95_median", "not_scored"]
SUBSETS = ("all", "easiest", "hardest")


def per_image(store: Store, task: str | None = None, split: str = "test") -> pd.DataFrame:
    cond, params = [], []
    if task:
        cond.append("p.task = ?")
        params.append(task)
    if split != "all":
        cond.append("s.split = ?")
        params.append(split)
    where = ("WHERE " + " AND ".join(cond)) if cond else ""
    df = store.query(
        f"""SELECT p.task, s.split, p.sample_id, p.model, p.status, p.reason,
                   e.rank AS easiest_rank, h.rank AS hardest_rank,
                   {", ".join("c." + c for c in SCORE_COLUMNS)}, p.elapsed_s, p.mask_path
            FROM predictions p
            JOIN samples s ON s.task = p.task AND s.sample_id = p.sample_id
            LEFT JOIN scores c ON c.task = p.task AND c.sample_id = p.sample_id AND c.model = p.model
            LEFT JOIN subsets e ON e.task = p.task AND e.sample_id = p.sample_id AND e.subset = 'easiest'
            LEFT JOIN subsets h ON h.task = p.task AND h.sample_id = p.sample_id AND h.subset = 'hardest'
            {where}
            ORDER BY p.task, p.model, p.sample_id""",
        tuple(params),
    )
    for col in ("easiest_rank", "hardest_rank"):
        df[col] = df[col].astype("Int64")
    return df[PER_IMAGE_COLUMNS]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """task x subset x model statistics of a per-image frame (std is the sample std, ddof=1)."""
    rows = []
    for (task, model), g in df.groupby(["task", "model"], sort=True):
        for subset in SUBSETS:
            part = g if subset == "all" else g[g[f"{subset}_rank"].notna()]
            if subset != "all" and part.empty:
                continue
            scored = part[part["dice"].notna()]
            fails = int((scored["status"] != "ok").sum())
            rows.append({
                "task": task, "subset": subset, "model": model, "n": len(scored), "failures": fails,
                "failure_rate": fails / len(scored) if len(scored) else np.nan,
                "dice_mean": scored["dice"].mean(), "dice_std": scored["dice"].std(), "dice_median": scored["dice"].median(),
                "iou_mean": scored["iou"].mean(), "iou_std": scored["iou"].std(), "iou_median": scored["iou"].median(),
                "precision_mean": scored["precision"].mean(), "recall_mean": scored["recall"].mean(),
                "hd95_median": scored["hd95"].median(), "not_scored": len(part) - len(scored),
            })
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = {s: i for i, s in enumerate(SUBSETS)}
    return out.sort_values(["task", "subset", "model"], key=lambda c: c.map(order) if c.name == "subset" else c,
                           kind="stable").reset_index(drop=True)


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if not pd.isna(std) else f"{mean:.3f}"


def markdown(summary: pd.DataFrame, split: str) -> str:
    lines = ["# omniseg report", "",
             f"Split: `{split}`. Mean ± standard deviation per image; failed predictions count as empty masks.", ""]
    for task, g in summary.groupby("task", sort=True):
        lines += [f"## {task}", "", "| subset | model | n | Dice | IoU | failure rate |", "|---|---|---:|---|---|---:|"]
        for r in g.itertuples(index=False):
            fr = "–" if pd.isna(r.failure_rate) else f"{r.failure_rate:.1%}"
            lines.append(f"| {r.subset} | {r.model} | {r.n} | {_fmt(r.dice_mean, r.dice_std)} | "
                         f"{_fmt(r.iou_mean, r.iou_std)} | {fr} |")
        lines.append("")
    return "\n".join(lines)


def write(store: Store, out: str | Path, *, task: str | None = None, split: str = "test") -> dict[str, Path]:
    """Write per_image.csv, summary.csv and report.md into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = per_image(store, task, split)
    summary = summarize(df)
    paths = {"per_image": out / "per_image.csv", "summary": out / "summary.csv", "markdown": out / "report.md"}
    df.to_csv(paths["per_image"], index=False)
    summary.to_csv(paths["summary"], index=False, float_format="%.6f")
    paths["markdown"].write_text(markdown(summary, split))
    return paths

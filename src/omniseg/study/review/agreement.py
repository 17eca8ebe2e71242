"""How far reviewers agree: Cohen's kappa for two, Fleiss' kappa for more, with a bootstrap interval.

Computed on the items every reviewer of the task answered (a kappa over different item sets compares
nothing). The interval resamples items (percentile bootstrap, seed 0); a resample in which every answer is the
same category has no kappa and is left out of it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_RESAMPLES = 2_000
AGREEMENT_COLUMNS = ["task", "reviewers", "method", "n_items", "kappa", "ci_low", "ci_high", "disagreements"]


def cohen(a, b) -> float:
    """Cohen's kappa of two raters' labels of the same items (NaN when chance agreement is 1)."""
    a, b = np.asarray(a), np.asarray(b)
    cats = np.unique(np.concatenate([a, b]))
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return np.nan if pe >= 1 else (po - pe) / (1 - pe)


def fleiss(table) -> float:
    """Fleiss' kappa from an items x categories table of counts (every row sums to the number of raters)."""
    t = np.asarray(table, dtype=float)
    n_items, raters = t.shape[0], t[0].sum()
    p = t.sum(axis=0) / (n_items * raters)
    per_item = (np.square(t).sum(axis=1) - raters) / (raters * (raters - 1))
    pe = float(np.square(p).sum())
    return np.nan if pe >= 1 else (float(per_item.mean()) - pe) / (1 - pe)


def _kappa(labels: np.ndarray, cats: np.ndarray) -> float:
    """labels: items x raters."""
    if labels.shape[1] == 2:
        return cohen(labels[:, 0], labels[:, 1])
    return fleiss(np.stack([(labels == c).sum(axis=1) for c in cats], axis=1))


def agreement(reviews: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict | None:
    """Kappa among the reviewers of one task's ``reviews`` (columns item_id, reviewer, verdict): a row of
    :data:`AGREEMENT_COLUMNS` (``disagreements``: the items not all answered alike), or None with fewer than two
    reviewers or no item they all answered."""
    wide = reviews.pivot(index="item_id", columns="reviewer", values="verdict").dropna()
    if wide.shape[1] < 2 or wide.empty:
        return None
    labels = wide.to_numpy(dtype=object).astype(str)
    cats = np.unique(labels)
    k = _kappa(labels, cats)
    rng = np.random.default_rng(seed)
    boot = np.array([_kappa(labels[rng.integers(0, len(labels), len(labels))], cats) for _ in range(n_resamples)])
    boot = boot[~np.isnan(boot)]
    lo, hi = (np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan))
    differ = [i for i, row in zip(wide.index, labels) if len(set(row)) > 1]
    return {"reviewers": ",".join(wide.columns), "method": "cohen" if wide.shape[1] == 2 else "fleiss",
            "n_items": len(wide), "kappa": k, "ci_low": float(lo), "ci_high": float(hi), "disagreements": differ}

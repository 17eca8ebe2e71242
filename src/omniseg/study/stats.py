"""Statistics for reports: percentile bootstrap intervals, paired model comparisons and the multiple-comparison
adjustment every table with more than one p-value states (Holm)."""

from __future__ import annotations

import numpy as np

N_RESAMPLES = 10_000
LEVEL = 0.95
#: the fewest images an interval, a p-value or a claim's verdict is given for: below it they mean nothing
#: (a bootstrap interval of 2 images is their range), and reports say so instead of printing them
MIN_N = 10


def bootstrap_ci(x, n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (vectorized; same method as scipy's 'percentile')."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return (np.nan, np.nan)
    if len(x) == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, 2_000_000 // len(x))  # bound the index matrix's memory
    for i in range(0, n_resamples, step):
        k = min(step, n_resamples - i)
        means[i:i + k] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


def paired(a, b, tie: float = 1e-9, seed: int = 0) -> dict:
    """Compare two models' scores on the same images (a - b): mean difference with its bootstrap
    interval, Wilcoxon signed-rank p-value (scipy; zero differences dropped, 'wilcox'), and
    win/tie/loss counts (|difference| <= ``tie`` is a tie)."""
    from scipy.stats import wilcoxon

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    out = {"n": int(len(d)), "mean_diff": float(d.mean()) if len(d) else np.nan,
           "wins": int((d > tie).sum()), "ties": int((np.abs(d) <= tie).sum()), "losses": int((d < -tie).sum())}
    out["diff_ci_low"], out["diff_ci_high"] = bootstrap_ci(d, seed=seed)
    if len(d) == 0:
        out["p_wilcoxon"] = np.nan
    elif np.all(np.abs(d) <= tie):
        out["p_wilcoxon"] = 1.0  # identical scores: no evidence of a difference
    else:
        out["p_wilcoxon"] = float(wilcoxon(d).pvalue)
    return out


def holm(p) -> np.ndarray:
    """Holm's step-down adjustment of a table's p-values (NaN stays NaN and is not counted): the k-th smallest of m
    is multiplied by m - k + 1, made non-decreasing in that order, capped at 1. Controls the family-wise error at
    any dependence between the tests, as statsmodels' ``multipletests(method='holm')``."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx) == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out

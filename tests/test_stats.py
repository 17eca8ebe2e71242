"""The bootstrap interval and the Wilcoxon test agree with scipy on fixed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from omniseg import stats
from omniseg.report import compare

X = np.array([0.91, 0.85, 0.12, 0.77, 0.95, 0.66, 0.0, 0.88, 0.73, 0.59, 0.93, 0.81, 0.35, 0.9, 0.7])
Y = np.array([0.80, 0.86, 0.45, 0.70, 0.90, 0.40, 0.3, 0.85, 0.60, 0.62, 0.88, 0.74, 0.50, 0.8, 0.69])


def test_bootstrap_matches_scipy_percentile():
    ours = stats.bootstrap_ci(X, n_resamples=20000, seed=1)
    ref = sps.bootstrap((X,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(2)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01) and ours[1] == pytest.approx(ref.high, abs=0.01)
    assert ours[0] < X.mean() < ours[1]


def test_bootstrap_degenerate_inputs():
    assert np.isnan(stats.bootstrap_ci([])[0])
    assert stats.bootstrap_ci([0.4]) == (0.4, 0.4)
    assert stats.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert stats.bootstrap_ci([0.2, np.nan, 0.4], n_resamples=2000)[1] <= 0.4


def test_paired_matches_scipy_wilcoxon_and_counts():
    r = stats.paired(X, Y)
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(X - Y).pvalue, rel=1e-12)
    assert r["mean_diff"] == pytest.approx((X - Y).mean())
    assert (r["wins"], r["ties"], r["losses"]) == (int((X > Y).sum()), 0, int((X < Y).sum()))
    assert r["diff_ci_low"] < r["mean_diff"] < r["diff_ci_high"]
    same = stats.paired(X, X)
    assert same["p_wilcoxon"] == 1.0 and same["ties"] == len(X)


def test_compare_pairs_only_images_both_models_scored():
    rows = []
    for i, (x, y) in enumerate(zip(X, Y)):
        rows.append({"task": "t", "sample_id": f"s{i:02d}", "model": "a", "dice": x})
        if i != 3:  # model b has no score on s03 (e.g. a sample_error row)
            rows.append({"task": "t", "sample_id": f"s{i:02d}", "model": "b", "dice": y})
    df = pd.DataFrame(rows).assign(easiest_rank=pd.NA, hardest_rank=pd.NA)
    r = compare(df).iloc[0]
    keep = np.arange(len(X)) != 3
    assert r["n"] == 14 and r["model_a"] == "a" and r["model_b"] == "b"
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(X[keep] - Y[keep]).pvalue, rel=1e-12)
    assert r["mean_diff"] == pytest.approx((X[keep] - Y[keep]).mean())

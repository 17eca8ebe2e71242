"""The bootstrap interval and the Wilcoxon test agree with scipy on fixed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from omniseg.study import stats
from omniseg.study.report import compare

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


def test_paired_at_the_tie_boundary_missing_values_and_no_data():
    # differences of exactly the tie width (binary-exact 0.25) are ties, not wins or losses
    r = stats.paired([0.75, 0.25, 0.5], [0.5, 0.5, 0.5], tie=0.25)
    assert (r["wins"], r["ties"], r["losses"]) == (0, 3, 0)
    # every difference a tie, at the boundary too: no evidence of a difference, whatever Wilcoxon would say
    assert stats.paired([0.75] * 12, [0.5] * 12, tie=0.25)["p_wilcoxon"] == 1.0
    # None is a missing score (as pandas gives it): the pair is left out, never an error
    r = stats.paired([0.5, None, 0.75], [0.25, 0.5, None])
    assert r["n"] == 1 and r["mean_diff"] == 0.25
    # no pair at all: NaN without numpy's "mean of empty slice" warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = stats.paired([], [])
    assert r["n"] == 0 and np.isnan(r["mean_diff"]) and np.isnan(r["p_wilcoxon"])


def test_paired_interval_is_the_bootstrap_of_the_differences_with_the_seed_given():
    for seed in (0, 5):
        r = stats.paired(X, Y, seed=seed)
        assert (r["diff_ci_low"], r["diff_ci_high"]) == stats.bootstrap_ci(X - Y, seed=seed)
    assert stats.paired(X, Y, seed=5)["diff_ci_low"] != stats.paired(X, Y, seed=0)["diff_ci_low"]


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


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402

scores = st.floats(0, 1, allow_nan=False)


@given(st.lists(scores, min_size=1, max_size=30))
def test_the_bootstrap_interval_is_ordered_and_inside_the_data(xs):
    lo, hi = stats.bootstrap_ci(xs, n_resamples=200)
    assert min(xs) - 1e-12 <= lo <= hi <= max(xs) + 1e-12
    if len(set(xs)) == 1:
        assert lo == hi == xs[0]


@given(st.lists(st.tuples(scores, scores, st.booleans()), min_size=1, max_size=30))
def test_paired_comparisons_are_antisymmetric_and_count_every_image(rows):
    """a - b against b - a: the mean and interval flip, wins and losses swap, the p-value stays; images a model
    did not score (NaN) leave the pair out."""
    a = np.array([x if keep else np.nan for x, _, keep in rows])
    b = np.array([y for _, y, _ in rows])
    ab, ba = stats.paired(a, b), stats.paired(b, a)
    n = int(np.sum(~np.isnan(a)))
    assert ab["n"] == ba["n"] == n == ab["wins"] + ab["ties"] + ab["losses"]
    assert (ab["wins"], ab["losses"]) == (ba["losses"], ba["wins"])
    if n:
        assert ab["mean_diff"] == pytest.approx(np.nanmean(a - b), abs=1e-12)
        assert ab["mean_diff"] == pytest.approx(-ba["mean_diff"], abs=1e-12)
        assert ab["p_wilcoxon"] == pytest.approx(ba["p_wilcoxon"], abs=1e-12)
        assert 0 <= ab["p_wilcoxon"] <= 1
    else:
        assert np.isnan(ab["mean_diff"]) and np.isnan(ab["p_wilcoxon"])


def test_the_bootstrap_interval_is_the_percentile_method_drawn_in_chunks_from_seed_0():
    """The interval every report prints, drawn exactly: seed 0 unless told, 10,000 resamples in chunks that keep
    the index matrix under 2,000,000 entries (300 values: chunks of 6,666), the 2.5th and 97.5th percentiles."""
    x = np.random.default_rng(11).uniform(0, 1, 300)
    rng = np.random.default_rng(0)
    means = np.concatenate([x[rng.integers(0, 300, size=(k, 300))].mean(axis=1) for k in (6666, 3334)])
    alpha = (1 - 0.95) / 2  # 0.025 as floats make it, exactly
    want = tuple(np.percentile(means, [100 * alpha, 100 * (1 - alpha)]))
    assert stats.bootstrap_ci(x) == want == stats.bootstrap_ci(x, seed=0)
    assert stats.bootstrap_ci(x, seed=1) != want
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)  # two values: resampled, not taken as constant
    assert stats.bootstrap_ci([0.1] * 7) == (0.1, 0.1)  # constant: the value itself, not a mean of copies
    a, b = np.random.default_rng(12).uniform(0, 1, (2, 40))
    r = stats.paired(a, b)
    assert (r["diff_ci_low"], r["diff_ci_high"]) == stats.bootstrap_ci(a - b, seed=0)


@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan")), st.sampled_from([0.0, 0.01, 0.05, 1.0])),
                min_size=0, max_size=40))
def test_holm_is_statsmodels_multipletests_and_leaves_untested_rows_untested(p):
    from unittest import mock

    from statsmodels.stats import multitest

    def multipletests(*a, **kw):
        # the oracle runs gc.collect() on every Holm call: 0.3 s in a test process that has imported torch and the
        # SDKs, 23 of this test's 30 s in the suite; its housekeeping, not its answer
        with mock.patch("gc.collect", lambda *_: 0):
            return multitest.multipletests(*a, **kw)

    p = np.array(p, dtype=float)
    got = stats.holm(p)
    assert np.array_equal(np.isnan(got), np.isnan(p))
    tested = ~np.isnan(p)
    if tested.any():
        want = multipletests(p[tested], method="holm")[1]
        assert np.allclose(got[tested], want, rtol=0, atol=1e-12)
        assert (got[tested] >= p[tested] - 1e-15).all() and (got[tested] <= 1).all()


def test_the_comparisons_keep_the_raw_p_and_add_holms_per_task():
    rng = np.random.default_rng(3)
    rows = []
    for task in ("a", "b"):
        for m, shift in (("x", 0.0), ("y", 0.05), ("z", 0.3)):
            for i in range(30):
                rows.append({"task": task, "sample_id": f"s{i}", "model": m, "dice": float(np.clip(0.5 + shift
                             + rng.normal(0, 0.1), 0, 1)), "easiest_rank": pd.NA, "hardest_rank": pd.NA})
    df = pd.DataFrame(rows)
    out = compare(df)
    for _, part in out.groupby("task"):
        assert np.allclose(part["p_holm"], stats.holm(part["p_wilcoxon"].to_numpy()))
        assert (part["p_holm"] >= part["p_wilcoxon"]).all() and (part["p_holm"] > part["p_wilcoxon"]).any()

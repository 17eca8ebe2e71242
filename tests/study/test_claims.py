"""omniseg.study.claims: the study's claims on synthetic per-image scores whose truth is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from omniseg.study import claims

N, EXTREMES, SIMS, RESAMPLES = 200, 50, 200, 2000


def picks(score: np.ndarray, k: int = EXTREMES) -> tuple[list[int], list[int]]:
    """Easiest and hardest k by a model's score (ties by index), as curate does."""
    order = np.lexsort((np.arange(len(score)), -score))
    return list(order[:k]), list(np.lexsort((np.arange(len(score)), score))[:k])


def simulate(rng, omni_better_on_small: bool):
    size = rng.uniform(0.01, 0.4, N)
    if omni_better_on_small:  # specialists grow with lesion size; the omnimodel is flatter: better on small
        mu_s, mu_o = 0.45 + 1.2 * size, 0.60 + 0.6 * size
    else:  # one truth, three equally noisy copies
        mu_s = mu_o = rng.uniform(0.3, 0.95, N)
    noisy = lambda mu: np.clip(mu + rng.normal(0, 0.1, N), 0, 1)  # noqa: E731
    return size, noisy(mu_s), noisy(mu_s), noisy(mu_o)


def change(s, o, easy, hard):
    return claims.gap_change((s - o)[easy], (s - o)[hard], n_resamples=RESAMPLES)


def test_identical_models_show_a_raw_gap_change_that_the_null_correction_removes():
    """(a) Three copies of one model: selecting by S makes S look better on its easiest and worse on its
    hardest cases (regression to the mean); S2 - O on the same cases has no such effect."""
    rng = np.random.default_rng(0)
    raw_excludes = corrected_covers = 0
    raw_est = []
    for _ in range(SIMS):
        _, s, s2, o = simulate(rng, omni_better_on_small=False)
        easy, hard = picks(s)
        raw = change(s, o, easy, hard)
        corrected = change(s2, o, easy, hard)  # raw - selection alone, exactly
        selection = change(s, s2, easy, hard)
        assert corrected["estimate"] == pytest.approx(raw["estimate"] - selection["estimate"], abs=1e-12)
        raw_est.append(raw["estimate"])
        raw_excludes += raw["ci_low"] > 0
        corrected_covers += corrected["ci_low"] <= 0 <= corrected["ci_high"]
    print(f"\nraw gap change {np.mean(raw_est):.3f} (interval excludes 0 in {raw_excludes}/{SIMS}); "
          f"null-corrected interval covers 0 in {corrected_covers}/{SIMS}")
    assert raw_excludes >= 0.95 * SIMS  # clearly non-zero although no model is better anywhere
    assert corrected_covers >= 0.90 * SIMS  # nominal 95%; 200 simulations leave about 1.5% of noise


def test_an_omnimodel_truly_better_on_small_lesions_is_detected_after_the_correction():
    """(b) At n=200 the null-corrected gap change excludes 0 in at least 95% of 200 simulated datasets,
    and so does the image-based (lesion size) stratum comparison."""
    rng = np.random.default_rng(1)
    detected = by_size = 0
    for _ in range(SIMS):
        size, s, s2, o = simulate(rng, omni_better_on_small=True)
        easy, hard = picks(s)
        detected += change(s2, o, easy, hard)["ci_low"] > 0
        q = np.argsort(size)
        by_size += change(s, o, list(q[-N // 4:]), list(q[:N // 4]))["ci_low"] > 0
    print(f"\nnull-corrected effect detected in {detected}/{SIMS}; by lesion size in {by_size}/{SIMS}")
    assert detected >= 0.95 * SIMS and by_size >= 0.95 * SIMS


def test_verdicts_follow_the_interval():
    """(c)"""
    assert claims.verdict(0.01, 0.2, 50) == "supported"
    assert claims.verdict(-0.2, -0.01, 50) == "not supported (the opposite holds)"
    assert claims.verdict(-0.1, 0.1, 50) == "inconclusive at n=50"
    assert claims.verdict(0.0, 0.1, 17) == "inconclusive at n=17"  # an interval touching 0 does not exclude it
    assert claims.verdict(0.2, 0.3, 9) == "not tested (n = 9, fewer than 10 images)"  # too few for any verdict
    assert claims.verdict(0.2, 0.3, 10) == "supported"
    assert claims.verdict(-0.2, -0.01, 50, direction=-1) == "supported"
    assert claims.verdict(np.nan, np.nan, 0) == "not tested (no data)"


def test_intervals_and_p_values_agree_with_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.1, 0.2, 40), rng.normal(0.0, 0.2, 35)
    ours = claims.gap_change(a, b, n_resamples=9999, seed=3)
    ref = stats.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                                 n_resamples=9999, alternative="two-sided", random_state=4)
    assert ours["estimate"] == pytest.approx(a.mean() - b.mean())
    assert ours["p_value"] == pytest.approx(ref.pvalue, abs=0.02)
    d = rng.normal(0.05, 0.2, 60)
    g = claims.gap(d, n_resamples=9999, seed=5)
    boot = stats.bootstrap((d,), np.mean, n_resamples=9999, method="percentile", random_state=6).confidence_interval
    assert (g["ci_low"], g["ci_high"]) == pytest.approx((boot.low, boot.high), abs=0.01)
    flip = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=9999, random_state=7)
    assert g["p_value"] == pytest.approx(flip.pvalue, abs=0.02)


def test_findings_table_lays_the_analyses_side_by_side():
    rng = np.random.default_rng(3)
    size, s, s2, o = simulate(rng, omni_better_on_small=True)
    ids = [f"i{k:03d}" for k in range(N)]
    wide = pd.DataFrame({"s1": s, "s2": s2, "omni": o}, index=ids)
    e, h = picks(s)
    e2, h2 = picks(s2)
    q = np.argsort(size)
    subsets = {"easiest": [ids[i] for i in e], "hardest": [ids[i] for i in h],
               "easiest@s2": [ids[i] for i in e2], "hardest@s2": [ids[i] for i in h2],
               "lesion-large": [ids[i] for i in q[-50:]], "lesion-small": [ids[i] for i in q[:50]]}
    t = claims.findings(wide, subsets, task="polyp", specialist="s1", omnimodel="omni", second="s2", n_resamples=500)
    assert list(t.columns) == claims.CLAIM_COLUMNS
    analyses = t[t["claim"] == "hardest"].set_index("analysis")
    assert list(analyses.index) == ["raw", "independent reference", "selection alone", "null-corrected", "lesion size"]
    assert analyses.loc["selection alone", "omnimodel"] == "s2" and analyses.loc["independent reference", "selected_by"] == "s2"
    assert analyses.loc["null-corrected", "estimate"] == pytest.approx(
        analyses.loc["raw", "estimate"] - analyses.loc["selection alone", "estimate"], abs=1e-12)
    assert claims.headline(t, "hardest")["analysis"] == "null-corrected"
    assert claims.headline(t, "hardest")["verdict"] == "supported"


# -- every claim x every analysis against simulated known truth -------------------------------------------
#: per-image mean Dice of the specialist and the omnimodel as a function of difficulty d in [0, 1] (0: easy)
SCENARIOS = {
    "crossover": (lambda d: 0.95 - 0.6 * d, lambda d: 0.75 - 0.2 * d),  # specialist better on easy, omni on hard
    "equal": (lambda d: 0.9 - 0.6 * d, lambda d: 0.9 - 0.6 * d),  # no difference anywhere
    "reversed": (lambda d: 0.75 - 0.2 * d, lambda d: 0.95 - 0.6 * d),  # the omnimodel better on easy, worse on hard
    "constant": (lambda d: 0.9 - 0.5 * d, lambda d: 0.75 - 0.5 * d),  # the specialist better by 0.15 everywhere
}
#: the claims' true signs in each scenario, from the noise-free means (+1 holds, -1 the opposite, 0 neither)
TRUE_SIGN = {"crossover": {"easiest": 1, "hardest": 1, "all": 0}, "equal": {"easiest": 0, "hardest": 0, "all": 0},
             "reversed": {"easiest": -1, "hardest": -1, "all": 0}, "constant": {"easiest": 1, "hardest": 0, "all": 1}}
#: analyses that estimate the claim itself (selection does not bias them); raw does only for "all"
UNBIASED = ("independent reference", "null-corrected", "lesion size", "contrast")


def _study(name: str, n: int, rng) -> tuple[pd.DataFrame, dict]:
    """One simulated study: S, a second specialist S2 (same means, its own noise) and O; the curated lists
    (a quarter each way) by S and by S2; lesion-size and contrast strata read from the image (they follow d)."""
    fs, fo = SCENARIOS[name]
    d = rng.uniform(0, 1, n)
    dice = lambda mu: np.clip(mu + rng.normal(0, 0.08, n), 0, 1)  # noqa: E731
    s, s2, o = dice(fs(d)), dice(fs(d)), dice(fo(d))
    size, contrast = -d + rng.normal(0, 0.1, n), -d + rng.normal(0, 0.1, n)
    ids = np.array([f"i{k:05d}" for k in range(n)])
    k = n // 4
    top = lambda x: list(ids[np.lexsort((np.arange(n), -x))[:k]])  # noqa: E731  (ties by id, as curate does)
    bottom = lambda x: list(ids[np.lexsort((np.arange(n), x))[:k]])  # noqa: E731
    subsets = {"easiest": top(s), "hardest": bottom(s), "easiest@s2": top(s2), "hardest@s2": bottom(s2),
               "lesion-large": top(size), "lesion-small": bottom(size),
               "contrast-high": top(contrast), "contrast-low": bottom(contrast)}
    return pd.DataFrame({"s": s, "s2": s2, "o": o}, index=ids), subsets


def _table(name: str, n: int, rng, resamples: int) -> pd.DataFrame:
    wide, subsets = _study(name, n, rng)
    return claims.findings(wide, subsets, task="t", specialist="s", omnimodel="o", second="s2",
                           claims=tuple(claims.CLAIMS), n_resamples=resamples).set_index(["claim", "analysis"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_claim_and_analysis_against_simulated_known_truth(scenario):
    """Each row of claims.csv, in 40 simulated studies of 200 images: the estimate's sign is its estimand's, the
    interval covers the estimand (its value in a 40,000-image study) in most studies, and the verdict's words
    follow the claim's true sign for every analysis free of selection bias. The raw rows of the curated claims
    carry exactly the bias selection alone explains, and where a claim is false they still say "supported":
    why the report never rests a verdict on them alone."""
    truth = _table(scenario, 40_000, np.random.default_rng(99), resamples=20)["estimate"]
    rng = np.random.default_rng(sum(map(ord, scenario)))
    studies = [_table(scenario, 200, rng, resamples=500) for _ in range(40)]
    expected_rows = {(c, a) for c in ("easiest", "hardest") for a in ("raw", "selection alone") + UNBIASED} | {("all", "raw")}
    assert set(truth.index) == expected_rows
    for key, target in truth.items():
        claim, analysis = key
        est = np.array([t.loc[key, "estimate"] for t in studies])
        covered = np.mean([t.loc[key, "ci_low"] <= target <= t.loc[key, "ci_high"] for t in studies])
        words = [t.loc[key, "verdict"] for t in studies]
        where = f"{scenario}: {claim} / {analysis}: estimand {target:+.3f}, mean estimate {est.mean():+.3f}"
        assert covered >= 0.75, f"{where}: covered in {covered:.0%}"
        if abs(target) >= 0.02:
            assert np.sign(est.mean()) == np.sign(target), where
        else:
            assert abs(est.mean()) < 0.02, where
        sign = TRUE_SIGN[scenario][claim]
        if analysis == "selection alone":  # a control: always a positive bias, never a verdict
            assert target > 0.02 and set(words) == {"control: what selection alone explains"}, where
            continue
        if analysis in UNBIASED or claim == "all":
            assert (np.sign(target) if abs(target) >= 0.02 else 0) == sign, where  # it estimates the claim itself
            said = {1: "supported", -1: "not supported (the opposite holds)", 0: "inconclusive at n="}[sign]
            share = np.mean([w.startswith(said) for w in words])
            assert share >= (0.8 if sign == 0 else 0.9), f"{where}: '{said}' in {share:.0%} ({set(words)})"
        else:  # raw, on cases the specialist picked itself: the claim's value plus the selection's bias
            bias = truth[(claim, "selection alone")]
            assert target == pytest.approx(truth[(claim, "null-corrected")] + bias, abs=0.01), where
            assert all(w.endswith(claims.BIASED) for w in words), where  # and the row says so
            if sign == 0:
                share = np.mean([w == "supported" + claims.BIASED for w in words])
                assert share >= 0.75, f"{where}: raw words {set(words)}"
            raw_only = studies[0].reset_index()
            raw_only = raw_only[raw_only["analysis"] == "raw"]
            assert claims.headline(raw_only, claim)["verdict"] == claims.UNTESTABLE  # never a verdict on raw alone


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402

_diffs = st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=40)


@given(_diffs, _diffs)
def test_gaps_flip_with_the_sign_and_their_verdicts_follow(d_a, d_b):
    """The gap and the gap change are means (and differences of means); negating the data negates estimate and
    interval and keeps the p-value; the verdict in one direction is the verdict of the negated data in the other."""
    g, neg = claims.gap(d_a, n_resamples=300), claims.gap([-x for x in d_a], n_resamples=300)
    assert g["estimate"] == pytest.approx(np.mean(d_a), abs=1e-12)
    assert (neg["estimate"], neg["ci_low"], neg["ci_high"]) == pytest.approx((-g["estimate"], -g["ci_high"],
                                                                              -g["ci_low"]), abs=1e-9)
    assert neg["p_value"] == pytest.approx(g["p_value"]) and 0 < g["p_value"] <= 1
    assert g["ci_low"] <= g["ci_high"]
    c = claims.gap_change(d_a, d_b, n_resamples=300)
    assert c["estimate"] == pytest.approx(np.mean(d_a) - np.mean(d_b), abs=1e-12)
    assert (c["n_a"], c["n_b"]) == (len(d_a), len(d_b)) and c["ci_low"] <= c["ci_high"]
    n = len(d_a)
    assert claims.verdict(g["ci_low"], g["ci_high"], n) == claims.verdict(neg["ci_low"], neg["ci_high"], n, direction=-1)


# -- exact cases of the statistics and the table's bookkeeping (each against a mutant that survived) --------------
def test_exact_p_values_and_intervals_where_the_null_distribution_is_known():
    """No difference at all: every resample is as extreme as the estimate, so p is exactly 1; a constant
    difference has an interval of zero width at that constant; one subset empty gives no numbers."""
    for n in (200, 1000):
        g = claims.gap([0.0] * 12, n_resamples=n)
        assert g["p_value"] == 1.0 and g["estimate"] == 0.0 and (g["ci_low"], g["ci_high"]) == (0.0, 0.0)
        c = claims.gap_change([0.3] * 11, [0.3] * 13, n_resamples=n)
        assert c["p_value"] == 1.0 and (c["n_a"], c["n_b"]) == (11, 13)
    g = claims.gap([0.25] * 15 + [np.nan], n_resamples=500)
    assert (g["n_a"], g["n_b"], g["estimate"]) == (15, 0, 0.25)
    assert (g["ci_low"], g["ci_high"]) == pytest.approx((0.25, 0.25), abs=1e-12)
    # 15 equal differences: only the two all-same-sign flips reach |mean| 0.25, p about 2 / 2**15 (+1 / (n + 1))
    assert g["p_value"] == pytest.approx(1 / 501, abs=0.004) and g["p_value"] >= 1 / 501
    c = claims.gap_change([0.5] * 12, [0.1] * 12, n_resamples=500)
    assert c["estimate"] == pytest.approx(0.4) and (c["ci_low"], c["ci_high"]) == pytest.approx((0.4, 0.4))
    empty = claims.gap_change([0.1] * 5, [np.nan, np.nan], n_resamples=100)
    assert (empty["n_a"], empty["n_b"]) == (5, 0) and np.isnan(empty["estimate"]) and np.isnan(empty["p_value"])
    none = claims.gap([np.nan], n_resamples=100)
    assert none["n_a"] == 0 and np.isnan(none["ci_low"])
    assert claims._interval(np.arange(1001.0)) == pytest.approx((25.0, 975.0))
    assert claims._interval(np.arange(1001.0), 0.5) == pytest.approx((250.0, 750.0))
    means = claims._means(np.array([2.0, 4.0]), np.random.default_rng(0), 5000)
    assert len(means) == 5000 and set(np.unique(means)) == {2.0, 3.0, 4.0}


def test_a_gap_change_is_judged_on_its_smaller_subset_and_ids_without_scores_are_left_out():
    ids = [f"i{k:02d}" for k in range(30)]
    wide = pd.DataFrame({"s": np.linspace(0.5, 0.9, 30), "o": np.linspace(0.4, 0.5, 30)}, index=ids)
    subsets = {"easiest": ids[:12] + ["gone1"], "hardest": ids[-9:] + ["gone2"]}
    t = claims.findings(wide, subsets, task="t", specialist="s", omnimodel="o", n_resamples=200)
    assert t["claim"].tolist() == ["easiest", "hardest"]  # the default claims: no whole-set row
    easy, hard = t.iloc[0], t.iloc[1]
    assert (easy["n_a"], easy["n_b"]) == (12, 0) and easy["verdict"].endswith(claims.BIASED)
    assert (hard["n_a"], hard["n_b"]) == (12, 9)
    assert hard["verdict"] == "not tested (n = 9, fewer than 10 images)" + claims.BIASED
    assert easy["estimate"] == pytest.approx((wide["s"] - wide["o"]).iloc[:12].mean())
    whole = claims.findings(wide, subsets, task="t", specialist="s", omnimodel="o", claims=("all",), n_resamples=200)
    assert whole["verdict"].tolist() == ["supported"] and whole["selected_by"].tolist() == ["-"]
    assert whole["n_a"].tolist() == [30]
    missing_second = claims.findings(wide, subsets, task="t", specialist="s", omnimodel="o", second="absent",
                                     n_resamples=200)
    assert missing_second["analysis"].tolist() == ["raw", "raw"]  # a second specialist with no scores adds nothing

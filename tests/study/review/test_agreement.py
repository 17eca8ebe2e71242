"""Agreement between reviewers: Cohen's and Fleiss' kappa against hand-computed values and against scikit-learn's
and statsmodels' implementations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omniseg.study.review import agreement


def _frame(answers: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame([{"item_id": f"i{k:02d}", "reviewer": r, "verdict": v}
                         for r, vs in answers.items() for k, v in enumerate(vs)])


def test_two_reviewers_agreeing_on_three_quarters_give_kappa_one_half():
    # A: 20 findings then 20 errors; B flips five of each, so they agree on 30 of 40 (po = 0.75) and each says
    # "finding" half the time (pe = 0.5 * 0.5 + 0.5 * 0.5): kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5 by hand
    a = ["finding"] * 20 + ["model_wrong"] * 20
    b = ["model_wrong"] * 5 + ["finding"] * 15 + ["finding"] * 5 + ["model_wrong"] * 15
    got = agreement.agreement(_frame({"ann": a, "bob": b}))
    assert got["method"] == "cohen" and got["n_items"] == 40
    assert got["kappa"] == pytest.approx(0.5, abs=1e-9)
    from sklearn.metrics import cohen_kappa_score

    assert got["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)
    assert got["ci_low"] < 0.5 < got["ci_high"]
    assert got["disagreements"] == [f"i{k:02d}" for k in list(range(5)) + list(range(20, 25))]


def test_unequal_margins_and_three_categories_match_scikit_learn():
    rng = np.random.default_rng(3)
    cats = np.array(["finding", "model_wrong", "cannot_tell"])
    a = cats[rng.integers(0, 3, 60)]
    b = np.where(rng.random(60) < 0.7, a, cats[rng.integers(0, 3, 60)])
    from sklearn.metrics import cohen_kappa_score

    assert agreement.cohen(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


def test_three_reviewers_use_fleiss_kappa_as_statsmodels_computes_it():
    rng = np.random.default_rng(5)
    cats = np.array(["finding", "model_wrong", "annotation_wrong", "cannot_tell"])
    truth = cats[rng.integers(0, 4, 50)]
    answers = {r: list(np.where(rng.random(50) < 0.8, truth, cats[rng.integers(0, 4, 50)])) for r in ("a", "b", "c")}
    got = agreement.agreement(_frame(answers))
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    table, _ = aggregate_raters(np.array([answers[r] for r in ("a", "b", "c")]).T)
    assert got["method"] == "fleiss" and got["kappa"] == pytest.approx(fleiss_kappa(table), abs=1e-9)
    # by hand on a tiny table: 2 items, 3 raters; item 1 all "x", item 2 split 2/1
    # P1 = 1, P2 = (4 + 1 - 3) / 6 = 1/3, Pbar = 2/3; p = (5/6, 1/6), Pe = 26/36; kappa = (2/3 - 26/36) / (10/36) = -0.2
    assert agreement.fleiss([[3, 0], [2, 1]]) == pytest.approx(-0.2, abs=1e-12)


def test_kappa_only_on_items_every_reviewer_answered():
    df = _frame({"ann": ["finding", "model_wrong", "finding"], "bob": ["finding", "model_wrong"]})
    got = agreement.agreement(df)
    assert got["n_items"] == 2 and got["kappa"] == pytest.approx(1.0)
    assert agreement.agreement(_frame({"ann": ["finding"]})) is None


def test_no_kappa_when_every_answer_is_one_category():
    """Chance agreement of 1 leaves kappa undefined: NaN, not a division by zero (Cohen's and Fleiss' alike)."""
    import numpy as np

    from omniseg.study.review.agreement import cohen, fleiss

    assert np.isnan(fleiss([[3, 0], [3, 0], [3, 0]])) and np.isnan(fleiss([[4], [4]]))
    assert np.isnan(fleiss([[3, 0]]))  # three reviewers, one item they all answered: undefined, not an error
    three = _frame({"ann": ["finding"], "bob": ["finding"], "cy": ["finding"]})
    assert agreement.agreement(three)["method"] == "fleiss" and np.isnan(agreement.agreement(three)["kappa"])
    assert np.isnan(cohen(["a", "a", "a"], ["a", "a", "a"]))


def test_the_interval_is_the_percentile_bootstrap_over_items_drawn_with_seed_0():
    """The interval drawn by hand: 2,000 resamples of the items (numpy's generator, seed 0), each a kappa from
    scikit-learn, NaN resamples left out, the 2.5th and 97.5th percentiles."""
    from sklearn.metrics import cohen_kappa_score

    rng_answers = np.random.default_rng(11)
    a = rng_answers.choice(["finding", "model_wrong"], 24)
    b = np.where(rng_answers.random(24) < 0.8, a, rng_answers.choice(["finding", "model_wrong"], 24))
    got = agreement.agreement(_frame({"ann": list(a), "bob": list(b)}))
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(agreement.N_RESAMPLES):
        idx = rng.integers(0, 24, 24)
        x, y = a[idx], b[idx]
        boot.append(np.nan if len(set(x) | set(y)) == 1 else cohen_kappa_score(x, y))
    boot = np.array(boot)
    lo, hi = np.percentile(boot[~np.isnan(boot)], [2.5, 97.5])
    assert agreement.N_RESAMPLES == 2_000
    assert got["ci_low"] == pytest.approx(lo, abs=1e-12) and got["ci_high"] == pytest.approx(hi, abs=1e-12)


def test_no_interval_when_every_resample_agrees_on_one_category():
    got = agreement.agreement(_frame({"ann": ["finding"] * 5, "bob": ["finding"] * 5}))
    assert np.isnan(got["kappa"]) and np.isnan(got["ci_low"]) and np.isnan(got["ci_high"])
    assert got["disagreements"] == [] and got["n_items"] == 5

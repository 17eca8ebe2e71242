"""The seed study's claims, stated and tested, with the selection-bias controls side by side.

The study's claims: (1) the specialist wins on the easiest cases; (2) the omnimodel holds up better on
the hardest cases (the specialist-minus-omnimodel gap shrinks from easiest to hardest); (3) the
specialist wins on thin vessels. "Easiest" and "hardest" are chosen by the specialist's own score, so
on the hardest subset the specialist is selected for being unlucky: part of any shrinking gap is
regression to the mean. Each claim is therefore computed four ways (docs/study.md):

* ``raw``: the specialist S picks the cases and is judged on them (the study's protocol; biased);
* ``independent reference``: a second specialist S2 (another seed) picks the cases, S is judged;
* ``selection alone``: S picks and is judged, with S2 in the omnimodel's place: what selection alone
  produces, since S2 is as good as S by construction;
* ``null-corrected``: raw minus selection alone, i.e. S2 - O on the cases S picked (exactly);
* ``lesion size`` and ``contrast``: strata chosen from the image, not from any model's score.

Each estimate has a bootstrap 95% interval (images resampled within each subset) and a permutation
p-value (sign flips for a single gap, label swaps between the two subsets for a gap change); the
verdict follows the interval: "supported" when it excludes 0 in the claim's direction, "not supported"
when it excludes 0 the other way, "inconclusive at n=..." otherwise, and "not tested" below
:data:`omniseg.study.stats.MIN_N` images. The raw rows of the curated claims say they are biased: a claim's
headline (:func:`headline`) never rests on them while a control exists, and says it cannot be tested
without one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import MIN_N, holm

N_RESAMPLES = 10_000
LEVEL = 0.95

CLAIMS = {
    "easiest": "the specialist wins on the easiest cases",
    "hardest": "the omnimodel holds up better on the hardest cases (the gap shrinks)",
    "all": "the specialist wins on the whole test set",
}
CLAIM_COLUMNS = ["task", "claim", "analysis", "selected_by", "specialist", "omnimodel", "n_a", "n_b", "estimate",
                 "ci_low", "ci_high", "p_value", "p_holm", "verdict"]


def _means(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` bootstrap means of ``x`` (vectorized in blocks that bound memory)."""
    out = np.empty(n)
    step = max(1, 2_000_000 // max(len(x), 1))
    for i in range(0, n, step):
        k = min(step, n - i)
        out[i:i + k] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(axis=1)
    return out


def _interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.percentile(samples, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def gap(d, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Mean of paired differences ``d`` (specialist - omnimodel on the same images): estimate, percentile
    bootstrap interval, two-sided sign-flip permutation p-value."""
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return {"n_a": 0, "n_b": 0, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    rng = np.random.default_rng(seed)
    est = float(d.mean())
    lo, hi = _interval(_means(d, rng, n_resamples))
    flips = rng.choice([-1.0, 1.0], size=(n_resamples, len(d)))
    null = np.abs((flips * d).mean(axis=1))
    p = float((1 + np.sum(null >= abs(est) - 1e-12)) / (n_resamples + 1))
    return {"n_a": len(d), "n_b": 0, "estimate": est, "ci_low": lo, "ci_high": hi, "p_value": p}


def gap_change(d_a, d_b, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """mean(d_a) - mean(d_b): how much larger the gap is on subset a than on subset b. Interval from
    resampling each subset separately; p-value from swapping subset labels (two-sided)."""
    a = np.asarray(d_a, dtype=float)
    b = np.asarray(d_b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return {"n_a": len(a), "n_b": len(b), "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    rng = np.random.default_rng(seed)
    est = float(a.mean() - b.mean())
    lo, hi = _interval(_means(a, rng, n_resamples) - _means(b, rng, n_resamples))
    pooled = np.concatenate([a, b])
    null = np.empty(n_resamples)
    step = max(1, 2_000_000 // len(pooled))
    for i in range(0, n_resamples, step):
        k = min(step, n_resamples - i)
        perm = np.argsort(rng.random((k, len(pooled))), axis=1)
        shuffled = pooled[perm]
        null[i:i + k] = shuffled[:, :len(a)].mean(axis=1) - shuffled[:, len(a):].mean(axis=1)
    p = float((1 + np.sum(np.abs(null) >= abs(est) - 1e-12)) / (n_resamples + 1))
    return {"n_a": len(a), "n_b": len(b), "estimate": est, "ci_low": lo, "ci_high": hi, "p_value": p}


#: what a claim on the curated cases says when only the specialist's own lists exist
UNTESTABLE = ("not testable without a control (selection bias): run `omniseg curate --control MODEL` "
              "(a second specialist) or `--strata`")
#: how a raw row of a curated claim is marked in claims.csv
BIASED = " (biased: the specialist picked these cases itself)"


def verdict(ci_low: float, ci_high: float, n: int, direction: int = 1) -> str:
    """Plain words that follow the interval: the claim holds when its effect is positive (``direction`` 1).
    ``n``: the images behind the estimate (the smaller subset for a gap change)."""
    if n == 0 or np.isnan(ci_low) or np.isnan(ci_high):
        return "not tested (no data)"
    if n < MIN_N:
        return f"not tested (n = {n}, fewer than {MIN_N} images)"
    lo, hi = (ci_low, ci_high) if direction > 0 else (-ci_high, -ci_low)
    if lo > 0:
        return "supported"
    if hi < 0:
        return "not supported (the opposite holds)"
    return f"inconclusive at n={n}"


def _diff(wide: pd.DataFrame, a: str, b: str, ids) -> np.ndarray:
    ids = [i for i in ids if i in wide.index]
    return (wide.loc[ids, a] - wide.loc[ids, b]).to_numpy(dtype=float)


def findings(wide: pd.DataFrame, subsets: dict[str, list[str]], *, task: str, specialist: str, omnimodel: str,
             second: str | None = None, claims: tuple[str, ...] = ("easiest", "hardest"),
             n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """The claims table of one task.

    ``wide``: Dice per image (index sample id, one column per model). ``subsets``: name -> sample ids,
    with ``easiest``/``hardest`` chosen by ``specialist``, ``easiest@<second>``/``hardest@<second>``
    chosen by ``second``, and image strata ``lesion-large``/``lesion-small``, ``contrast-high``/``contrast-low``.
    """
    rows = []

    def add(claim, analysis, selected_by, spec, omni, r):
        n = r["n_a"] if r["n_b"] == 0 else min(r["n_a"], r["n_b"])
        # the selection-alone row measures the bias, it does not test the claim
        said = "control: what selection alone explains" if analysis == "selection alone" else \
            verdict(r["ci_low"], r["ci_high"], n) + (BIASED if analysis == "raw" and claim != "all" else "")
        rows.append({"task": task, "claim": claim, "analysis": analysis, "selected_by": selected_by,
                     "specialist": spec, "omnimodel": omni, **r, "verdict": said})

    def both(claim, analysis, selected_by, spec, omni, easy, hard):
        if claim == "easiest":
            add(claim, analysis, selected_by, spec, omni, gap(_diff(wide, spec, omni, easy), n_resamples))
        elif claim == "hardest":
            add(claim, analysis, selected_by, spec, omni,
                gap_change(_diff(wide, spec, omni, easy), _diff(wide, spec, omni, hard), n_resamples))

    easy, hard = subsets.get("easiest", []), subsets.get("hardest", [])
    for claim in claims:
        if claim == "all":
            add(claim, "raw", "-", specialist, omnimodel, gap(_diff(wide, specialist, omnimodel, wide.index), n_resamples))
            continue
        if easy and hard:
            both(claim, "raw", specialist, specialist, omnimodel, easy, hard)
        if second and second in wide.columns:
            e2, h2 = subsets.get(f"easiest@{second}", []), subsets.get(f"hardest@{second}", [])
            if e2 and h2:
                both(claim, "independent reference", second, specialist, omnimodel, e2, h2)
            if easy and hard:
                both(claim, "selection alone", specialist, specialist, second, easy, hard)
                both(claim, "null-corrected", specialist, second, omnimodel, easy, hard)
        for label, big, small in (("lesion size", "lesion-large", "lesion-small"),
                                  ("contrast", "contrast-high", "contrast-low")):
            if subsets.get(big) and subsets.get(small):
                both(claim, label, "image", specialist, omnimodel, subsets[big], subsets[small])
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))  # the table's tests as one family
    return table


def headline(table: pd.DataFrame, claim: str) -> pd.Series | None:
    """The row a claim's one-line verdict rests on: the null-corrected one, else the independent reference, else
    the image strata (lesion size, then contrast); raw only when nothing else exists, and then, for a curated claim,
    with the verdict :data:`UNTESTABLE` (its numbers stay in the row, marked biased)."""
    part = table[table["claim"] == claim]
    for analysis in ("null-corrected", "independent reference", "lesion size", "contrast", "raw"):
        hit = part[part["analysis"] == analysis]
        if len(hit):
            row = hit.iloc[0].copy()
            if analysis == "raw" and claim != "all":
                row["verdict"] = UNTESTABLE
            return row
    return None

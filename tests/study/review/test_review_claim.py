"""Claim 4 on generated studies with known truth: an omnimodel that marks true lesions the annotation left out
is supported, one that marks random blobs is not; the adjudicated Dice rises only for the first."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

import planted_study as ps
from omniseg.store.database import Store
from omniseg.study import report
from omniseg.study.review import claim, items
from omniseg.store import reviews as store_reviews


def _reviewed(tmp_path, omni: str, reviewers=("ann",)):
    st, planted = ps.make(tmp_path, n=40, omni=omni)
    items.build(st, "polyp")
    for item_id, it in items.load(st, "polyp").items():
        for r in reviewers:
            store_reviews.put_review(st, "polyp", item_id, r, ps.truth(it, planted), seconds=2.0)
    paths = report.write(st, tmp_path / "report", figures=False, html=False)
    return st, planted, paths


def _claim4(paths) -> pd.Series:
    table = pd.read_csv(paths["claims"])
    rows = table[table["claim"] == claim.CLAIM]
    assert len(rows) == 1
    return rows.iloc[0]


def test_planted_findings_support_claim_4_and_raise_the_omnimodels_adjudicated_dice(tmp_path):
    st, planted, paths = _reviewed(tmp_path, "planted")
    row = _claim4(paths)
    assert row["verdict"] == "supported" and row["omnimodel"] == ps.OMNI and row["specialist"] == ps.SPEC
    assert row["estimate"] == pytest.approx(1.0) and row["n_a"] == len(planted) and row["n_b"] == 14
    review = pd.read_csv(paths["review"]).set_index("model")
    assert review.loc[ps.OMNI, "real_findings"] == len(planted) and review.loc[ps.SPEC, "real_findings"] == 0
    assert review.loc[ps.OMNI, "dice_adjudicated_mean"] > review.loc[ps.OMNI, "dice_mean"] + 0.05
    # where the planted lesion is added to the reference, the omnimodel's mask is exactly right
    assert review.loc[ps.OMNI, "dice_adjudicated_mean"] == pytest.approx(1.0)
    md = paths["markdown"].read_text()
    assert "### Expert review (claim 4)" in md and "finds what the annotators missed" in md
    assert "supported" in md[md.index("### Expert review"):]


def test_random_blobs_do_not_support_claim_4_and_gain_nothing(tmp_path):
    st, planted, paths = _reviewed(tmp_path, "random")
    row = _claim4(paths)
    assert not row["verdict"].startswith("supported")
    assert row["estimate"] == pytest.approx(0.0)
    review = pd.read_csv(paths["review"]).set_index("model")
    assert review.loc[ps.OMNI, "real_findings"] == 0
    assert review.loc[ps.OMNI, "dice_adjudicated_mean"] == pytest.approx(review.loc[ps.OMNI, "dice_mean"], abs=1e-12)


def test_the_consensus_is_a_strict_majority():
    answers = pd.DataFrame({"item_id": ["a", "a", "a", "b", "b", "c"],
                            "verdict": ["finding", "finding", "model_wrong", "finding", "model_wrong", "cannot_tell"]})
    got = claim.consensus(answers)
    assert got["a"] == "finding" and got["b"] is None and got["c"] == "cannot_tell"


def test_agreement_of_two_reviewers_goes_to_the_report(tmp_path):
    st, planted, paths = _reviewed(tmp_path, "planted", reviewers=("ann", "bob"))
    agreed = pd.read_csv(paths["review_agreement"])
    assert agreed.loc[0, "reviewers"] == "ann,bob" and agreed.loc[0, "kappa"] == pytest.approx(1.0)
    assert "Cohen's kappa 1.000" in paths["markdown"].read_text()


def test_without_reviews_the_report_says_claim_4_needs_omniseg_review(tmp_path):
    st, _ = ps.make(tmp_path, n=12)
    paths = report.write(st, tmp_path / "r1", figures=False, html=False)
    assert "omniseg review --task polyp --reviewer NAME" in paths["markdown"].read_text()
    assert "review" not in paths
    # a store written before the review tables existed, opened read-only as `omniseg report` does
    st.close()
    db = sqlite3.connect(tmp_path / "runs" / "s.sqlite")
    for table in ("reviews", "review_orders", "review_credits", "review_items", "review_sets"):
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    with Store(tmp_path / "runs" / "s.sqlite", readonly=True) as old:
        paths = report.write(old, tmp_path / "r2", figures=False, html=False)
    assert "needs an expert" in paths["markdown"].read_text()


def test_every_real_finding_on_one_image_joins_its_reference_in_the_adjudicated_dice(tmp_path):
    import numpy as np
    from PIL import Image

    a, b, c = np.zeros((20, 20), bool), np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    a[2:5, 2:5] = True  # 9 pixels
    b[10:14, 10:14] = True  # 16 pixels
    c[0, 19] = True  # one pixel
    real = [{"sample_id": "s", "region": items.png_bits(a)}, {"sample_id": "s", "region": items.png_bits(b)},
            {"sample_id": "m", "region": items.png_bits(b)}, {"sample_id": "u", "region": items.png_bits(c)}]
    with Store(tmp_path / "s.sqlite") as st:
        Image.fromarray((b * 255).astype(np.uint8)).save(tmp_path / "m.png")  # a mask that marked finding b
        g = pd.DataFrame({"sample_id": ["s", "t", "m", "u"], "dice": [0.5, 0.25, 0.4, 0.0], "tp": [10, 3, 5, 0],
                          "fp": [4, 1, 16 + 2, 0], "fn": [20, 2, 3, 0],  # m's 16 finding pixels were false positives
                          "mask_path": [None, None, "m.png", None]})  # s, u: failed, empty: their findings missed
        out = claim._adjudicated(st, "polyp", g, real)
    assert out.tolist() == [pytest.approx(2 * 10 / (2 * 10 + 4 + 20 + 9 + 16)), 0.25,
                            pytest.approx(2 * 21 / (2 * 21 + 2 + 3)), 0.0]

"""The study's fourth claim, from expert review: the omnimodel finds what the annotators missed.

An item's *consensus* is the verdict more than half of its reviewers gave (else none). Per model: the share
of its reviewed model-only regions whose consensus is ``finding`` (a real finding the annotation missed),
with a percentile bootstrap interval; the omnimodel minus the specialist, with an interval from resampling
each model's items and a permutation p-value from swapping them (:func:`omniseg.study.claims.gap_change`), and
the verdict in the other claims' words (positive: the omnimodel's extra marks are more often real). A region
that both models marked counts for both. The *adjudicated* Dice scores every model against the reference
plus the regions judged real findings (computed from the stored counts and masks; nothing is rescored).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import caveats, claims, stats
from ..document import Block, Bullets, Heading, Paragraph, table as make_table
from ..numbers import decimals, p_value
from ...store import reviews as store_reviews
from ...store.database import Store
from . import agreement as agreement_mod
from .items import read_bits, read_mask

CLAIM = "sensitivity"
TEXT = "the omnimodel finds what the annotators missed (its extra marks are real findings more often)"
VERDICTS = {"finding": "a real finding the annotation missed", "model_wrong": "the model is wrong",
            "annotation_wrong": "the annotation is wrong here (other)", "cannot_tell": "cannot tell"}
#: review.csv
REVIEW_COLUMNS = ["task", "model", "role", "regions", "reviewed", "real_findings", "share", "share_ci_low",
                  "share_ci_high", "n_images", "dice_mean", "dice_adjudicated_mean", "dice_gain"]


def reviews(store: Store, task: str) -> pd.DataFrame:
    """Every answer given on the task's items (none in a store older than the review tables)."""
    return store_reviews.answers(store, task)


def consensus(answers: pd.DataFrame) -> pd.Series:
    """item id -> the verdict more than half of its reviewers gave, else None."""
    out = {}
    for item, g in answers.groupby("item_id", sort=True):
        top = g["verdict"].value_counts()
        out[item] = top.index[0] if top.iloc[0] * 2 > len(g) else None
    return pd.Series(out, dtype=object)


def _adjudicated(store: Store, task: str, g: pd.DataFrame, real: list[dict]) -> pd.Series:
    """Per row of ``g`` (scored predictions), Dice against the reference plus the real findings on its image."""
    found: dict[str, np.ndarray] = {}
    for it in real:  # every region is outside the reference, so the union only adds pixels
        region = read_bits(it["region"])
        found[it["sample_id"]] = found[it["sample_id"]] | region if it["sample_id"] in found else region
    out = g["dice"].astype(float).copy()
    for idx, r in g[g["sample_id"].isin(found)].iterrows():
        extra = found[r["sample_id"]]
        hit = int(np.count_nonzero(read_mask(store, r["mask_path"], extra.shape) & extra))
        tp, fp, fn = r["tp"] + hit, r["fp"] - hit, r["fn"] + int(extra.sum()) - hit
        den = 2 * tp + fp + fn
        out[idx] = 1.0 if den == 0 else 2 * tp / den
    return out


def section(store: Store, task: str, g: pd.DataFrame, specialist: str | None, contenders: list[tuple[str, str]],
            roles: dict[str, str]) -> tuple[list[Block], pd.DataFrame | None, pd.DataFrame | None, dict | None]:
    """The report's blocks for claim 4, its claims.csv rows (None without a specialist and reviews), review.csv's rows
    and the reviewers' agreement (None with fewer than two)."""
    from .items import load

    md: list[Block] = [Heading(f"Expert review (claim 4){caveats.demo_tag(store, task)}", 3)]
    answers = reviews(store, task)
    if answers.empty:
        md.append(Paragraph(f"Claim 4 ({TEXT}): not tested: it needs an expert to look at the regions where models "
                            f"and annotation disagree: `omniseg review --task {task} --reviewer NAME` (docs/study.md)."))
        return md, None, None, None
    items = load(store, task)
    agreed = consensus(answers)
    scored = g[g["dice"].notna()]
    real = [items[i] for i, v in agreed.items() if v == "finding" and items[i]["side"] == "model-only"]
    adjudicated = _adjudicated(store, task, scored, real)
    indicators, rows = {}, []
    for model in sorted({m for it in items.values() for m in it["models"]}):
        mine = [i for i, it in items.items() if model in it["models"] and it["side"] == "model-only"]
        seen = [i for i in mine if i in agreed.index]
        x = np.array([agreed[i] == "finding" for i in seen], dtype=float)
        indicators[model] = x
        lo, hi = stats.bootstrap_ci(x) if len(x) >= stats.MIN_N else (np.nan, np.nan)
        part = scored["model"] == model
        raw, adj = scored.loc[part, "dice"].mean(), adjudicated[part].mean()
        rows.append({"task": task, "model": model, "role": roles.get(model, ""), "regions": len(mine),
                     "reviewed": len(seen), "real_findings": int(x.sum()),
                     "share": float(x.mean()) if len(x) else np.nan, "share_ci_low": lo, "share_ci_high": hi,
                     "n_images": int(part.sum()), "dice_mean": raw, "dice_adjudicated_mean": adj, "dice_gain": adj - raw})
    table = pd.DataFrame(rows, columns=REVIEW_COLUMNS)
    n_rev = answers["reviewer"].nunique()
    md.append(Paragraph(f"{len(agreed)} of {len(items)} regions reviewed by {n_rev} reviewer{'s' * (n_rev != 1)} "
                        "(blinded: no reviewer saw which model marked a region); a region counts as a real finding "
                        "when more than half of its reviewers said so. The adjudicated Dice adds those regions to the "
                        "reference."))
    claim_rows = []
    for omni, role in contenders:
        word = "foundation model" if role == "foundation" else "omnimodel"
        if not specialist or omni not in indicators:
            continue
        r = claims.gap_change(indicators[omni], indicators.get(specialist, np.array([])))
        said = claims.verdict(r["ci_low"], r["ci_high"], min(r["n_a"], r["n_b"]))
        claim_rows.append({"task": task, "claim": CLAIM, "analysis": "expert review", "selected_by": "reviewers",
                           "specialist": specialist, "omnimodel": omni, **r, "verdict": said, "contender_role": role})
        md.append(Bullets((f"**{TEXT.replace('omnimodel', word).capitalize()}** (`{omni}` against `{specialist}`): "
                           f"{said} (share of model-only regions judged real findings, {word} − specialist "
                           f"{decimals(r['estimate'])} [{decimals(r['ci_low'])}, {decimals(r['ci_high'])}], permutation "
                           f"p {p_value(r['p_value'])}; n = {r['n_a']} / {r['n_b']} regions).",)))
    rows = []
    for r in table.itertuples(index=False):
        ci = f"none: n < {stats.MIN_N}" if r.reviewed < stats.MIN_N else f"[{r.share_ci_low:.3f}, {r.share_ci_high:.3f}]"
        rows.append([r.model, r.role, r.regions, r.reviewed, r.real_findings, decimals(r.share, False), ci,
                     decimals(r.dice_mean, False), decimals(r.dice_adjudicated_mean, False), decimals(r.dice_gain)])
    md.append(make_table(["model", "role", "model-only regions", "reviewed", "real findings", "share", "95% CI", "Dice",
                          "adjudicated Dice", "gain"], rows, "llrrrrlrrr"))
    agree = agreement_mod.agreement(answers)
    if agree is not None:
        agree = {"task": task, **agree}
        md.append(Paragraph(f"Agreement of {agree['reviewers']} on the {agree['n_items']} regions all answered: "
                            f"{'Cohen' if agree['method'] == 'cohen' else 'Fleiss'}'s kappa "
                            f"{decimals(agree['kappa'], False)} [{decimals(agree['ci_low'], False)}, "
                            f"{decimals(agree['ci_high'], False)}]; they differ on {len(agree['disagreements'])} "
                            "(review_agreement.csv lists them)."))
    claim_table = pd.DataFrame(claim_rows, columns=claims.CLAIM_COLUMNS + ["contender_role"]) if claim_rows else None
    return md, claim_table, table, agree

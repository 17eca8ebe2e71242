"""The report's "Findings" section: the study's claims with their verdicts and the selection-bias controls.

Reads the store's subsets (the reference's lists, a second specialist's ``@`` lists, the image strata)
and the per-image scores; :mod:`omniseg.study.claims` does the statistics. docs/study.md explains the design.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from . import caveats, claims
from .document import Block, Bullets, Figure, Heading, Paragraph, table as make_table
from .numbers import decimals, p_value
from ..store import subsets as store_subsets
from ..store.database import Store


def subsets_of(store: Store, task: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """subset -> sample ids (in rank order), and subset -> the model (or 'image') that chose it."""
    rows = store_subsets.members(store, task)
    ids = {s: g["sample_id"].tolist() for s, g in rows.groupby("subset", sort=True)}
    chosen = {s: g["reference"].iloc[0] for s, g in rows.groupby("subset", sort=True)}
    return ids, chosen


def second_specialist(chosen: dict[str, str]) -> str | None:
    return next((name.split("@", 1)[1] for name in sorted(chosen) if name.startswith("easiest@")), None)


def section(store: Store, task: str, g: pd.DataFrame, specialist: str | None, omnimodels: list[str],
            figures: bool, stem: str, foundations: list[str] = ()) -> tuple[list[Block], pd.DataFrame | None]:
    """The blocks of the task's Findings (the claims for each omnimodel, then the same claims for each foundation
    model, then Dice by lesion size, with its figure when ``figures``) and its claims table (None without a
    specialist and a contender). claims.csv's ``omnimodel`` column names the contender; ``contender_role`` says
    which kind it is."""
    md: list[Block] = [Heading(f"Findings{caveats.demo_tag(store, task)}", 3)]
    contenders = [(o, "omnimodel") for o in omnimodels if o != specialist] + \
                 [(f, "foundation") for f in foundations if f != specialist]
    if not specialist or not contenders:
        md.append(Paragraph("No claims tested: a specialist (the curation reference) and an omnimodel (a model of "
                            "role `omnimodel`, or `omniseg report --omnimodel MODEL`) are needed."))
        return md + _by_size(g, figures, stem), None
    ids, chosen = subsets_of(store, task)
    second = second_specialist(chosen)
    wide = g.pivot(index="sample_id", columns="model", values="dice")
    tables = []
    for omni, role in contenders:
        blocks, table = _claims(task, wide, ids, specialist, omni, second, role)
        md += blocks
        tables.append(table.assign(contender_role=role))
    md += _by_size(g, figures, stem)
    return md, pd.concat(tables, ignore_index=True)


def _claims(task: str, wide: pd.DataFrame, ids: dict, specialist: str, omnimodel: str,
            second: str | None, role: str) -> tuple[list[Block], pd.DataFrame]:
    """The claims for one contender; for a foundation model they read "the foundation model" where the study
    says "the omnimodel" (the statistics are the same)."""
    word = "foundation model" if role == "foundation" else "omnimodel"
    table = claims.findings(wide, ids, task=task, specialist=specialist, omnimodel=omnimodel, second=second,
                            claims=tuple(claims.CLAIMS))
    md: list[Block] = [Paragraph(
        f"Specialist `{specialist}` (it picked the easiest and hardest cases), {word} `{omnimodel}`"
        + (f", second specialist `{second}` for the controls." if second else
           ". No second specialist: the gap on cases the specialist picked itself is biased by the "
           "selection (`omniseg curate --control MODEL`, docs/study.md)."))]
    bullets = []
    for claim, text in claims.CLAIMS.items():
        row = claims.headline(table, claim)
        if row is None:
            continue
        basis = {"null-corrected": "after subtracting the gap change selection alone produces",
                 "independent reference": "cases picked by the second specialist",
                 "lesion size": "largest against smallest lesions, chosen from the images",
                 "contrast": "highest against lowest contrast, chosen from the images"}.get(row["analysis"], "biased "
                 "raw figure: cases picked by the specialist itself, not corrected for that selection" if claim != "all"
                 else "all cases")
        text = text.replace("omnimodel", word)
        bullets.append(f"**{text.capitalize()}**: {row['verdict']} ({basis}; specialist − {word} Dice "
                  f"{decimals(row['estimate'])} [{decimals(row['ci_low'])}, {decimals(row['ci_high'])}], permutation p "
                  f"{p_value(table.loc[row.name, 'p_holm'])}{' (Holm)' if table['p_value'].notna().sum() > 1 else ''}).")
    if bullets:
        md.append(Bullets(tuple(bullets)))
    tested = int(table["p_value"].notna().sum())
    rows = [[r.claim, r.analysis, r.selected_by, f"{r.specialist} − {r.omnimodel}",
             f"{r.n_a}" if r.n_b == 0 else f"{r.n_a} / {r.n_b}", decimals(r.estimate),
             f"[{decimals(r.ci_low)}, {decimals(r.ci_high)}]", p_value(r.p_holm), r.verdict]
            for r in table.itertuples(index=False)]
    md.append(make_table(["claim", "analysis", "cases picked by", "A − B", "n", "estimate", "95% CI",
                          "p" + (" (Holm)" if tested > 1 else ""), "verdict"], rows, "llllrrlrl"))
    if tested > 1:
        md.append(Paragraph(f"p-values adjusted for the {tested} tests of this table (Holm's step-down method); "
                            "claims.csv keeps the raw permutation p-values (p_value) beside them (p_holm). The "
                            "verdicts follow the 95% intervals."))
    md.append(Paragraph("For `easiest` the estimate is the gap on those cases; for `hardest` it is the gap on the "
                        "easiest minus the gap on the hardest (positive: the gap shrinks on hard cases). `selection "
                        "alone` puts the second specialist in the omnimodel's place; `null-corrected` = raw − "
                        "selection alone. `lesion size` and `contrast` compare the largest / highest-contrast quarter "
                        "with the smallest / lowest, chosen from the images."))
    return md, table


def _by_size(g: pd.DataFrame, figures: bool, stem: str) -> list[Block]:
    """Mean Dice per model in quartiles of the reference lesion's share of the image, and the figure."""
    from . import figures as plots

    total = g["tp"] + g["fp"] + g["fn"] + g["tn"]
    df = g.assign(lesion_share=g["ref_px"] / total.where(total > 0))
    df = df[(df["lesion_share"] > 0) & df["dice"].notna()]
    if df["sample_id"].nunique() < 8:
        return []
    edges = np.quantile(df.drop_duplicates("sample_id")["lesion_share"], [0, 0.25, 0.5, 0.75, 1])
    df = df.assign(q=np.clip(np.searchsorted(edges, df["lesion_share"], side="right") - 1, 0, 3))
    models = sorted(df["model"].unique())
    rows = []
    for q in range(4):
        part = df[df["q"] == q]
        rows.append([f"{edges[q]:.3f}–{edges[q + 1]:.3f}", part["sample_id"].nunique(),
                     *(f"{part[part['model'] == m]['dice'].mean():.3f}" for m in models)])
    md: list[Block] = [Paragraph("Dice by reference lesion size (quartiles of the lesion's share of the image):"),
                       make_table(["lesion share", "n", *(f"`{m}`" for m in models)], rows, "lr" + "r" * len(models))]
    if figures:
        md.append(Figure(f"{stem}_dice_vs_size.png", "Dice against lesion size",
                         lambda path: plots.dice_vs_size(df, models, path, "Dice against lesion size", edges)))
    return md

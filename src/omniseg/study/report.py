"""`omniseg report`: tables, paired statistics, figures, routing and a manifest, from the store alone.

Subsets: ``all`` (every sample of the chosen split), ``easiest`` and ``hardest`` (the lists
`omniseg curate` stored). A pair whose model failed counts with its empty-mask score and in
``failure_rate``; 'sample_error' and 'unavailable' pairs have no score and are left out of n.
docs/outputs.md documents each file and column. The montage of cases is the one figure that
also reads the dataset (images and ground truth, from the root the run recorded); it is skipped
with a note when the data is not there.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import adequacy, caveats, document, findings, manifest, routing, stats
from .document import Block, Bullets, Figure, Heading, Paragraph, Table, table
from .numbers import p_value
from .review import agreement as review_agreement, claim as review_claim
from ..scoring.metrics import SCORE_COLUMNS
from ..store import results, subsets as store_subsets
from ..store.database import Store
from ..store.schema import file_name
from ..store import masks as store_masks
from ..store import runs as store_runs

#: per_image.csv: these, with the store's score columns (counts, then one per metric) before the last four
PER_IMAGE_COLUMNS = ["task", "split", "sample_id", "model", "status", "reason", "easiest_rank", "hardest_rank",
                     *SCORE_COLUMNS, "answer_form", "confidence", "elapsed_s", "mask_path", "role", "privileged"]
_TAIL = 6  # the columns after the scores
#: summary.csv: these, then `<metric>_mean` (or `_median`) for every other metric column with values
SUMMARY_COLUMNS = ["task", "subset", "model", "n", "failures", "failure_rate",
                   "dice_mean", "dice_std", "dice_median", "dice_ci_low", "dice_ci_high",
                   "iou_mean", "iou_std", "iou_median", "precision_mean", "recall_mean", "hd95_median", "not_scored",
                   "role", "privileged"]
_SUMMARIZED = {"dice", "iou", "precision", "recall", "hd95"}
COMPARISON_COLUMNS = ["task", "subset", "model_a", "model_b", "n", "mean_diff", "diff_ci_low", "diff_ci_high",
                      "p_wilcoxon", "p_holm", "wins", "ties", "losses"]
SUBSETS = ("all", "easiest", "hardest")
DECOMPOSITION_COLUMNS = ["task", "chain", "stage", "model", "n", "dice_mean", "iou_mean"]
ROUTING_SHARES = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)


def per_image(store: Store, task: str | None = None, split: str = "test") -> pd.DataFrame:
    """per_image.csv's rows (docs/outputs.md): the store's result rows with each model's role and privilege."""
    df = results.per_image(store, task, split)
    for col in ("easiest_rank", "hardest_rank"):
        df[col] = df[col].astype("Int64")
    from ..models import role_of

    df["role"] = [role_of(k or "", r) for k, r in zip(df["kind"], df["role"])]
    df["privileged"] = df["privileged"].fillna(0).astype(bool)
    head, tail = PER_IMAGE_COLUMNS[:8], PER_IMAGE_COLUMNS[-_TAIL:]
    return df[head + results.score_columns(store) + tail]


def _subset(df: pd.DataFrame, subset: str) -> pd.DataFrame:
    return df if subset == "all" else df[df[f"{subset}_rank"].notna()]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """task x subset x model statistics of a per-image frame (std with ddof=1; 95% percentile bootstrap)."""
    extra = _extra_metrics(df)
    rows = []
    for (task, model), g in df.groupby(["task", "model"], sort=True):
        for subset in SUBSETS:
            part = _subset(g, subset)
            if subset != "all" and part.empty:
                continue
            scored = part[part["dice"].notna()]
            fails = int((scored["status"] != "ok").sum())
            lo, hi = stats.bootstrap_ci(scored["dice"]) if len(scored) >= stats.MIN_N else (np.nan, np.nan)
            rows.append({
                "task": task, "subset": subset, "model": model, "n": len(scored), "failures": fails,
                "failure_rate": fails / len(scored) if len(scored) else np.nan,
                "dice_mean": scored["dice"].mean(), "dice_std": scored["dice"].std(), "dice_median": scored["dice"].median(),
                "dice_ci_low": lo, "dice_ci_high": hi,
                "iou_mean": scored["iou"].mean(), "iou_std": scored["iou"].std(), "iou_median": scored["iou"].median(),
                "precision_mean": scored["precision"].mean(), "recall_mean": scored["recall"].mean(),
                "hd95_median": scored["hd95"].median(), "not_scored": len(part) - len(scored),
                "role": g["role"].iloc[0], "privileged": bool(g["privileged"].iloc[0]),
                **{f"{m}_{how}": getattr(scored[m], how)() for m, how in extra},
            })
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS + [f"{m}_{how}" for m, how in extra])
    order = {s: i for i, s in enumerate(SUBSETS)}
    return out.sort_values(["task", "subset", "model"], key=lambda c: c.map(order) if c.name == "subset" else c,
                           kind="stable").reset_index(drop=True)


def answered_as(forms: pd.Series) -> str:
    """What a model's ok answers were: 'boxes only', 'points only', 'masks' (or a local model's masks), or
    'mixed' with the share of boxes and points."""
    from ..models.api.forms import BOX_FORMS, POINT_FORMS

    forms = forms.dropna()
    if forms.empty:
        return "masks"
    parts = [set(f.split("+")) for f in forms]
    boxes = sum(p <= BOX_FORMS for p in parts)
    points = sum(p <= POINT_FORMS for p in parts)
    if boxes == len(parts):
        return "boxes only"
    if points == len(parts):
        return "points only"
    if boxes + points == 0:
        return "masks"
    return f"mixed ({boxes / len(parts):.0%} boxes, {points / len(parts):.0%} points)"


def _localisation(g: pd.DataFrame, summary_all: pd.DataFrame, mark) -> list[Block]:
    """Where each model put its answers, apart from their shape (docs/metrics.md), beside what they answered with:
    a box-only model's Dice measures its format as much as its perception."""
    cols = ["box_iou_mean", "pointing_mean", "det_precision_mean", "det_recall_mean", "det_f1_mean"]
    if summary_all.empty or not all(c in summary_all.columns for c in cols):
        return []
    ok = g[g["status"] == "ok"]
    rows = []
    for r in summary_all.itertuples(index=False):
        shown = [("–" if pd.isna(v) else f"{v:.3f}") for v in (r.box_iou_mean, r.pointing_mean, r.det_precision_mean,
                                                               r.det_recall_mean, r.det_f1_mean)]
        rows.append([mark(r.model), answered_as(ok.loc[ok["model"] == r.model, "answer_form"]), shown[0], shown[1],
                     f"{shown[2]} / {shown[3]} / {shown[4]}"])
    return [Paragraph("Localisation (where, apart from the shape drawn; a filled box or a point cannot reach a Dice "
                      "of 1):"),
            table(["model", "answered as", "box IoU", "pointing", "detection precision / recall / F1"], rows, "llrrl")]


def decomposition(g: pd.DataFrame, signatures: dict[str, dict], specialists: list[str]) -> list[pd.DataFrame]:
    """Per chain of the task, its stages side by side on the images all of them scored: the omnimodel alone, the
    omnimodel's boxes drawn by the segmenter, the segmenter from text, the segmenter from the reference's box
    (privileged), and the specialist. Columns: stage, model, n, dice_mean, iou_mean (a stage not run: no model)."""
    out = []
    def chained(sig: dict) -> bool:  # a model that draws another entry's answers (omniseg.models.chain)
        return isinstance(sig.get("segmenter"), dict) and bool((sig.get("options") or {}).get("source"))

    for chain in sorted(m for m, sig in signatures.items() if chained(sig) and m in set(g["model"])):
        sig = signatures[chain]
        drawer = sig["segmenter"].get("kind") or "segmenter"
        alike = [m for m, s in signatures.items() if s.get("kind") == drawer and m in set(g["model"])]
        stages = [("omnimodel alone", (sig.get("options") or {}).get("source")),
                  (f"omnimodel → {drawer}", chain),
                  (f"{drawer} from text", next((m for m in sorted(alike) if not signatures[m].get("privileged")), None)),
                  (f"{drawer} from the reference's box (privileged)",
                   next((m for m in sorted(alike) if signatures[m].get("privileged")), None)),
                  ("specialist", specialists[0] if specialists else None)]
        present = [m for _, m in stages if m is not None and m in set(g["model"])]
        scored = g[g["model"].isin(present) & g["dice"].notna()]
        common = scored.groupby("sample_id")["model"].nunique()
        common = set(common[common == len(present)].index)
        rows = []
        for stage, m in stages:
            s = scored[(scored["model"] == m) & scored["sample_id"].isin(common)] if m in present else scored.iloc[0:0]
            rows.append({"chain": chain, "stage": stage, "model": m if m in present else None, "n": len(s),
                         "dice_mean": s["dice"].mean() if len(s) else float("nan"),
                         "iou_mean": s["iou"].mean() if len(s) else float("nan")})
        out.append(pd.DataFrame(rows))
    return out


def _decomposition(tables: list[pd.DataFrame]) -> list[Block]:
    """The gap to the specialist split into where (localisation) and what shape (delineation)."""
    md: list[Block] = []
    for t in tables:
        chain = t["chain"].iloc[0]
        rows = [[r.stage, "not run", "–", "–", "–"] if r.model is None else
                [r.stage, r.model, r.n, f"{r.dice_mean:.3f}", f"{r.iou_mean:.3f}"] for r in t.itertuples(index=False)]
        md += [Paragraph(f"Where against what shape (`{chain}`: the omnimodel locates, the segmenter draws; on the "
                         "images every stage scored):"),
               table(["stage", "model", "n", "Dice", "IoU"], rows, "llrrr")]
        d = t.set_index("stage")["dice_mean"]
        chained, oracle, spec = d.iloc[1], d.iloc[3], d.iloc[4]
        parts = []
        if pd.notna(oracle) and pd.notna(chained):
            parts.append(f"where (the reference's box against the omnimodel's boxes, same segmenter): {oracle - chained:+.3f}")
        if pd.notna(spec) and pd.notna(oracle):
            parts.append(f"what shape (the specialist against the segmenter given the reference's box): {spec - oracle:+.3f}")
        md.append(Paragraph("Dice gap: " + "; ".join(parts) + "." if parts else
                            "Add a segmenter entry with `mode: box-oracle` and a specialist to split the gap into where "
                            "and what shape."))
    return md


def _extra_metrics(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, mean|median) for the metric columns with values beyond the ones summarized in full."""
    from ..scoring import metrics

    start, stop = PER_IMAGE_COLUMNS.index("ref_px") + 1, len(df.columns) - _TAIL
    out = []
    for col in df.columns[start:stop]:
        if col in _SUMMARIZED or df[col].isna().all():
            continue
        try:
            how = metrics.REGISTRY.get(col).summary
        except KeyError:  # a column an extension added, its module not loaded now
            how = "mean"
        out.append((col, how))
    return out


def compare(df: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Every pair of models on the images both scored, per task and subset (a - b)."""
    rows = []
    for task, g in df.groupby("task", sort=True):
        wide_all = g.pivot(index="sample_id", columns="model", values=metric)
        ranks = g.drop_duplicates("sample_id").set_index("sample_id")[["easiest_rank", "hardest_rank"]]
        for subset in SUBSETS:
            ids = wide_all.index if subset == "all" else ranks.index[ranks[f"{subset}_rank"].notna()]
            if len(ids) == 0:
                continue
            wide = wide_all.loc[wide_all.index.intersection(ids)]
            for a, b in itertools.combinations(sorted(wide.columns), 2):
                r = stats.paired(wide[a], wide[b])
                if r["n"] < stats.MIN_N:  # too few images for an interval or a test to mean anything
                    r.update(diff_ci_low=np.nan, diff_ci_high=np.nan, p_wilcoxon=np.nan)
                rows.append({"task": task, "subset": subset, "model_a": a, "model_b": b, **r})
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    for _, part in out.groupby("task"):  # one table per task in report.md: adjusted over its rows
        out.loc[part.index, "p_holm"] = stats.holm(part["p_wilcoxon"].to_numpy(dtype=float))
    return out


def _roles(store: Store, task: str, models: list[str], specialist: str | None, omnimodel: str | None,
           privileged: set[str] = frozenset()):
    """Specialists, omnimodels and foundation models by role (``--specialist``/``--omnimodel`` name one each
    instead), and the reference: the model that picked the cases (else the config's curation reference, else the
    first specialist). A privileged model (told the reference's box) is no contender: it is left out here."""
    roles = store_runs.roles(store, task)
    specs = [specialist] if specialist else [m for m in models if roles.get(m) == "specialist" and m not in privileged]
    omnis = [omnimodel] if omnimodel else [m for m in models if roles.get(m) == "omnimodel" and m not in privileged]
    founds = [m for m in models if roles.get(m) == "foundation" and m not in privileged]
    picked = store_subsets.references(store, task)
    configured = ((store_runs.last_config(store, task) or {}).get("curation") or {}).get("reference")
    reference = specialist or next((m for m in picked + [configured] + specs if m in models and m not in privileged),
                                   None)
    return [m for m in specs if m in models], [m for m in omnis if m in models], founds, reference


def route(df: pd.DataFrame, specialist: str, omnimodel: str) -> pd.DataFrame | None:
    """The routing curve for one task, or None when the specialist recorded no confidence."""
    wide = df.pivot(index="sample_id", columns="model", values="dice")[[specialist, omnimodel]].dropna()
    conf = df[df["model"] == specialist].set_index("sample_id")["confidence"].reindex(wide.index)
    if wide.empty or conf.isna().all():
        return None
    return routing.curve(wide.index.to_numpy(), wide[specialist], wide[omnimodel], conf.fillna(0.0))


def _routing(curve: pd.DataFrame, spec: str, omni: str) -> list[Block]:
    n = int(curve["n_sent"].iloc[-1])
    rows = []
    for share in ROUTING_SHARES:
        row = curve.iloc[int(round(share * n))]
        rows.append([f"{share:.0%}", f"{row.hybrid_dice:.3f}", f"{row.oracle_dice:.3f}"])
    rows.append(["best oracle (better model per image)", "", f"{curve['oracle_dice'].max():.3f}"])
    return [Paragraph(f"Complementary routing: images go to `{omni}` when `{spec}` is least confident "
                      f"(n = {n}); the oracle sends the k images where `{omni}` gains most."),
            table(["% sent", "hybrid Dice", "oracle Dice"], rows, "rrr")]


def _fallback_pair(g: pd.DataFrame, ref: str | None) -> list[tuple[str, str]]:
    """The scatter when a task has no omnimodel or foundation model: the specialist against its best other model."""
    others = g[(g["model"] != ref) & ~g["privileged"]].groupby("model")["dice"].mean()
    return [(ref, others.idxmax())] if ref and len(others) else []


def _pickers(store: Store, task: str) -> dict[str, str]:
    """Which model picked each curated subset of the task (``easiest`` and ``hardest``)."""
    from .findings import subsets_of

    _, chosen = subsets_of(store, task)
    return {s: m for s, m in chosen.items() if s in ("easiest", "hardest")}


def _selection_note(picked_by: dict[str, str], where: str) -> Paragraph:
    """What a reader must know about rows of a subset a model picked by its own score."""
    by = sorted(set(picked_by.values()))
    who = ", ".join(f"`{m}`" for m in by)
    if where == "summary":
        return Paragraph(f"The `easiest` and `hardest` rows are the cases {who} picked by {'its' if len(by) == 1 else 'their'} "
                "own Dice: on them that model's own scores are selected, not measured (high on `easiest`, low on "
                "`hardest` by construction); compare the others there, not it.")
    return Paragraph(f"† the pair includes the model that picked these cases ({who}) by its own score: its gap there is "
            "selection-biased by construction (on its worst cases any other model looks better), not evidence. The "
            "Findings below correct for the selection where a control exists.")


def _distance_unit(store: Store, task: str) -> tuple[str, float]:
    """The unit of the task's boundary distances ('mm' with a configured pixel spacing or on volumes, whose voxel
    spacing is in their files; else 'px') and NSD's tau."""
    from .. import datasets

    recorded = store_runs.last_config(store, task) or {}
    m = recorded.get("metrics") or {}
    try:
        volumetric = datasets.get((recorded.get("dataset") or {}).get("name") or "").volumetric
    except Exception:  # a plugin's kind not loaded here: its unit is not known, say pixels as before
        volumetric = False
    return ("mm" if m.get("spacing") or volumetric else "px"), float(m.get("nsd_tolerance", 2.0))


def _num(v: float, spec: str) -> str:
    return "–" if v is None or pd.isna(v) else format(v, spec)


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if not pd.isna(std) else f"{mean:.3f}"


def _ci(lo: float, hi: float, n: int | None = None) -> str:
    if n is not None and n < stats.MIN_N:
        return f"none: n < {stats.MIN_N}"
    return "–" if pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]"


def _p(p: float, n: int | None = None) -> str:
    if n is not None and n < stats.MIN_N:
        return "–"
    return p_value(p)


def _montage_rows(store: Store, task: str, df: pd.DataFrame, models: list[str], k: int) -> list[dict] | str:
    """Images, truths and masks of the k easiest and k hardest cases; a string says why not."""
    from .recorded import recorded_samples
    from .views import views

    loader = recorded_samples(store, task)
    if isinstance(loader, str):
        return loader
    slicing = (store_runs.last_config(store, task) or {}).get("slices")
    rows = []
    for subset in ("easiest", "hardest"):
        picked = (df[df[f"{subset}_rank"].notna()].drop_duplicates("sample_id")
                  .sort_values(f"{subset}_rank").head(k)["sample_id"])
        for sid in picked:
            sample = loader(sid)
            if sample is None:
                continue
            masks, dice = {}, {}
            for m in models:
                r = df[(df["sample_id"] == sid) & (df["model"] == m)]
                if r.empty:
                    continue
                path = r["mask_path"].iloc[0]
                masks[m] = store_masks.load_mask(store, path) if isinstance(path, str) else None
                dice[m] = float(r["dice"].iloc[0]) if pd.notna(r["dice"].iloc[0]) else np.nan
            for v in views(sample, masks, slicing):  # a volume: its slices that matter
                rows.append({"sample_id": sid, "view": v.label, "subset": subset, "image": v.image, "truth": v.truth,
                             "masks": v.masks, "dice": dice})
    return rows or "no curated cases"


def _runs(store: Store, task: str) -> Paragraph:
    """Which runs ended and which did not (killed, or still writing): a report taken then is still right
    about the pairs it shows, and says what may be missing."""
    states = store_runs.run_states(store, task)
    counts: dict[str, list[int]] = {}
    for run_id, state in sorted(states.items()):
        counts.setdefault(state, []).append(run_id)
    parts = [f"{len(ids)} {state}" + ("" if state in ("finished",) else f" (run {', '.join(map(str, ids))})")
             for state, ids in sorted(counts.items())]
    line = f"Runs: {'; '.join(parts)}."
    if set(counts) - {"finished"}:
        line += (" A run that did not end leaves every pair it recorded complete and the rest undone; "
                 "rerun the same `omniseg run` to finish them.")
    return Paragraph(line)


@dataclass(frozen=True)
class ReportOptions:
    """What `omniseg report` is asked for: the tasks (one, or all), the split, the figures and their montage's
    k, and the specialist / omnimodel named instead of the roles."""

    task: str | None = None
    split: str = "test"
    figures: bool = True
    k: int = 4
    specialist: str | None = None
    omnimodel: str | None = None


@dataclass
class Report:
    """Everything the report folder shows, computed once from the store: the tables (each a CSV), the document
    (report.md and report.html render the same blocks) and the figures to draw. Renderers only format it."""

    options: ReportOptions
    title: str
    preamble: str
    top: list[Block]  # the specialists' training records, before the tasks
    sections: dict[str, list[Block]]  # task -> its part of the document
    per_image: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    units: dict[str, tuple[str, float]]  # task -> (distance unit, NSD's tau)
    claims: pd.DataFrame | None = None
    reviews: pd.DataFrame | None = None
    agreements: pd.DataFrame | None = None
    decompositions: pd.DataFrame | None = None
    routing: pd.DataFrame | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.sections)

    def blocks(self) -> list[Block]:
        """The whole document: title, training records, how to read it, then each task."""
        return [Heading(self.title, 1), *self.top, Paragraph(self.preamble),
                *(b for blocks in self.sections.values() for b in blocks)]

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks() if isinstance(b, Figure)]


@dataclass
class _Gathered:
    """The per-task tables gathered over the tasks while the sections are built."""

    routes: list = field(default_factory=list)
    claims: list = field(default_factory=list)
    reviews: list = field(default_factory=list)
    agreements: list = field(default_factory=list)
    decompositions: list = field(default_factory=list)


def build_report(store: Store, options: ReportOptions = ReportOptions()) -> Report:
    """The report of the store's results: read, summarized, compared and judged; nothing written."""
    df = per_image(store, options.task, options.split)
    summary = summarize(df)
    comparisons = compare(df)
    tasks = sorted(df["task"].unique())
    demo = any(caveats.is_demo(store, t) for t in tasks)
    trained = []  # each task's specialists: their training record and test Dice, judged first
    roles = {}  # task -> (specialists, omnimodels, foundation models, the curation reference)
    for t in tasks:
        g = df[df["task"] == t]
        roles[t] = _roles(store, t, sorted(g["model"].unique()), options.specialist, options.omnimodel,
                          set(g.loc[g["privileged"], "model"]))
        trained += adequacy.records(store, t, roles[t][0], summary)
    gathered = _Gathered()
    units = {t: _distance_unit(store, t) for t in tasks}
    sections = {t: _task_section(store, t, df[df["task"] == t], summary, comparisons, roles[t], trained, gathered,
                                 options, units[t]) for t in tasks}
    claims_df = None
    if gathered.claims:
        claims_df = pd.concat(gathered.claims)
        claims_df["demo"] = [caveats.is_demo(store, t) for t in claims_df["task"]]  # a demo's claims say so per row
    agreements = None
    if gathered.agreements:
        agreements = pd.DataFrame([{**a, "disagreements": " ".join(a["disagreements"])} for a in gathered.agreements],
                                  columns=review_agreement.AGREEMENT_COLUMNS)
    joined = lambda parts: pd.concat(parts) if parts else None  # noqa: E731
    decompositions = joined(gathered.decompositions)
    return Report(options=options,
                  title="omniseg report" + (" — DEMO (generated data, a stand-in omnimodel: no study result)" if demo
                                            else ""),
                  preamble=_preamble(options.split), top=adequacy.top_blocks(trained), sections=sections,
                  per_image=df, summary=summary, comparisons=comparisons,
                  units=units, claims=claims_df,
                  reviews=joined(gathered.reviews), agreements=agreements,
                  decompositions=None if decompositions is None else decompositions[DECOMPOSITION_COLUMNS],
                  routing=joined(gathered.routes))


def write(store: Store, out: str | Path, *, html: bool = True, latex: bool = False, **options) -> dict[str, Path]:
    """Build the report (``options``: :class:`ReportOptions`' fields) and write its folder; returns the paths
    written (figures under ``figures/``, thumbnails of report.html under ``thumbs/``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = build_report(store, ReportOptions(**options))
    paths = write_tables(rep, out)
    paths["manifest"] = out / "manifest.json"
    manifest.write(store, rep.tasks, rep.options.split, paths["manifest"])
    if rep.options.figures:
        (out / "figures").mkdir(exist_ok=True)
        for f in rep.figures():
            f.draw(out / "figures" / f.name)
    if latex:
        from . import latex as latex_mod

        paths["latex"] = latex_mod.write(out / "report.tex", rep)
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(document.markdown(rep.blocks()))
    if html:
        from . import report_html

        paths["html"] = report_html.write(store, out, rep)
    return paths


#: the CSV files of the report folder, each written when it has a row (docs/outputs.md lists their columns)
_CSV = (("per_image", "per_image.csv", None), ("summary", "summary.csv", "%.6f"),
        ("comparisons", "comparisons.csv", "%.6g"), ("claims", "claims.csv", "%.6g"), ("review", "review.csv", "%.6g"),
        ("review_agreement", "review_agreement.csv", "%.6g"), ("decomposition", "decomposition.csv", "%.6f"),
        ("routing", "routing.csv", "%.6f"))


def write_tables(rep: Report, out: Path) -> dict[str, Path]:
    """The report's tables as CSV files in ``out``: per_image, summary and comparisons always, the others where they
    have a row."""
    frames = {"per_image": rep.per_image, "summary": rep.summary, "comparisons": rep.comparisons,
              "claims": rep.claims, "review": rep.reviews, "review_agreement": rep.agreements,
              "decomposition": rep.decompositions, "routing": rep.routing}
    paths = {}
    for key, name, fmt in _CSV:
        if frames[key] is not None:
            paths[key] = out / name
            frames[key].to_csv(paths[key], index=False, float_format=fmt)
    return paths


def _preamble(split: str) -> str:
    return (f"Split `{split}`. Per image: Dice and IoU as mean ± standard deviation, median, and a 95% percentile "
            "bootstrap interval of the mean; failed predictions count as empty masks (see failure rate). "
            "Comparisons are paired on the images both models scored: mean difference (A − B) with its bootstrap "
            f"interval, Wilcoxon signed-rank p-value, and wins/ties/losses of A. Below {stats.MIN_N} images no "
            "interval, p-value or verdict is given: it would mean nothing. `manifest.json` says what produced every "
            "number.")


def _task_section(store: Store, t: str, g: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame, roles,
                  trained: list, gathered: _Gathered, options: ReportOptions, unit: tuple[str, float]) -> list[Block]:
    """One task's part of the document (its tables gathered into ``gathered``)."""
    models = sorted(g["model"].unique())
    cautions = [f"**Undertrained specialist** `{r.model}`: {r.why()}." for r in trained
                if r.task == t and not r.adequate] + caveats.lines(store, t, summary[summary["task"] == t])
    tag = caveats.demo_tag(store, t)
    privileged = set(g.loc[g["privileged"], "model"])
    mark = lambda m: f"{m} (privileged)" if m in privileged else m  # noqa: E731
    md: list[Block] = [Heading(f"{t}{tag}", 2)]
    if cautions:
        md += [Paragraph("Read this first:"), Bullets(tuple(cautions))]
    md += [_runs(store, t), _scores(store, t, summary[summary["task"] == t], mark, unit)]
    if privileged:
        md.append(Paragraph(f"**Privileged** ({', '.join(f'`{m}`' for m in sorted(privileged))}): told where the target "
                            "is (SAM 3's box-oracle prompts with the reference mask's bounding box). An upper bound of "
                            "what a prompt can do, not a contender: left out of the claims and the routing."))
    md += _localisation(g, summary[(summary["task"] == t) & (summary["subset"] == "all")], mark)
    md += _comparisons(_pickers(store, t), comparisons[comparisons["task"] == t], mark)
    specs, omnis, founds, ref = roles
    split_up = decomposition(g, store_runs.signatures(store, t), specs)
    md += _decomposition(split_up)
    gathered.decompositions += [d.assign(task=t) for d in split_up]
    curves = {}
    for sp, om in [(sp, om) for sp in specs for om in omnis + founds if sp != om]:
        curve = route(g, sp, om)
        if curve is None:
            md.append(Paragraph(f"Routing: `{sp}` recorded no confidence (no probability map), so no routing curve to "
                                f"`{om}`."))
            continue
        curve.insert(0, "task", t)
        curve.insert(1, "specialist", sp)
        curve.insert(2, "omnimodel", om)
        gathered.routes.append(curve)
        curves[(sp, om)] = curve
        md += _routing(curve, sp, om)
    stem = file_name(t)  # a task name from the store never reaches a path unchecked
    blocks, table_ = findings.section(store, t, g, ref, omnis, options.figures, stem, foundations=founds)
    if any(r.task == t and r.model == ref and not r.adequate for r in trained):
        blocks = [Heading(b.text + f" — against an undertrained specialist (`{ref}`: see the top)", b.level)
                  if isinstance(b, Heading) and b.text.startswith("Findings") else b for b in blocks]
    md += blocks
    if table_ is not None:
        gathered.claims.append(table_)
    contenders = [(o, "omnimodel") for o in omnis if o != ref] + [(f, "foundation") for f in founds if f != ref]
    blocks, table_, reviewed, agreed = review_claim.section(store, t, g, ref, contenders, store_runs.roles(store, t))
    md += blocks
    for kept, part in ((gathered.claims, table_), (gathered.reviews, reviewed), (gathered.agreements, agreed)):
        if part is not None:
            kept.append(part)
    if options.figures:
        md += [Heading(f"Figures{tag}", 3), *_figures(store, t, g, models, ref, omnis + founds, curves, options.k)]
    return md


def _scores(store: Store, t: str, summary: pd.DataFrame, mark, distance: tuple[str, float]) -> Table:
    """The task's table of scores per subset and model (``distance``: the unit of HD95 and NSD, and NSD's tau)."""
    unit, tau = distance
    rows = []
    for r in summary.itertuples(index=False):
        rows.append([r.subset, mark(r.model), r.n, _fmt(r.dice_mean, r.dice_std), f"{r.dice_median:.3f}",
                     _ci(r.dice_ci_low, r.dice_ci_high, r.n), _fmt(r.iou_mean, r.iou_std), f"{r.precision_mean:.3f}",
                     f"{r.recall_mean:.3f}", _num(r.hd95_median, ".2f"),
                     _num(getattr(r, "nsd_mean", float("nan")), ".3f"),
                     "–" if pd.isna(r.failure_rate) else f"{r.failure_rate:.1%}"])
    return table(["subset", "model", "n", "Dice (demo)" if caveats.is_demo(store, t) else "Dice", "median", "95% CI",
                  "IoU", "precision", "recall", f"HD95 ({unit}), median", f"NSD (τ = {tau:g} {unit})", "failure rate"],
                 rows, "llrlrllrrrrr")


def _comparisons(picked_by: dict, cmp_t: pd.DataFrame, mark) -> list[Block]:
    """The selection note and the task's paired comparisons, † where a model is compared on cases it picked."""
    md: list[Block] = [_selection_note(picked_by, "summary")] if len(picked_by) else []
    if not len(cmp_t):
        return md
    tested = int(cmp_t["p_wilcoxon"].notna().sum())
    rows = []
    for r in cmp_t.itertuples(index=False):
        biased = " †" if picked_by.get(r.subset) in (r.model_a, r.model_b) else ""
        rows.append([r.subset, f"{mark(r.model_a)} − {mark(r.model_b)}{biased}", r.n, f"{r.mean_diff:+.3f}",
                     _ci(r.diff_ci_low, r.diff_ci_high, r.n), _p(r.p_holm, r.n), f"{r.wins} / {r.ties} / {r.losses}"])
    md += [Paragraph("Paired comparisons (Dice):"),
           table(["subset", "A − B", "n", "mean difference", "95% CI", "Wilcoxon p" + (" (Holm)" if tested > 1 else ""),
                  "A wins / ties / losses"], rows, "llrrlrl")]
    if tested > 1:
        md.append(Paragraph(f"p-values adjusted for the {tested} comparisons of this table (Holm's step-down method, "
                            "family-wise error); comparisons.csv keeps the raw ones (p_wilcoxon) beside them "
                            "(p_holm)."))
    if any(picked_by.get(r.subset) in (r.model_a, r.model_b) for r in cmp_t.itertuples(index=False)):
        md.append(_selection_note(picked_by, "paired"))
    return md


def _figures(store: Store, t: str, g: pd.DataFrame, models: list[str], ref: str | None, contenders: list[str],
             curves: dict, k: int) -> list[Block]:
    """The task's figures, each with what draws it."""
    from . import figures as fig

    stem = file_name(t)
    bp = g.assign(subset_all=True, subset_easiest=g["easiest_rank"].notna(), subset_hardest=g["hardest_rank"].notna())
    md: list[Block] = [Figure(f"{stem}_boxplots.png", f"{t} box plots",
                              lambda path: fig.boxplots(bp, models, path, f"{t}: Dice per image"))]
    # the specialist against each contender; with none, against its best floor (never two floors)
    against = [(ref, om) for om in contenders if ref and om != ref] or _fallback_pair(g, ref)
    for x, y in against:
        wide = g.pivot(index="sample_id", columns="model", values="dice")[[x, y]].dropna()
        ranks = g.drop_duplicates("sample_id").set_index("sample_id")
        subset = np.where(ranks.loc[wide.index, "easiest_rank"].notna(), "easiest",
                          np.where(ranks.loc[wide.index, "hardest_rank"].notna(), "hardest", "other"))
        name = f"{stem}_scatter.png" if len(against) == 1 else f"{stem}_scatter_{file_name(y, 60)}.png"
        md.append(Figure(name, f"{t} paired scatter", functools.partial(
            fig.paired_scatter, wide.assign(subset=subset), x, y, title=f"{t}: {x} against {y}, per image")))
    for (sp, om), curve in curves.items():
        name = f"{stem}_routing.png" if len(curves) == 1 else f"{stem}_routing_{file_name(sp, 60)}_{file_name(om, 60)}.png"
        md.append(Figure(name, f"{t} routing", functools.partial(fig.routing_plot, curve, sp, om,
                                                                 title=f"{t}: complementary routing")))
    rows = _montage_rows(store, t, g, models, k)
    if isinstance(rows, str):
        md.append(Paragraph(f"(case montage skipped: {rows})"))
    else:
        md.append(Figure(f"{stem}_cases.png", f"{t} easiest and hardest cases", functools.partial(
            fig.montage, rows, models, title=f"{t}: {k} easiest and {k} hardest cases (outline: ground truth)")))
    return md

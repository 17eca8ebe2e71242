"""`omniseg report --latex`: the report's main tables as booktabs LaTeX, ready for a paper.

One standalone document (``report.tex``, compiles with ``pdflatex``; only ``booktabs`` beyond LaTeX itself), per
task: the summary (Dice with its 95% interval, IoU, HD95 and NSD in the task's unit), the paired comparisons
(mean difference, interval, Holm-adjusted Wilcoxon p) and the claims (estimate, interval, Holm-adjusted permutation
p, verdict). The numbers are summary.csv's, comparisons.csv's and claims.csv's, formatted as in report.md; copy
a table's ``tabular`` into a paper as it is.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "−": "--", "–": "--", "±": r"$\pm$", "τ": r"$\tau$", "†": r"\dag{}", "→": r"$\to$"}


def escape(text: object) -> str:
    """Any text as LaTeX that prints it (model names, sample ids and verdicts hold _ & % and the like); characters
    outside ASCII that LaTeX's default fonts lack are replaced by '?'."""
    out = []
    for ch in str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ord(ch) < 128 and (ch.isprintable() or ch == " "):
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def num(v: float, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "--"
    return format(v, spec).replace("-", "$-$") if spec.startswith("+") or v < 0 else format(v, spec)


def ci(lo: float, hi: float) -> str:
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (lo, hi)):
        return "--"
    return f"[{num(lo)}, {num(hi)}]"


def p_value(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "--"
    return "$<$0.001" if p < 0.001 else f"{p:.3f}"


def _table(caption: str, header: list[str], align: str, rows: list[list[str]]) -> list[str]:
    return [r"\begin{table}[htbp]", r"\centering", r"\small", rf"\caption{{{caption}}}",
            rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule",
            *[" & ".join(r) + r" \\" for r in rows], r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def document(tasks: list[str], summary: pd.DataFrame, comparisons: pd.DataFrame, claims: pd.DataFrame | None,
             units: dict[str, tuple[str, float]]) -> str:
    """The .tex text; ``units``: task -> (distance unit, NSD tolerance)."""
    lines = [r"\documentclass{article}", r"\usepackage{booktabs}", r"\begin{document}", ""]
    for t in tasks:
        unit, tau = units.get(t, ("px", 2.0))
        lines.append(rf"\section*{{{escape(t)}}}")
        part = summary[summary["task"] == t]
        rows = [[escape(r.subset), escape(r.model) + (r" (privileged)" if r.privileged else ""), str(r.n),
                 f"{num(r.dice_mean)} $\\pm$ {num(r.dice_std)}", ci(r.dice_ci_low, r.dice_ci_high), num(r.iou_mean),
                 num(r.hd95_median, ".2f"), num(getattr(r, "nsd_mean", float("nan")))] for r in part.itertuples()]
        lines += _table(f"{escape(t)}: Dice (mean $\\pm$ SD, 95\\% bootstrap interval), IoU, HD95 ({unit}, median) "
                        f"and NSD ($\\tau$ = {tau:g} {unit}) per model and subset.",
                        ["subset", "model", "n", "Dice", "95\\% CI", "IoU", f"HD95 ({unit})", "NSD"], "llrlllrr", rows)
        cmp_t = comparisons[comparisons["task"] == t]
        if len(cmp_t):
            rows = [[escape(r.subset), f"{escape(r.model_a)} -- {escape(r.model_b)}", str(r.n), num(r.mean_diff, "+.3f"),
                     ci(r.diff_ci_low, r.diff_ci_high), p_value(r.p_holm), f"{r.wins}/{r.ties}/{r.losses}"]
                    for r in cmp_t.itertuples()]
            lines += _table(f"{escape(t)}: paired Dice comparisons; p: Wilcoxon signed-rank, Holm-adjusted over the "
                            f"{int(cmp_t['p_wilcoxon'].notna().sum())} comparisons of this table.",
                            ["subset", "A -- B", "n", "mean difference", "95\\% CI", "p (Holm)", "wins/ties/losses"],
                            "llrrlrl", rows)
        cl = claims[claims["task"] == t] if claims is not None and len(claims) else None
        if cl is not None and len(cl):
            rows = [[escape(r.claim), escape(r.analysis), escape(r.selected_by),
                     f"{escape(r.specialist)} -- {escape(r.omnimodel)}",
                     str(r.n_a) if r.n_b == 0 else f"{r.n_a}/{r.n_b}", num(r.estimate, "+.3f"), ci(r.ci_low, r.ci_high),
                     p_value(getattr(r, "p_holm", float("nan"))), escape(r.verdict)] for r in cl.itertuples()]
            lines += _table(f"{escape(t)}: the study's claims; p: permutation, Holm-adjusted within each contender's "
                            "table; verdicts follow the 95\\% intervals.",
                            ["claim", "analysis", "picked by", "A -- B", "n", "estimate", "95\\% CI", "p (Holm)",
                             "verdict"], "lllllrlrp{4cm}", rows)
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


def write(path: Path, rep) -> Path:
    """``rep`` (a :class:`omniseg.study.report.Report`) as ``path``."""
    path.write_text(document(rep.tasks, rep.summary, rep.comparisons, rep.claims, rep.units))
    return path

"""Paper output (issue 39): booktabs LaTeX that compiles and carries summary.csv's numbers, every figure also as
SVG, the specialist against a contender as the default scatter, outlines that stand out, tick labels that do not
overlap, and the lesion-size plot in the table's quartiles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_kvasir, write_config
from omniseg.cli import app
from omniseg.study import figures, latex

MODELS = ("  - name: spec\n    kind: otsu\n    role: specialist\n    options: {foreground: bright, sigma: 1.0}\n"
          "  - name: omni_1\n    kind: ellipse\n    role: omnimodel\n    options: {radius: 0.2}\n"
          "  - name: floor\n    kind: ellipse\n    options: {radius: 0.3}\n")


def _report(tmp_path, models: str = MODELS, *extra: str) -> Path:
    root = make_kvasir(tmp_path / "k", n=24)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models, "curation:\n  reference: spec\n")
    store, out = tmp_path / "runs" / "s.sqlite", tmp_path / "rep"
    for args in (["run", "--config", str(cfg), "--store", str(store), "-q"],
                 ["curate", "--store", str(store), "-n", "5", "-q"],
                 ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-html", *extra]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    return out


def test_report_latex_compiles_and_its_numbers_are_the_csvs(tmp_path):
    out = _report(tmp_path, MODELS, "--latex")
    tex = (out / "report.tex").read_text()
    summary = pd.read_csv(out / "summary.csv")
    for r in summary.itertuples():
        row = f"{r.subset} & {latex.escape(r.model)} & {r.n} & {r.dice_mean:.3f} $\\pm$ {r.dice_std:.3f} & "
        assert row in tex, row
    comparisons = pd.read_csv(out / "comparisons.csv")
    for r in comparisons.itertuples():
        assert f"& {latex.p_value(r.p_holm)} & {r.wins}/{r.ties}/{r.losses}" in tex
    assert r"\usepackage{booktabs}" in tex and r"\toprule" in tex and "Holm-adjusted" in tex
    assert r"omni\_1" in tex  # an underscore in a model name is escaped, not a subscript
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed here (Debian: texlive-latex-base, texlive-latex-recommended)")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=out,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (out / "report.pdf").stat().st_size > 1000


def test_every_figure_is_also_an_svg_and_the_scatter_is_the_specialist_against_the_contender(tmp_path):
    out = _report(tmp_path)
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs and all(p.with_suffix(".svg").is_file() for p in pngs)
    assert {p.name for p in pngs} >= {"polyp_scatter.png", "polyp_boxplots.png", "polyp_cases.png"}
    svg = (out / "figures" / "polyp_scatter.svg").read_text()
    assert "spec Dice" in svg and "omni_1 Dice" in svg  # the specialist against the omnimodel, not two floors
    first = {p.name: p.read_bytes() for p in (out / "figures").glob("*.svg")}
    again = _report(tmp_path / "again")
    assert {p.name: p.read_bytes() for p in (again / "figures").glob("*.svg")} == first  # deterministic


def test_without_a_contender_the_scatter_is_the_specialist_against_its_best_floor(tmp_path):
    models = MODELS.replace("    role: omnimodel\n", "")
    out = _report(tmp_path, models)
    svg = (out / "figures" / "polyp_scatter.svg").read_text()
    summary = pd.read_csv(out / "summary.csv").set_index(["subset", "model"])
    best = max(("omni_1", "floor"), key=lambda m: summary.loc[("all", m), "dice_mean"])
    assert "spec Dice" in svg and f"{best} Dice" in svg


def test_the_lesion_size_plot_uses_the_tables_quartiles_and_its_tick_labels_do_not_overlap(tmp_path):
    rng = np.random.default_rng(0)
    share = np.exp(rng.uniform(np.log(0.004), np.log(0.6), 200))
    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(200)] * 2, "model": ["a"] * 200 + ["b"] * 200,
                       "lesion_share": np.concatenate([share, share]), "dice": rng.uniform(0, 1, 400)})
    edges = np.quantile(share, [0, 0.25, 0.5, 0.75, 1])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    real_save = figures._save

    def keep(fig, path, dpi):
        fig.canvas.draw()
        ax = fig.axes[0]
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent() for t in labels]
        made.append(([t.get_text() for t in labels], boxes, [line.get_xdata() for line in ax.get_lines()]))
        return real_save(fig, path, dpi)

    figures._save = keep
    try:
        figures.dice_vs_size(df, ["a", "b"], tmp_path / "size.png", "t", edges)
    finally:
        figures._save = real_save
    texts, boxes, lines = made[0]
    assert len(texts) >= 2 and all(t.endswith("%") for t in texts)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (texts[i], texts[j])
    assert sum(len(x) == 4 for x in lines) == 2  # one point per quartile of the table, per model
    plt.close("all")


def test_the_reference_outline_takes_the_colour_that_stands_out_and_a_width_for_the_image():
    pink = np.zeros((500, 600, 3), np.uint8)
    pink[...] = (200, 110, 110)  # endoscopy's tissue: green outlines were lost on it
    ref = np.zeros((500, 600), bool)
    ref[100:300, 150:400] = True
    out = figures.overlay(pink, None, ref=ref)
    edge = figures.outline(ref, figures.outline_width(ref.shape))
    colour = tuple(int(v) for v in out[edge][0])
    assert colour == figures.outline_colour(pink, edge) and colour != (40, 220, 40)
    dist = lambda c: float(np.linalg.norm(np.array(c, float) - (200, 110, 110)))  # noqa: E731
    assert dist(colour) == max(dist(c) for c in figures.OUTLINES)
    assert figures.outline_width(ref.shape) == 2 and edge[100:102, 200].all() and not edge[102, 200]
    assert figures.outline_width((40, 50)) == 1


KVASIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "kvasir-seg" / "Kvasir-SEG"


@pytest.mark.skipif(not (KVASIR / "images").is_dir(), reason="real Kvasir-SEG not at ../shared/data (see data/README.md)")
def test_on_real_kvasir_seg_the_outline_stands_out_more_than_green_did():
    from omniseg.datasets.base import read_mask
    from PIL import Image

    gains = []
    for img_path in sorted((KVASIR / "images").glob("*.jpg"))[:40]:
        image = np.asarray(Image.open(img_path).convert("RGB"))
        ref = read_mask(KVASIR / "masks" / img_path.name)
        edge = figures.outline(ref, figures.outline_width(ref.shape))
        under = image[edge].astype(float)
        chosen = figures.outline_colour(image, edge)
        d = lambda c: float(np.linalg.norm(under - np.array(c, float), axis=1).mean())  # noqa: E731
        gains.append(d(chosen) - d((40, 220, 40)))
        assert d(chosen) >= 150, img_path.name  # far from the tissue under it, whatever the image
    assert np.mean(gains) > 20

"""omniseg.study.findings: run -> curate with the controls -> report shows the claims side by side."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from omniseg.cli import app

from conftest import make_kvasir, write_config

MODELS = ("  - name: s1\n    kind: otsu\n    options: {foreground: bright, sigma: 1.0}\n"
          "  - name: s2\n    kind: otsu\n    options: {foreground: bright, sigma: 2.5}\n"
          "  - name: omni\n    kind: ellipse\n    options: {radius: 0.2}\n")


def test_claims_with_every_control_reach_the_report_and_the_manifest(tmp_path):
    root = make_kvasir(tmp_path / "k", n=48, size=(72, 96))
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, MODELS, "curation:\n  reference: s1\n")
    store, out = tmp_path / "s.sqlite", tmp_path / "rep"
    cli = CliRunner()
    assert cli.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"]).exit_code == 0
    r = cli.invoke(app, ["curate", "--store", str(store), "-n", "10", "--control", "s2", "--strata"])
    assert r.exit_code == 0, r.output
    assert "controls stored: contrast-high (12), contrast-low (12), easiest@s2 (10), hardest@s2 (10), " \
           "lesion-large (12), lesion-small (12)" in r.output
    r = cli.invoke(app, ["report", "--store", str(store), "--out", str(out), "--split", "all", "--omnimodel", "omni"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "claims.csv")
    hard = table[table["claim"] == "hardest"].set_index("analysis")
    assert list(hard.index) == ["raw", "independent reference", "selection alone", "null-corrected", "lesion size",
                                "contrast"]
    assert hard.loc["null-corrected", "estimate"] == pytest_approx(
        hard.loc["raw", "estimate"] - hard.loc["selection alone", "estimate"])
    assert (hard.loc["raw", "n_a"], hard.loc["raw", "n_b"]) == (10, 10)
    tests = table[table["analysis"] != "selection alone"]
    assert set(tests["verdict"].str.split().str[0]) <= {"supported", "not", "inconclusive"}
    assert (table[table["analysis"] == "selection alone"]["verdict"] == "control: what selection alone explains").all()
    md = (out / "report.md").read_text()
    assert "### Findings" in md and "second specialist `s2`" in md
    assert "- **The omnimodel holds up better on the hardest cases (the gap shrinks)**:" in md
    assert "| lesion share |" in md and (out / "figures" / "polyp_dice_vs_size.png").is_file()
    subsets = {s["subset"]: s for s in json.loads((out / "manifest.json").read_text())["tasks"]["polyp"]["subsets"]}
    assert subsets["easiest"]["chosen_by"] == "s1" and subsets["easiest"]["chosen_by_is_compared"] is True
    assert subsets["hardest@s2"]["chosen_by"] == "s2"
    assert subsets["lesion-small"]["chosen_by"] == "image" and subsets["lesion-small"]["chosen_by_is_compared"] is False


def pytest_approx(v):
    import pytest

    return pytest.approx(v, abs=1e-9)


def test_without_a_control_the_verdict_says_it_is_uncorrected(tmp_path):
    root = make_kvasir(tmp_path / "k", n=20)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, MODELS, "curation:\n  reference: s1\n")
    store, out = tmp_path / "s.sqlite", tmp_path / "rep"
    cli = CliRunner()
    cli.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    cli.invoke(app, ["curate", "--store", str(store), "-n", "5"])
    r = cli.invoke(app, ["report", "--store", str(store), "--out", str(out), "--split", "all", "--omnimodel", "omni",
                         "--no-figures"])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "No second specialist" in md and "not corrected for that selection" in md
    assert set(pd.read_csv(out / "claims.csv")["analysis"]) == {"raw"}

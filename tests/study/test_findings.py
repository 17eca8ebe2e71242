"""omniseg.study.findings: run -> curate with the controls -> report shows the claims side by side."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from omniseg.cli import app

from conftest import make_kvasir, write_config
from omniseg.store import subsets as store_subsets

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


# -- the section from a store written by hand: what it says is what the claims table and the scores hold ----------
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from omniseg.store.database import Store  # noqa: E402
from omniseg.study import claims, document, findings  # noqa: E402


def _lines(blocks) -> list[str]:
    """The blocks as report.md shows them, line by line."""
    return document.markdown(blocks).splitlines()


def _section(*args, **kwargs):
    blocks, table = findings.section(*args, **kwargs)
    return _lines(blocks), table


def _scores(n: int, seed: int = 3) -> pd.DataFrame:
    """n images, three models; image i's lesion covers (i + 1) of 1000 pixels, so its share is (i + 1) / 1000."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for model, base in (("s1", 0.8), ("s2", 0.7), ("omni", 0.6)):
            rows.append({"sample_id": f"img{i:02d}", "model": model, "dice": float(np.clip(base + rng.normal(0, 0.1), 0, 1)),
                         "tp": 0, "fp": 0, "fn": i + 1, "tn": 1000 - (i + 1), "ref_px": i + 1})
    return pd.DataFrame(rows)


def _subsets(store: Store, g: pd.DataFrame, k: int = 12, second: bool = True, first: bool = True) -> None:
    rows = []
    for ref in ("s1",) * first + ("s2",) * second:
        order = g[g["model"] == ref].sort_values(["dice", "sample_id"], ascending=[False, True])["sample_id"].tolist()
        suffix = "" if ref == "s1" else f"@{ref}"
        for subset, ids in ((f"easiest{suffix}", order[:k]), (f"hardest{suffix}", order[::-1][:k])):
            rows += [{"subset": subset, "rank": r, "sample_id": s, "split": "test", "reference": ref, "metric": "dice",
                      "value": 0.0} for r, s in enumerate(ids)]
    store_subsets.set_subsets(store, "t", rows)


def test_the_section_states_each_headline_verdict_and_every_row_of_the_claims_table(tmp_path):
    g = _scores(41)
    with Store(tmp_path / "s.sqlite") as st:
        _subsets(st, g)
        ids, chosen = findings.subsets_of(st, "t")
        assert ids["easiest"] == g[g["model"] == "s1"].sort_values(["dice", "sample_id"], ascending=[False, True])[
            "sample_id"].tolist()[:12]
        assert chosen == {"easiest": "s1", "hardest": "s1", "easiest@s2": "s2", "hardest@s2": "s2"}
        assert findings.second_specialist(chosen) == "s2"
        md, table = _section(st, "t", g, "s1", ["omni", "s1"], False, "t", foundations=["s2"])
    wide = g.pivot(index="sample_id", columns="model", values="dice")
    expected = claims.findings(wide, ids, task="t", specialist="s1", omnimodel="omni", second="s2",
                               claims=tuple(claims.CLAIMS))
    got = table[table["contender_role"] == "omnimodel"].drop(columns="contender_role").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    assert table["contender_role"].tolist() == ["omnimodel"] * len(expected) + ["foundation"] * len(expected)
    text = "\n".join(md)
    assert md[:2] == ["### Findings", ""]
    assert "Specialist `s1` (it picked the easiest and hardest cases), omnimodel `omni`, second specialist `s2` for " \
           "the controls." in md
    assert "Specialist `s1` (it picked the easiest and hardest cases), foundation model `s2`, second specialist " \
           "`s2` for the controls." in md
    for claim in claims.CLAIMS:
        row = claims.headline(expected, claim)
        line = next(x for x in md if x.startswith(f"- **{claims.CLAIMS[claim].capitalize()}**"))
        assert line.startswith(f"- **{claims.CLAIMS[claim].capitalize()}**: {row['verdict']} (")
        assert f"specialist − omnimodel Dice {row['estimate']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]" in line
        p = "<0.001" if row["p_holm"] < 0.001 else f"{row['p_holm']:.3f}"
        assert line.endswith(f"permutation p {p} (Holm)).")  # adjusted over the table's tests, and said so
        basis = {"null-corrected": "after subtracting the gap change selection alone produces",
                 "independent reference": "cases picked by the second specialist"}.get(row["analysis"], "all cases")
        assert f"({basis}; " in line, (claim, row["analysis"], line)
    for r in expected.itertuples(index=False):
        n = f"{r.n_a}" if r.n_b == 0 else f"{r.n_a} / {r.n_b}"
        p = "–" if pd.isna(r.p_holm) else "<0.001" if r.p_holm < 0.001 else f"{r.p_holm:.3f}"
        ci = "[–, –]" if pd.isna(r.ci_low) else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        est = "–" if pd.isna(r.estimate) else f"{r.estimate:+.3f}"
        assert f"| {r.claim} | {r.analysis} | {r.selected_by} | {r.specialist} − {r.omnimodel} | {n} | {est} | {ci} | {p} | {r.verdict} |" \
            in md, r
    assert text.count("| claim | analysis | cases picked by | A − B | n | estimate | 95% CI | p (Holm) | verdict |") == 2
    tested = int(expected["p_value"].notna().sum())
    assert text.count(f"p-values adjusted for the {tested} tests of this table (Holm's step-down method)") == 2
    # Dice by lesion size: 41 shares 0.001..0.041, quartile edges 0.011, 0.021, 0.031: 10, 10, 10 and 11 images
    start = md.index("Dice by reference lesion size (quartiles of the lesion's share of the image):")
    assert md[start + 2:start + 4] == ["| lesion share | n | `omni` | `s1` | `s2` |", "|---|---:|---:|---:|---:|"]
    edges = ["0.001", "0.011", "0.021", "0.031", "0.041"]
    for q, lo, hi in ((0, 0, 10), (1, 10, 20), (2, 20, 30), (3, 30, 41)):
        part = g[g["sample_id"].isin([f"img{i:02d}" for i in range(lo, hi)])]
        means = [f"{part[part['model'] == m]['dice'].mean():.3f}" for m in ("omni", "s1", "s2")]
        assert md[start + 4 + q] == f"| {edges[q]}–{edges[q + 1]} | {hi - lo} | " + " | ".join(means) + " |"
    assert len(md) == start + 8  # no figure asked for


def test_without_a_second_specialist_the_raw_rows_are_marked_biased_and_few_images_have_no_size_table(tmp_path):
    g = _scores(7)
    with Store(tmp_path / "s.sqlite") as st:
        _subsets(st, g, k=3, second=False)
        md, table = _section(st, "t", g, "s1", ["omni"], False, "t")
        none_md, none_table = _section(st, "t", g, None, ["omni"], False, "t")
        only_self, _ = _section(st, "t", g, "omni", ["omni"], False, "t")
    assert set(table["analysis"]) == {"raw"} and set(table["contender_role"]) == {"omnimodel"}
    easiest = next(x for x in md if x.startswith("- **The specialist wins on the easiest cases**"))
    assert easiest.startswith(f"- **The specialist wins on the easiest cases**: {claims.UNTESTABLE} (biased raw figure: ")
    whole = next(x for x in md if x.startswith("- **The specialist wins on the whole test set**"))
    assert "(all cases; " in whole
    assert any(x.startswith("Specialist `s1` (it picked the easiest and hardest cases), omnimodel `omni`. No second "
                            "specialist") for x in md)
    assert not any(x.startswith("Dice by reference lesion size") for x in md)  # 7 images: under 8
    assert none_table is None and none_md[2].startswith("No claims tested:")
    assert only_self[2].startswith("No claims tested:")  # the specialist is no contender of its own
    g8 = _scores(8)
    assert _lines(findings._by_size(g8, False, "t"))[0] == "Dice by reference lesion size (quartiles of the lesion's share of the image):"
    no_lesion = g8.assign(ref_px=0)
    assert findings._by_size(no_lesion, False, "t") == []  # no image with a lesion to measure


def test_dice_by_size_needs_scores_and_prints_its_bands():
    assert findings._by_size(_scores(8).assign(dice=np.nan), False, "t") == []
    with_size = _lines(findings._by_size(_scores(8), False, "t"))
    assert len(with_size) == 2 + 2 + 4 and pytest.approx(0.001) == float(with_size[4].split(" | ")[0][2:7])


def test_with_image_strata_only_the_headline_rests_on_lesion_size_then_contrast(tmp_path):
    g = _scores(41)
    share = {f"img{i:02d}": i for i in range(41)}
    by_share = sorted(share, key=share.get)
    with Store(tmp_path / "s.sqlite") as st:
        _subsets(st, g, second=False)
        rows = [r for r in st.query("SELECT * FROM subsets WHERE task = 't'").to_dict("records")]
        for subset, ids in (("lesion-small", by_share[:12]), ("lesion-large", by_share[-12:]),
                            ("contrast-low", by_share[1::3][:12]), ("contrast-high", by_share[2::3][:12])):
            rows += [{"subset": subset, "rank": r, "sample_id": s, "split": "test", "reference": "image",
                      "metric": "share", "value": 0.0} for r, s in enumerate(ids)]
        store_subsets.set_subsets(st, "t", rows)
        md, table = _section(st, "t", g, "s1", ["omni"], False, "t")
        only_contrast = [r for r in rows if not r["subset"].startswith("lesion")]
        store_subsets.set_subsets(st, "t", only_contrast)
        md2, table2 = _section(st, "t", g, "s1", ["omni"], False, "t")
    hardest = [x for x in md if x.startswith("- **The omnimodel holds up better")][0]
    assert "(largest against smallest lesions, chosen from the images; " in hardest
    assert claims.headline(table, "hardest")["analysis"] == "lesion size"
    hardest2 = [x for x in md2 if x.startswith("- **The omnimodel holds up better")][0]
    assert "(highest against lowest contrast, chosen from the images; " in hardest2
    assert "contrast" in set(table2["analysis"]) and "lesion size" not in set(table2["analysis"])


def test_the_second_specialists_lists_alone_head_the_claims_and_a_foundation_models_claims_name_it(tmp_path):
    g = _scores(41)
    with Store(tmp_path / "s.sqlite") as st:
        _subsets(st, g, first=False)  # only easiest@s2 / hardest@s2: no null correction, the independent reference
        md, table = _section(st, "t", g, "s1", ["omni", "s1"], False, "t", foundations=["s2"])
        assert set(table["analysis"]) == {"independent reference", "raw"}
        for word in ("omnimodel", "foundation model"):
            assert any(x.startswith("- **The specialist wins on the easiest cases**: ")
                       and f"(cases picked by the second specialist; specialist − {word} Dice" in x for x in md), word
        assert any(x.startswith("- **The foundation model holds up better on the hardest cases") for x in md)
        _subsets(st, g, k=1)  # lists of one case each
        assert findings.subsets_of(st, "t")[1] == {"easiest": "s1", "hardest": "s1", "easiest@s2": "s2",
                                                  "hardest@s2": "s2"}

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from test_curate import seeded_store

from omniseg.study import report
from omniseg.study.curate import curate
from omniseg.store import results as store_results


def test_summary_matches_a_hand_computation(store_path, tmp_path):
    st = seeded_store(store_path, {"a": 0.2, "b": 0.4, "c": 0.6, "d": 0.8})
    store_results.record(st, 1, "t", "a", "omni", status="error", reason="blocked", scores={"dice": 0.0, "iou": 0.0})
    store_results.record(st, 1, "t", "b", "omni", status="ok", scores={"dice": 0.5, "iou": 0.25})
    store_results.record(st, 1, "t", "c", "omni", status="ok", scores={"dice": 0.7, "iou": 0.5})
    store_results.record(st, 1, "t", "d", "omni", status="sample_error", reason="unreadable")
    curate(st, "t", 1)
    paths = report.write(st, tmp_path / "rep", split="test")
    per_image = pd.read_csv(paths["per_image"])
    summary = pd.read_csv(paths["summary"]).set_index(["subset", "model"])
    assert len(per_image) == 8
    omni = summary.loc[("all", "omni")]
    assert omni["n"] == 3 and omni["failures"] == 1 and omni["not_scored"] == 1
    assert omni["failure_rate"] == pytest.approx(1 / 3)
    assert omni["dice_mean"] == pytest.approx(np.mean([0.0, 0.5, 0.7]), abs=1e-6)
    assert omni["dice_std"] == pytest.approx(np.std([0.0, 0.5, 0.7], ddof=1), abs=1e-6)
    assert summary.loc[("hardest", "omni")]["dice_mean"] == 0.0  # "a" is the hardest for ref
    assert summary.loc[("easiest", "ref")]["dice_mean"] == pytest.approx(0.8)
    # every summary number recomputed from the per-image CSV
    for (subset, model), row in summary.iterrows():
        part = per_image[per_image["model"] == model]
        if subset != "all":
            part = part[part[f"{subset}_rank"].notna()]
        part = part[part["dice"].notna()]
        assert row["n"] == len(part)
        assert row["iou_mean"] == pytest.approx(part["iou"].mean(), abs=1e-6, nan_ok=True)
    md = paths["markdown"].read_text()
    assert "| all | omni | 3 | 0.400 ± 0.361 |" in md and "33.3%" in md


def test_full_report_folder_is_complete_consistent_and_deterministic(tmp_path, monkeypatch):
    """Specialist (a tiny U-Net), omnimodel (fake Gemini) and a baseline through run, curate and report."""
    import hashlib

    import torch
    import json

    from conftest import OTSU, make_kvasir, write_config

    from omniseg import config
    from omniseg.models.specialist import NetSpec, build_net, save_checkpoint
    from omniseg.inference.runner import run
    from omniseg.store.database import Store
    from omniseg.standins.fake_gemini import FakeGemini

    monkeypatch.setenv("GEMINI_API_KEY", "omniseg-report-test-key-not-real")
    torch.manual_seed(0)
    spec = NetSpec(encoder="resnet18", input_size=64)
    save_checkpoint(tmp_path / "u.pt", build_net(spec), spec)
    root = make_kvasir(tmp_path / "k", n=12)
    with FakeGemini() as srv:
        models = (f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'u.pt'}, device: cpu}}\n"
                  f"  - name: gem\n    kind: gemini\n    options: {{base_url: '{srv.url}', target: polyp}}\n" + OTSU)
        cfg = config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models,
                                       "curation:\n  reference: unet\n"))
        with Store(tmp_path / "runs" / "s.sqlite") as st:
            run(cfg, st, progress=False)
            curate(st, "polyp", 3)
            paths = report.write(st, tmp_path / "rep", split="all", k=2)
            first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "rep").rglob("*") if p.is_file()}
            report.write(st, tmp_path / "rep", split="all", k=2)
            second = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "rep").rglob("*") if p.is_file()}
    assert first == second  # regenerated from the same store: byte for byte
    # ... and in another process, with another string-hash seed, seconds later (no clock, no set order)
    time.sleep(1.1)
    code = ("import sys; from omniseg.study import report; from omniseg.store.database import Store; "
            "report.write(Store(sys.argv[1]), sys.argv[2], split='all', k=2)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs" / "s.sqlite"), str(tmp_path / "rep2")],
                          env={**os.environ, "PYTHONHASHSEED": "4242"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    third = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "rep2").rglob("*") if p.is_file()}
    assert third == first
    names = set(first)
    for f in ("report.md", "per_image.csv", "summary.csv", "comparisons.csv", "routing.csv", "manifest.json",
              "polyp_boxplots.png", "polyp_scatter.png", "polyp_routing.png", "polyp_cases.png"):
        assert f in names, f
    summary = pd.read_csv(paths["summary"]).set_index(["subset", "model"])
    routing = pd.read_csv(paths["routing"])
    assert routing["hybrid_dice"].iloc[0] == pytest.approx(summary.loc[("all", "unet"), "dice_mean"], abs=1e-6)
    assert routing["hybrid_dice"].iloc[-1] == pytest.approx(summary.loc[("all", "gem"), "dice_mean"], abs=1e-6)
    cmp_ = pd.read_csv(paths["comparisons"])
    assert set(zip(cmp_["model_a"], cmp_["model_b"])) == {("gem", "otsu"), ("gem", "unet"), ("otsu", "unet")}
    m = json.loads(paths["manifest"].read_text())
    t = m["tasks"]["polyp"]
    assert m["omniseg_version"] and m["packages"]["numpy"]
    assert t["models"]["gem"]["signature"]["prompt_text"].startswith("Outline each {target}")
    assert len(t["models"]["unet"]["signature"]["checkpoint_sha256"]) == 64
    assert t["reported_model_versions"]["gem"] == {"gemini-3.5-flash": 12}
    assert t["api"]["gem"]["answered"] == 12 and t["api"]["gem"]["cost_usd"] > 0
    assert t["runs"][0]["split_fingerprint"] and t["configs"]
    md = paths["markdown"].read_text()
    assert "![polyp routing](figures/polyp_routing.png)" in md and "Wilcoxon" in md


def test_report_for_a_model_whose_calls_all_failed(tmp_path, api_key):
    """Hardening defect 1: `report` crashed (TypeError in manifest.py) when a Gemini model had only failed
    calls (endpoint down, revoked key): no report.md, no manifest."""
    import json
    import socket

    from typer.testing import CliRunner

    from omniseg.cli import app

    from conftest import gemini_yaml, make_kvasir

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    root = make_kvasir(tmp_path / "k", n=4)
    cfg = gemini_yaml(tmp_path, root, dead, max_retries=1, timeout_s=5)
    store = tmp_path / "s.sqlite"
    r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--limit", "2", "-q"])
    assert r.exit_code == 0 and "api_error 2" in r.output, r.output
    r = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--split", "all"])
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv").set_index("subset")
    assert summary.loc["all", "failure_rate"] == 1.0 and summary.loc["all", "dice_mean"] == 0.0
    api = json.loads((tmp_path / "rep" / "manifest.json").read_text())["tasks"]["polyp"]["api"]["gem"]
    assert api["errors"] == 4 and api["answered"] == 0 and api["prompt_tokens"] is None and api["cost_usd"] == 0.0
    assert "| all | gem | 2 | 0.000 ± 0.000 |" in (tmp_path / "rep" / "report.md").read_text()


# -- the report says no more than its numbers allow (issue 27) ---------------------------------------------
def _cli_report(tmp_path, models: str, n: int, curate_args=("-n", "5"), extra: str = "curation:\n  reference: spec\n"):
    from typer.testing import CliRunner

    from conftest import make_kvasir, write_config
    from omniseg.cli import app

    root = make_kvasir(tmp_path / "k", n=n)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models, extra)
    store, out = tmp_path / "runs" / "s.sqlite", tmp_path / "rep"
    cli = CliRunner()
    for args in (["run", "--config", str(cfg), "--store", str(store), "-q"],
                 ["curate", "--store", str(store), *curate_args, "-q"],
                 ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-figures"]):
        r = cli.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    return out, (out / "report.md").read_text()


TWO = ("  - name: spec\n    kind: otsu\n    role: specialist\n    options: {foreground: bright, sigma: 1.0}\n"
       "  - name: omni\n    kind: ellipse\n    role: omnimodel\n    options: {radius: 0.2}\n")


def test_without_a_control_the_curated_claims_are_not_testable_and_raw_figures_are_marked_biased(tmp_path):
    """The study's raw protocol is selection: without a second specialist or strata the Findings never say
    "supported" for the easiest or hardest cases; the raw rows stay in claims.csv, marked biased."""
    out, md = _cli_report(tmp_path, TWO, n=24)
    bullets = [ln for ln in md.splitlines() if ln.startswith("- **The specialist wins on the easiest")
               or ln.startswith("- **The omnimodel holds up better")]
    assert len(bullets) == 2 and all("not testable without a control (selection bias)" in b for b in bullets)
    assert all("biased raw figure" in b for b in bullets)
    table = pd.read_csv(out / "claims.csv")
    curated = table[table["claim"] != "all"]
    assert len(curated) and curated["verdict"].str.endswith("(biased: the specialist picked these cases itself)").all()


def test_with_image_strata_only_the_verdict_rests_on_the_strata(tmp_path):
    out, md = _cli_report(tmp_path, TWO, n=48, curate_args=("-n", "10", "--strata"))
    bullet = next(ln for ln in md.splitlines() if ln.startswith("- **The omnimodel holds up better"))
    assert "largest against smallest lesions, chosen from the images" in bullet and "not testable" not in bullet


def test_a_specialist_that_does_not_beat_the_floors_is_flagged_first(tmp_path):
    """A CPU run at Dice 0.377 against `ellipse` 0.380 still printed "the specialist wins ... supported"."""
    models = ("  - name: spec\n    kind: otsu\n    role: specialist\n    options: {foreground: dark, sigma: 1.0}\n"
              "  - name: ellipse\n    kind: ellipse\n    options: {radius: 0.28}\n"
              "  - name: omni\n    kind: ellipse\n    role: omnimodel\n    options: {radius: 0.2}\n")
    out, md = _cli_report(tmp_path, models, n=24)
    summary = pd.read_csv(out / "summary.csv").set_index(["subset", "model"])
    assert summary.loc[("all", "spec"), "dice_mean"] <= summary.loc[("all", "ellipse"), "dice_mean"]
    head = md.split("| subset | model |")[0]
    assert "**The specialist `spec` does not beat the floor `ellipse`**" in head
    assert "Read this first:" in head


def test_below_ten_images_no_interval_p_value_or_verdict_is_printed(tmp_path):
    """A task with 2 test images printed "95% CI [0.633, 0.633]" and claims with n = 1."""
    out, md = _cli_report(tmp_path, TWO, n=2, curate_args=("-n", "1"))
    summary = pd.read_csv(out / "summary.csv")
    assert summary["dice_ci_low"].isna().all() and summary["dice_ci_high"].isna().all()
    assert "none: n < 10" in md and "[0." not in md.split("Paired comparisons")[0].split("| subset | model |")[1]
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert comparisons["p_wilcoxon"].isna().all() and comparisons["diff_ci_low"].isna().all()
    table = pd.read_csv(out / "claims.csv")
    assert table["verdict"].str.startswith(("not tested (n = ", "control:")).all(), table["verdict"].tolist()


def test_three_roles_every_table_and_figure_has_them_and_findings_state_both_pairs(tmp_path):
    """A specialist, an omnimodel and a foundation model (a tiny SAM 3), plus SAM 3's box-oracle, which is
    privileged: marked in per_image.csv, summary.csv and report.md, and never a contender."""
    from typer.testing import CliRunner

    from conftest import make_kvasir, write_config
    from omniseg.cli import app
    from omniseg.standins import tiny_sam3

    ckpt = tiny_sam3.save(tmp_path / "sam3")
    models = TWO + (f"  - name: sam\n    kind: sam3\n    options: {{checkpoint: {ckpt}, target: the polyp, score_threshold: 0.26}}\n"
                    f"  - name: sam-box\n    kind: sam3\n    options: {{checkpoint: {ckpt}, target: the polyp, "
                    "mode: box-oracle, score_threshold: 0.26}\n")
    root = make_kvasir(tmp_path / "k", n=24)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models, "curation:\n  reference: spec\n")
    store, out = tmp_path / "runs" / "s.sqlite", tmp_path / "rep"
    for args in (["run", "--config", str(cfg), "--store", str(store), "-q"],
                 ["curate", "--store", str(store), "-n", "5", "--strata", "-q"],
                 ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-html"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    four = {"spec", "omni", "sam", "sam-box"}
    per_image = pd.read_csv(out / "per_image.csv")
    assert set(per_image.model) == four
    roles = per_image.drop_duplicates("model").set_index("model")
    assert roles.role.to_dict() == {"spec": "specialist", "omni": "omnimodel", "sam": "foundation", "sam-box": "foundation"}
    assert roles.privileged.to_dict() == {"spec": False, "omni": False, "sam": False, "sam-box": True}
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary[summary.subset == "all"].model) == four
    assert set(summary[summary.privileged].model) == {"sam-box"}
    comparisons = pd.read_csv(out / "comparisons.csv")
    pairs = {tuple(sorted(p)) for p in zip(comparisons.model_a, comparisons.model_b)}
    assert {("omni", "spec"), ("sam", "spec"), ("omni", "sam")} <= pairs
    md = (out / "report.md").read_text()
    assert "| all | sam-box (privileged) |" in md and "**Privileged** (`sam-box`)" in md
    assert "sam-box (privileged) − spec" in md or "spec − sam-box (privileged)" in md
    findings = md.split("### Findings")[1].split("Dice by reference lesion size")[0]  # the claims
    assert "omnimodel `omni`" in findings and "foundation model `sam`" in findings and "sam-box" not in findings
    assert "- **The foundation model holds up better on the hardest cases" in findings
    assert "- **The omnimodel holds up better on the hardest cases" in findings
    claims = pd.read_csv(out / "claims.csv")
    assert set(zip(claims.omnimodel, claims.contender_role)) == {("omni", "omnimodel"), ("sam", "foundation")}
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"polyp_scatter_omni.png", "polyp_scatter_sam.png", "polyp_boxplots.png", "polyp_cases.png"} <= figs
    assert "sam-box" in md.split("Dice by reference lesion size")[1].split("\n\n")[1]  # every model in the size table


def test_a_privileged_model_given_the_specialist_role_is_never_a_contender_reference_or_router(tmp_path):
    """SAM 3's box-oracle entered with `role: specialist` (first in the config, no curation reference) was the
    curation reference, a specialist in the Findings ("does not beat the floor") and the routing."""
    from omniseg.standins import tiny_sam3

    ckpt = tiny_sam3.save(tmp_path / "sam3")
    models = (f"  - name: boxy\n    kind: sam3\n    role: specialist\n    options: {{checkpoint: {ckpt}, "
              "target: the polyp, mode: box-oracle, score_threshold: 0.99}\n" + TWO +
              "  - name: ellipse\n    kind: ellipse\n    options: {radius: 0.28}\n")
    out, md = _cli_report(tmp_path, models, n=24, extra="")
    import sqlite3

    with sqlite3.connect(tmp_path / "runs" / "s.sqlite") as db:
        assert {r[0] for r in db.execute("SELECT DISTINCT reference FROM subsets")} == {"spec"}
    summary = pd.read_csv(out / "summary.csv").set_index(["subset", "model"])
    assert summary.loc[("all", "boxy"), "dice_mean"] < summary.loc[("all", "ellipse"), "dice_mean"]  # below the floor
    head = md.split("| subset | model |")[0]
    assert "boxy" not in head  # no "does not beat the floor" for a model that is no contender
    after_tables = md.split("### Findings")[1].split("Dice by reference lesion size")[0]
    assert "boxy" not in after_tables and "`spec`" in md
    assert "Routing: `boxy`" not in md and "`boxy` is least confident" not in md
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims.specialist) == {"spec"} and "boxy" not in set(claims.omnimodel)


def test_a_box_only_model_is_named_and_its_localisation_shown_beside_its_dice(tmp_path, sent_polyps):
    """An open model answering boxes (the fake OpenAI-compatible server, mode box) beside a floor: the report says
    it answered boxes only, and its localisation (detection F1, box IoU) is high where its Dice cannot be."""
    from typer.testing import CliRunner

    from conftest import openai_yaml
    from omniseg.cli import app
    from omniseg.standins import fake_openai as fo

    root, masks, shas = sent_polyps
    # a model that finds each polyp and answers its box (in 0..1000): localised exactly, drawn as a rectangle
    with fo.FakeOpenAI(lambda req: fo.completion(fo.boxes(masks[shas[req.image_sha]]))) as srv:
        cfg = openai_yaml(tmp_path, root, srv.url, mode="box")
        cfg.write_text(cfg.read_text() + "  - name: ellipse\n    kind: ellipse\n")
        store, out = tmp_path / "runs" / "s.sqlite", tmp_path / "rep"
        for args in (["run", "--config", str(cfg), "--store", str(store), "-q"],
                     ["curate", "--store", str(store), "-n", "3", "--by", "ellipse", "-q"],
                     ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-figures", "--no-html"]):
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 0, (args, r.output)
    md = (out / "report.md").read_text()
    table = md.split("Localisation (where")[1].split("\n\n")[1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert rows["vlm"][0] == "boxes only" and rows["ellipse"][0] == "masks"
    summary = pd.read_csv(out / "summary.csv").set_index(["subset", "model"])
    vlm = summary.loc[("all", "vlm")]
    assert vlm["det_f1_mean"] == 1.0 and vlm["box_iou_mean"] > 0.97 and vlm["dice_mean"] < 0.9
    assert rows["vlm"][1] == f"{vlm['box_iou_mean']:.3f}"
    per_image = pd.read_csv(out / "per_image.csv")
    assert set(per_image.loc[per_image.model == "vlm", "answer_form"]) == {"box"}


def test_hd95_and_nsd_are_in_the_summary_table_in_mm_when_the_task_states_a_spacing(tmp_path):
    """Metrics Reloaded's boundary metrics beside Dice: in pixels by default, in mm (with tau in mm) when the task
    configures a pixel spacing, and the numbers are summary.csv's."""
    rows = {}
    for name, extra in (("px", ""), ("mm", "metrics:\n  spacing: [0.5, 0.25]\n  nsd_tolerance: 1.5\n")):
        out, md = _cli_report(tmp_path / name, TWO, n=12, extra="curation:\n  reference: spec\n" + extra)
        head = md.split("| subset | model |")[1].splitlines()[0]
        summary = pd.read_csv(out / "summary.csv").set_index(["subset", "model"])
        line = next(x for x in md.splitlines() if x.startswith("| all | omni |"))
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells[9] == f"{summary.loc[('all', 'omni'), 'hd95_median']:.2f}"
        assert cells[10] == f"{summary.loc[('all', 'omni'), 'nsd_mean']:.3f}"
        rows[name] = (head, summary.loc[("all", "omni"), "hd95_median"])
    assert "HD95 (px), median | NSD (τ = 2 px)" in rows["px"][0]
    assert "HD95 (mm), median | NSD (τ = 1.5 mm)" in rows["mm"][0]
    assert rows["mm"][1] < rows["px"][1]  # half a millimetre or less per pixel: a smaller number in mm


def test_tables_state_holms_adjustment_and_mark_gaps_on_cases_a_model_picked_itself(tmp_path):
    """A floor "beat" the specialist on the cases the specialist picked as its worst, p < 0.001, with no caveat
    outside Findings; eighteen p-values and no word on multiple comparisons."""
    models = TWO + "  - name: ellipse\n    kind: ellipse\n    options: {radius: 0.3}\n"
    out, md = _cli_report(tmp_path, models, n=40, curate_args=("-n", "12"))
    comparisons = pd.read_csv(out / "comparisons.csv")
    tested = int(comparisons["p_wilcoxon"].notna().sum())
    assert tested > 1 and "| Wilcoxon p (Holm) |" in md
    assert f"p-values adjusted for the {tested} comparisons of this table (Holm's step-down method" in md
    paired = md.split("Paired comparisons (Dice):")[1].split("\n\n")[1].splitlines()[2:]
    for r in comparisons.itertuples():
        line = next(x for x in paired if x.startswith(f"| {r.subset} | {r.model_a} − {r.model_b}"))
        picked = r.subset != "all" and "spec" in (r.model_a, r.model_b)
        assert line.startswith(f"| {r.subset} | {r.model_a} − {r.model_b} †") == picked, line
        p = line.split("|")[6].strip()
        assert p == ("–" if pd.isna(r.p_holm) else "<0.001" if r.p_holm < 0.001 else f"{r.p_holm:.3f}"), (line, r.p_holm)
    assert "† the pair includes the model that picked these cases (`spec`) by its own score" in md
    assert "The `easiest` and `hardest` rows are the cases `spec` picked by its own Dice" in md
    claims_csv = pd.read_csv(out / "claims.csv")
    assert {"p_value", "p_holm"} <= set(claims_csv.columns)


def test_the_routing_table_reads_the_curve_at_each_share_sent():
    """Each row of the routing table is the curve where that share of the n images went to the omnimodel (rounded
    to an image), then the best oracle over the whole curve; n is the curve's last count."""
    from omniseg.study.document import Paragraph, Table, markdown

    n = 7
    curve = pd.DataFrame({"n_sent": range(n + 1), "hybrid_dice": [0.5 + 0.01 * k for k in range(n + 1)],
                          "oracle_dice": [0.6, 0.7, 0.9, 0.8, 0.75, 0.72, 0.71, 0.7]})
    text, tab = report._routing(curve, "unet", "gem")
    assert isinstance(text, Paragraph) and "(n = 7)" in text.text and "`gem`" in text.text and "`unet`" in text.text
    assert isinstance(tab, Table) and tab.header == ("% sent", "hybrid Dice", "oracle Dice")
    assert tab.numeric == (True, True, True)
    # 0, 10, 20, 30, 50 and 100% of 7 images: rows 0, 1, 1, 2, 4 (round half to even) and 7
    assert [r[0] for r in tab.rows[:-1]] == ["0%", "10%", "20%", "30%", "50%", "100%"]
    assert [r[1] for r in tab.rows[:-1]] == ["0.500", "0.510", "0.510", "0.520", "0.540", "0.570"]
    assert [r[2] for r in tab.rows[:-1]] == ["0.600", "0.700", "0.700", "0.900", "0.750", "0.700"]
    assert tab.rows[-1] == ("best oracle (better model per image)", "", "0.900")
    assert "| % sent | hybrid Dice | oracle Dice |" in markdown([tab])

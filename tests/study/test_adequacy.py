"""The specialist's adequacy at the top of the report: a U-Net cut short by its time budget, or below the published
figure for its dataset, is named in the report's first lines and its Findings are marked; one trained to its plan
and within the published range is not."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from conftest import make_kvasir, write_config
from omniseg import config
from omniseg.cli import app
from omniseg.config import TrainConfig
from omniseg.inference.runner import open_dataset
from omniseg.models.specialist import NetSpec
from omniseg.study import adequacy
from omniseg.training.train import train

TINY = NetSpec(encoder="resnet18", input_size=64)


def _study(tmp_path, train_config: TrainConfig) -> tuple[str, pd.DataFrame]:
    root = make_kvasir(tmp_path / "k", n=24)
    models = (f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'u.pt'}, input_size: 64}}\n"
              "  - name: omni\n    kind: ellipse\n    role: omnimodel\n    options: {radius: 0.2}\n")
    path = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models)
    cfg = config.load(path)
    train(cfg, train_config, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    store, out = tmp_path / "runs" / "s.sqlite", tmp_path / "rep"
    for args in (["run", "--config", str(path), "--store", str(store), "-q"],
                 ["curate", "--store", str(store), "-n", "4", "-q"],
                 ["report", "--store", str(store), "--out", str(out), "--split", "all", "--no-figures", "--no-html"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    return (out / "report.md").read_text(), pd.read_csv(out / "summary.csv").set_index(["subset", "model"])


def test_a_specialist_cut_short_by_its_budget_is_named_in_the_first_lines_and_its_findings_marked(tmp_path):
    md, summary = _study(tmp_path, TrainConfig(net=TINY, epochs=50, batch_size=4, max_minutes=1e-6))
    lines = md.splitlines()
    assert lines[2].startswith("**Undertrained specialist**: `unet` (polyp): its time budget stopped training after 1 "
                               "of 50 planned epochs (validation Dice ")
    row = next(x for x in lines if x.startswith("| polyp | unet |"))
    assert "| 1 / 50 | time budget |" in row and f"| {summary.loc[('all', 'unet'), 'dice_mean']:.3f} |" in row
    assert "### Findings — against an undertrained specialist (`unet`: see the top)" in md
    assert "Read this first:" in md and "- **Undertrained specialist** `unet`: its time budget stopped" in md


def test_one_trained_to_its_plan_within_the_published_range_is_not_flagged_and_one_below_it_is(tmp_path, monkeypatch):
    tc = TrainConfig(net=TINY, epochs=1, batch_size=4)
    monkeypatch.setitem(adequacy.PUBLISHED, "kvasir-seg", (0.0, "a stand-in figure every model reaches"))
    md, summary = _study(tmp_path / "a", tc)
    assert "Undertrained" not in md and "undertrained" not in md
    row = next(x for x in md.splitlines() if x.startswith("| polyp | unet |"))
    assert "| 1 / 1 | its plan |" in row and "| 0.000 (a stand-in figure every model reaches) |" in row
    test_dice = summary.loc[("all", "unet"), "dice_mean"]
    monkeypatch.setitem(adequacy.PUBLISHED, "kvasir-seg", (test_dice + 0.2, "a figure above it"))
    md, _ = _study(tmp_path / "b", tc)
    assert md.splitlines()[2].startswith(f"**Undertrained specialist**: `unet` (polyp): its test Dice {test_dice:.3f} "
                                         f"is below the published {test_dice + 0.2:.3f} (a figure above it;")
    assert "### Findings — against an undertrained specialist" in md

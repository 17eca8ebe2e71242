"""The paper cuts a new user met in one hour (issue 39): help text, the training bar under a budget, curate
overwriting stored lists, a hint that led to a failing command, and a dry run that needed a checkpoint."""

from __future__ import annotations

import re
import sqlite3

from typer.main import get_command
from typer.testing import CliRunner

from conftest import OTSU, make_kvasir, write_config
from omniseg.cli import app
from omniseg.training.train import clock, time_left


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def test_help_shows_flags_as_flags_and_keeps_every_placeholder():
    runner = CliRunner()
    seen = 0
    for path, cmd in _commands(get_command(app)):
        text = runner.invoke(app, [*path, "--help"], terminal_width=200).output
        assert "<bool>" not in text, (path, [x for x in text.splitlines() if "<bool>" in x])
        for p in cmd.params:
            for placeholder in re.findall(r"<[A-Za-z_][\w-]*>", getattr(p, "help", "") or ""):
                assert placeholder in text, (path, p.name, placeholder)  # markdown ate it before: configs/.yaml
                seen += 1
    assert seen >= 3
    assert "configs/<task>.yaml" in runner.invoke(app, ["run", "--help"], terminal_width=200).output


def test_the_training_bar_never_promises_more_time_than_the_budget_leaves():
    assert time_left(38, 60.0, 8 * 60) == 480  # 38 epochs at a minute each, 8 minutes of budget left: 8 minutes
    assert time_left(2, 60.0, 8 * 60) == 120 and time_left(5, 1.0, -3) == 0
    assert clock(480) == "08:00" and clock(7 * 3600 + 22 * 60 + 26) == "7:22:26"


def test_a_budgeted_training_bar_shows_the_budgets_time_left(tmp_path, capsys):
    from omniseg import config
    from omniseg.config import TrainConfig
    from omniseg.inference.runner import open_dataset
    from omniseg.models.specialist import NetSpec
    from omniseg.training.train import train

    root = make_kvasir(tmp_path / "k", n=20)
    models = f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'u.pt'}, input_size: 64}}\n"
    cfg = config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models))
    train(cfg, TrainConfig(net=NetSpec(encoder="resnet18", input_size=64), epochs=40, batch_size=4, max_minutes=1e-6),
          open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=True)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("train polyp")]
    assert lines and all("left=00:00" in x for x in lines), lines  # the budget is spent: nothing left
    assert not any("<" in x for x in lines)  # tqdm's own estimate (epochs left at this pace) is not shown


def _study(tmp_path, models: str, n: int = 12):
    root = make_kvasir(tmp_path / "k", n=n)
    return write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models), tmp_path / "runs" / "s.sqlite"


def test_curate_keeps_stored_lists_of_another_size_unless_told_to_replace_them(tmp_path):
    cfg, store = _study(tmp_path, OTSU + "  - name: ellipse\n    kind: ellipse\n", n=16)
    runner = CliRunner()
    assert runner.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"]).exit_code == 0
    assert runner.invoke(app, ["curate", "--store", str(store), "-n", "3", "-q"]).exit_code == 0
    r = runner.invoke(app, ["curate", "--store", str(store), "-n", "150", "-q"])
    assert r.exit_code != 0 and "the stored lists hold 3 easiest and 3 hardest" in r.output and "--replace" in r.output
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM subsets").fetchone()[0] == 6
    r = runner.invoke(app, ["curate", "--store", str(store), "-n", "150", "--replace", "-q"])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM subsets").fetchone()[0] == 16


def test_the_hint_after_a_missing_checkpoint_names_a_command_that_works_and_a_dry_run_still_prices(tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    models = (f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'none.pt'}}}\n"
              "  - name: gemini\n    kind: gemini\n    options: {model: gemini-3.5-flash, target: polyp}\n"
              + OTSU + "  - name: ellipse\n    kind: ellipse\n")
    cfg, store = _study(tmp_path, models)
    runner = CliRunner()
    r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    assert r.exit_code != 0 and "omniseg train --task polyp" in r.output
    hinted = re.search(r"--models (\S+)", r.output).group(1)
    assert hinted == "otsu,ellipse"  # gemini has no key: a hint naming it led to a second failure
    ok = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "--models", hinted, "-q"])
    assert ok.exit_code == 0, ok.output
    monkeypatch.setenv("GEMINI_API_KEY", "a-key-for-the-estimate-only")
    dry = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "d" / "s.sqlite"), "--dry-run",
                              "-q"])
    assert dry.exit_code == 0, dry.output
    assert "unet: 12 pairs to do; no checkpoint yet at" in dry.output and "no API cost" in dry.output
    gem = next(x for x in dry.output.splitlines() if x.startswith("gemini:"))
    assert "12 API calls" in gem and "estimated cost 0.0000 USD" not in gem
    assert not (tmp_path / "d").exists()  # a dry run writes nothing

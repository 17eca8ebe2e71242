"""The command line end to end, its error messages, and a run killed with SIGKILL part-way."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from omniseg.cli import app

from conftest import OTSU, REPO, make_kvasir, write_config
import warm_start

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_curate_report_end_to_end(tmp_path, polyp_config, store_path):
    r = invoke("run", "--config", polyp_config, "--store", store_path, "-q")
    assert r.exit_code == 0, r.output
    assert "6 pairs; 0 already done; this run: ok 6" in r.output
    r = invoke("run", "--config", polyp_config, "--store", store_path, "-q")
    assert "6 already done" in r.output and "nothing new" in r.output
    r = invoke("curate", "--extremes", 2, "--store", store_path)
    assert r.exit_code == 0, r.output
    assert "polyp: 2 easiest + 2 hardest by otsu dice" in r.output
    r = invoke("report", "--store", store_path, "--out", tmp_path / "rep", "--split", "all")
    assert r.exit_code == 0, r.output
    per_image = pd.read_csv(tmp_path / "rep" / "per_image.csv")
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(per_image) == 6 and per_image["easiest_rank"].notna().sum() == 2
    assert list(summary["subset"]) == ["all", "easiest", "hardest"]
    assert summary.loc[0, "dice_mean"] == pytest.approx(per_image["dice"].mean(), abs=1e-6)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| all | otsu | 6 |" in md and "| hardest | otsu | 2 |" in md


def test_missing_data_root_is_one_message(tmp_path, store_path):
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path / "nowhere", OTSU)
    r = invoke("run", "--config", cfg, "--store", store_path)
    assert r.exit_code == 2
    assert "error: kvasir-seg: dataset folder" in r.output and "omniseg data fetch polyp" in r.output
    assert "Traceback" not in r.output


def test_unknown_task_model_and_config_key(tmp_path, polyp_config, store_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the built-in tasks still count
    r = invoke("run", "--task", "polpy", "--store", store_path)
    assert r.exit_code == 2 and "unknown task 'polpy'" in r.output and "did you mean 'polyp'" in r.output
    assert "omniseg init NAME" in r.output
    r = invoke("run", "--config", polyp_config, "--models", "otsuu", "--store", store_path)
    assert r.exit_code == 2 and "unknown model 'otsuu'" in r.output and "did you mean 'otsu'" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(polyp_config.read_text() + "thresholds: 0.5\n")
    r = invoke("run", "--config", bad, "--store", store_path)
    assert r.exit_code == 2 and f"{bad}: key 'thresholds': unknown key" in r.output
    r = invoke("run", "--config", polyp_config, "--split", "val", "--store", store_path)
    assert r.exit_code == 2 and "--split must be train, test or all" in r.output


def test_curate_before_any_run_and_by_unknown_model(tmp_path, polyp_config, store_path):
    r = invoke("curate", "--store", store_path)
    assert r.exit_code == 2 and f"{store_path}: no store there" in r.output
    assert not store_path.parent.exists()  # defect 7: a mistyped --store created folders and a database
    r = invoke("report", "--store", store_path, "--out", tmp_path / "rep")
    assert r.exit_code == 2 and f"{store_path}: no store there" in r.output
    assert not store_path.parent.exists() and not (tmp_path / "rep").exists()
    invoke("run", "--config", polyp_config, "--store", store_path, "-q")
    r = invoke("curate", "--by", "unet", "--store", store_path)
    assert r.exit_code == 2 and "no scores of model 'unet'" in r.output and "models with scores: otsu" in r.output


def test_verify_lists_every_problem(tmp_path):
    root = make_kvasir(tmp_path / "k", n=4)
    (root / "masks" / "case000.jpg").unlink()
    (root / "images" / "case003.jpg").write_bytes(b"junk")
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU)
    r = invoke("data", "verify", "--config", cfg, "-q")
    assert r.exit_code == 1
    assert "case000: missing mask" in r.output and "case003: unreadable image" in r.output
    assert "4 samples, 2 with problems" in r.output


def test_sigkill_part_way_then_rerun_gives_every_pair_once_and_report_says_which_run_did_not_end(tmp_path):
    """Kill a real `omniseg run` process right after its 20th pair is written, rerun it, count rows; then
    report (defect 1: the killed run's NULL summary made every later report crash)."""
    import invariants
    from conftest import run_killed_after_writes

    n = 120
    root = make_kvasir(tmp_path / "k", n=n, size=(240, 300))
    models = OTSU + "  - name: dark\n    kind: otsu\n    options: {foreground: dark}\n"
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models)
    store = tmp_path / "runs" / "s.sqlite"
    args = ["run", "--config", cfg, "--store", store, "-q", "--batch-size", "2"]
    killed = run_killed_after_writes(args, 20)
    assert killed.returncode == -9, killed.stderr
    with sqlite3.connect(store) as db:
        at_kill = db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert at_kill == 20
    r = invoke("report", "--store", store, "--out", tmp_path / "runs" / "mid", "--split", "all", "--no-figures")
    assert r.exit_code == 0, r.output  # a report between the kill and the rerun works too
    assert "1 did not end (run 1)" in (tmp_path / "runs" / "mid" / "report.md").read_text()
    done = invoke(*args)
    assert done.exit_code == 0, done.output
    assert f"{at_kill} already done" in done.output
    with sqlite3.connect(store) as db:
        scored = db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        statuses = [r[0] for r in db.execute("SELECT status FROM runs ORDER BY run_id")]
    assert scored == 2 * n
    assert statuses == ["running", "finished"]  # the killed run is visible as never finished
    figures = invariants.check(store, asked={(f"case{i:03d}", m) for i in range(n) for m in ("otsu", "dark")})
    assert figures["runs"] == ["did not end", "finished"]
    text = (store.parent / "invariant-report" / "report.md").read_text()
    assert "Runs: 1 did not end (run 1); 1 finished." in text


def test_quiet_wrong_answers_are_now_errors_or_warnings(tmp_path, polyp_config, store_path):
    """Hardening defect 10: each of these used to exit 0 or be ignored without a word."""
    invoke("run", "--config", polyp_config, "--store", store_path, "-q")
    r = invoke("report", "--task", "polp", "--store", store_path, "--out", tmp_path / "rep")
    assert r.exit_code == 2 and "unknown task 'polp'" in r.output and "did you mean 'polyp'" in r.output
    assert not (tmp_path / "rep").exists()
    r = invoke("run", "--config", polyp_config, "--store", store_path, "--models", ",")
    assert r.exit_code == 2 and "names no model" in r.output
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    r = invoke("data", "verify", "--config", polyp_config, "--data-root", empty, "-q")
    assert r.exit_code == 1 and "no samples found" in r.output
    r = invoke("train", "--config", polyp_config, "--max-minutes", "0", "--out", tmp_path / "u.pt", "-q")
    assert r.exit_code == 2 and "--max-minutes" in r.output and "greater than 0" in r.output


def test_upper_case_suffixes_and_masks_that_are_not_black_and_white(tmp_path, store_path):
    """Hardening defect 10: .JPG files were ignored, and an RGB or grey-127 mask became an empty
    reference without a word; now found, and warned about by `data verify` and `run`."""
    root = make_kvasir(tmp_path / "k", n=4)
    for folder in ("images", "masks"):
        (root / folder / "case000.jpg").rename(root / folder / "case000.JPG")
    m = np.zeros((64, 80), np.uint8)
    m[10:40, 20:60] = 127  # a grey object: binarized at 128, it vanishes
    Image.fromarray(m).save(root / "masks" / "case001.jpg", quality=100)
    rgb = np.zeros((64, 80, 3), np.uint8)
    rgb[10:40, 20:60] = (200, 0, 0)  # a red object: grey level 60
    Image.fromarray(rgb).save(root / "masks" / "case002.jpg", quality=100)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU)
    r = invoke("data", "verify", "--config", cfg, "-q")
    assert r.exit_code == 0, r.output
    assert "4 samples, 0 with problems, 2 warnings" in r.output
    assert "case001: warning: mask case001.jpg is not black-and-white" in r.output
    assert "case002: warning: mask case002.jpg is in colour" in r.output
    r = invoke("run", "--config", cfg, "--store", store_path, "-q")
    assert r.exit_code == 0 and "4 samples" in r.output
    assert "warning: 2 reference mask(s) read with a warning" in r.output and "data verify" in r.output


def test_version_names_the_release_and_the_commit():
    from omniseg import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.startswith(f"omniseg {__version__}")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if commit:  # a git checkout: the commit is named, as in the manifest
        assert f"(git {commit}" in r.output


def test_progress_in_a_log_file_is_whole_lines(tmp_path):
    """Hardening defect 14: written to a file, tqdm's carriage-return updates became one line per refresh."""
    root = make_kvasir(tmp_path / "k", n=30)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU)
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "omniseg.cli", "run", "--config", str(cfg), "--store",
                               str(tmp_path / "s.sqlite"), "--batch-size", "4"], stderr=f, stdout=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text and text.endswith("\n")
    lines = [ln for ln in text.splitlines() if ln.startswith("polyp [all]")]
    assert 1 <= len(lines) <= 4 and "30/30" in lines[-1]  # the first line, maybe one every 10 s, the last


def test_a_kill_between_two_writes_of_one_chunk_loses_and_repeats_nothing(tmp_path):
    """The kill lands inside a chunk (after 13 of its 16 writes), so the rows at the kill are a part of
    one chunk; the rerun must add exactly the others and leave the earlier rows as they were."""
    from conftest import run_killed_after_writes

    n = 40
    root = make_kvasir(tmp_path / "k", n=n)
    models = OTSU + "  - name: dark\n    kind: otsu\n    options: {foreground: dark}\n"
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models)
    store = tmp_path / "s.sqlite"
    args = ["run", "--config", cfg, "--store", store, "-q", "--batch-size", "8"]
    killed = run_killed_after_writes(args, 13)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with sqlite3.connect(store) as db:
        per_model = dict(db.execute("SELECT model, COUNT(*) FROM predictions GROUP BY model").fetchall())
        earlier = db.execute("SELECT sample_id, model, run_id, created_at FROM predictions ORDER BY 1, 2").fetchall()
    assert per_model == {"otsu": 8, "dark": 5}  # one chunk of 8 samples: all of the first model, 5 of the second
    done = warm_start.omniseg(args)
    assert done.returncode == 0, done.stderr
    assert "13 already done; this run: ok 67" in done.stdout
    with sqlite3.connect(store) as db:
        per_model = dict(db.execute("SELECT model, COUNT(*) FROM predictions GROUP BY model").fetchall())
        kept = db.execute("SELECT sample_id, model, run_id, created_at FROM predictions WHERE run_id = 1"
                          " ORDER BY 1, 2").fetchall()
        scored = db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    assert per_model == {"otsu": n, "dark": n} and scored == 2 * n
    assert kept == earlier  # the rows written before the kill were not redone


def test_every_command_is_there_under_python_dash_m():
    """`python -m omniseg.cli` ran cli.py as __main__, whose app lacked the commands registered by the other
    modules (train, batch, probe, ...): scripts that call it that way got "No such command"."""
    import subprocess
    import sys

    for args in (["-m", "omniseg.cli", "train", "--help"], ["-m", "omniseg", "batch", "list", "--help"]):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Usage" in done.stdout, done.stdout + done.stderr


# -- the newcomer's paper cuts (issue 27) ------------------------------------------------------------------
def _commands():
    from typer.main import get_command

    root = get_command(app)
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            for sub in subs:
                yield [name, sub]
        else:
            yield [name]


def test_every_help_fits_80_columns_and_never_breaks_a_paragraph_mid_phrase():
    """`omniseg curate --help` wrapped its text mid-phrase: a docstring's line break became a line of its own."""
    import os
    import re

    checked = 0
    for cmd in _commands():
        for width in (80, 200):
            env = {**os.environ, "COLUMNS": str(width), "TERM": "dumb", "NO_COLOR": "1"}
            r = CliRunner().invoke(app, [*cmd, "--help"], env=env, terminal_width=width)
            assert r.exit_code == 0, (cmd, r.output)
            lines = r.output.splitlines()
            assert all(len(ln) <= width for ln in lines), (cmd, width, [ln for ln in lines if len(ln) > width][:2])
            if width == 200:  # at 200 columns a paragraph is one line unless it is longer than that
                top = r.output.split("╭")[0]
                for para in re.split(r"\n\s*\n", top):
                    rows = [ln.strip() for ln in para.splitlines() if ln.strip()]
                    assert all(len(ln) > 150 for ln in rows[:-1]), (cmd, rows)
        checked += 1
    assert checked >= 15  # every command and subcommand


def test_init_never_writes_a_users_configuration_into_the_package(tmp_path, monkeypatch):
    """From the repository root, `configs/` links into src/omniseg/configs: `omniseg init` wrote there and `omniseg
    list` called the user's file built-in."""
    from omniseg.config import builtin_dir

    root = make_kvasir(tmp_path / "k", n=4)
    before = sorted(p.name for p in builtin_dir().iterdir())
    for target in (builtin_dir(), REPO / "configs"):
        r = invoke("init", "mine", "--images", root / "images", "--masks", root / "masks", "--config-dir", target)
        assert r.exit_code == 2 and "never goes inside the package" in r.output and "--config-dir" in r.output, r.output
    assert sorted(p.name for p in builtin_dir().iterdir()) == before
    monkeypatch.chdir(tmp_path)
    r = invoke("init", "mine", "--images", root / "images", "--masks", root / "masks")
    assert r.exit_code == 0 and (tmp_path / "configs" / "mine.yaml").is_file(), r.output


def test_a_missing_checkpoint_names_the_command_that_trains_it(tmp_path):
    root = make_kvasir(tmp_path / "k", n=3)
    models = (f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'none.pt'}}}\n" + OTSU)
    cfg = write_config(tmp_path / "c.yaml", "mytask", "kvasir-seg", root, models)
    r = invoke("run", "--config", cfg, "--store", tmp_path / "s.sqlite", "-q")
    assert r.exit_code == 2 and "<task>" not in r.output
    assert "train it with `omniseg train --task mytask`" in r.output and "with --models otsu" in r.output, r.output


def test_a_command_that_fails_at_once_writes_nothing(tmp_path, monkeypatch):
    """`omniseg report` in an empty folder, a run whose data is missing and a run without its API key used to
    leave runs/omniseg.sqlite behind (the last after a progress bar for seconds)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert invoke("report").exit_code == 2
    missing = write_config(tmp_path / "m.yaml", "polyp", "kvasir-seg", tmp_path / "nowhere", OTSU)
    assert invoke("run", "--config", missing).exit_code == 2
    root = make_kvasir(tmp_path / "k", n=3)
    gem = "  - name: gem\n    kind: gemini\n    options: {model: gemini-3.5-flash, base_url: 'http://127.0.0.1:9'}\n"
    nokey = write_config(tmp_path / "g.yaml", "polyp", "kvasir-seg", root, gem)
    r = invoke("run", "--config", nokey)
    assert r.exit_code == 2 and "needs an API key: set GEMINI_API_KEY or GOOGLE_API_KEY" in r.output, r.output
    assert "img/s" not in r.output and "%|" not in r.output  # no progress bar before the message
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in (tmp_path / "runs").iterdir())

"""Extensions from outside the package (omniseg.plugins), roles instead of kind names, the metric registry."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omniseg.scoring import metrics
from omniseg import models
from omniseg.store.schema import SCHEMA_VERSION
from omniseg.cli import app
from omniseg.models.specialist import NetSpec, build_net, save_checkpoint
from omniseg.store.database import Store

from conftest import REPO, blob_mask, lesion_image
from omniseg.store import results as store_results
from omniseg.store import runs as store_runs

EXTENSION = '''
"""A throwaway extension: a dataset reader, an omnimodel kind and a metric."""
from omniseg.datasets.base import Dataset, Sample, SampleRef, read_mask, read_rgb, split_of
from omniseg.scoring.metrics import Metric
from omniseg.models.base import Prediction, Segmenter


class ToySet(Dataset):
    name = "toyset"
    task = "toy"
    layout = "  <root>/<id>.img.png with <root>/<id>.seg.png"

    def _missing(self):
        return [] if self.root.is_dir() else ["."]

    def _refs(self):
        out = []
        for p in sorted(self.root.glob("*.img.png")):
            sid = p.name[: -len(".img.png")]
            out.append(SampleRef(sid, split_of(self.name, sid), {"image": p, "mask": p.with_name(sid + ".seg.png")}))
        return out

    def load(self, ref):
        return Sample(ref.id, read_rgb(ref.files["image"]), read_mask(ref.files["mask"]))


class Blobby(Segmenter):
    kind = "blobby"
    role = "omnimodel"

    def predict(self, sample):
        grey = sample.image.mean(axis=2)
        return Prediction(mask=grey > grey.mean() + 0.5 * grey.std())


AREA_RATIO = Metric("area_ratio", lambda pred, ref, roi, c: c.pred_px / max(c.ref_px, 1),
                    "predicted pixels / reference pixels")
'''


def toy_data(root: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(7)
    root.mkdir(parents=True)
    for i in range(n):
        m = blob_mask(48, 56, rng)
        Image.fromarray(lesion_image(m, rng)).save(root / f"t{i:02d}.img.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(root / f"t{i:02d}.seg.png")
    return root


def tiny_unet(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec = NetSpec(encoder="resnet18", input_size=64)
    save_checkpoint(path, build_net(spec), spec)
    return path


def toy_config(tmp_path: Path, plugins: bool) -> Path:
    ckpt = tiny_unet(tmp_path / "u.pt")
    text = textwrap.dedent(f"""\
        task: toy
        dataset: {{name: toyset, root: {toy_data(tmp_path / 'toy')}}}
        split: all
        models:
          - {{name: unet, kind: unet, options: {{checkpoint: {ckpt}, device: cpu}}}}
          - {{name: blobby, kind: blobby}}
          - {{name: otsu, kind: otsu}}
        curation: {{reference: unet}}
        """) + ("plugins: [ext/toy_ext.py]\n" if plugins else "")
    (tmp_path / "toy.yaml").write_text(text)
    return tmp_path / "toy.yaml"


def check_report(out: Path) -> None:
    cmp_ = pd.read_csv(out / "comparisons.csv")
    assert {("blobby", "unet"), ("blobby", "otsu")} <= set(zip(cmp_["model_a"], cmp_["model_b"]))
    routing = pd.read_csv(out / "routing.csv")
    assert set(zip(routing["specialist"], routing["omnimodel"])) == {("unet", "blobby")}  # by role, not kind
    per_image = pd.read_csv(out / "per_image.csv")
    assert "area_ratio" in per_image.columns and per_image["area_ratio"].notna().all()
    summary = pd.read_csv(out / "summary.csv")
    assert "area_ratio_mean" in summary.columns and summary["area_ratio_mean"].notna().all()
    assert "### Findings" in (out / "report.md").read_text() and "omnimodel `blobby`" in (out / "report.md").read_text()


def test_an_extension_by_module_path_runs_curates_and_reports(tmp_path):
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "toy_ext.py").write_text(EXTENSION)
    cfg = toy_config(tmp_path, plugins=True)
    store, out, cli = tmp_path / "s.sqlite", tmp_path / "rep", CliRunner()
    for args in (["run", "--config", cfg, "--store", store, "-q"], ["curate", "--store", store, "-n", "3", "-q"],
                 ["report", "--store", store, "--out", out, "--no-figures"]):
        r = cli.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    check_report(out)
    r = cli.invoke(app, ["list"])
    origin = f"module {(tmp_path / 'ext' / 'toy_ext.py').resolve()}"
    for line in ("toyset", "blobby       role omnimodel", "area_ratio"):
        assert any(ln.strip().startswith(line) and ln.rstrip().endswith(origin) for ln in r.output.splitlines()), line


def test_an_installed_extension_through_its_entry_point(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "omniseg_toy.py").write_text(EXTENSION)
    (pkg / "broken_toy.py").write_text("raise RuntimeError('this extension is broken on purpose')\n")
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "omniseg-toy"
        version = "0.1"
        [project.entry-points."omniseg.plugins"]
        toy = "omniseg_toy"
        broken = "broken_toy"
        [tool.setuptools]
        py-modules = ["omniseg_toy", "broken_toy"]
        """))
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(target), str(pkg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    cfg = toy_config(tmp_path, plugins=False)
    store, out = tmp_path / "s.sqlite", tmp_path / "rep"

    def omniseg(*args):
        r = subprocess.run([sys.executable, "-m", "omniseg.cli", *map(str, args)], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout

    listing = omniseg("list")
    assert re.search(r"blobby\s+role omnimodel\s+entry point toy = omniseg_toy \(package omniseg-toy\)", listing)
    assert "extension not loaded: entry point broken = broken_toy (package omniseg-toy): RuntimeError: " \
           "this extension is broken on purpose" in listing
    assert re.search(r"otsu\s+role floor\s+built-in", listing)  # the built-ins are still there
    omniseg("run", "--config", cfg, "--store", store, "-q")
    omniseg("curate", "--store", store, "-n", "3", "-q")
    omniseg("report", "--store", store, "--out", out, "--no-figures")
    check_report(out)


def test_two_specialists_and_two_omnimodels_are_first_class(tmp_path, api_key):
    from omniseg.standins import fake_gemini as fg

    from conftest import make_kvasir, write_config

    root = make_kvasir(tmp_path / "k", n=16)
    with fg.FakeGemini() as srv:
        entries = "".join(
            f"  - {{name: {n}, kind: unet, options: {{checkpoint: {tiny_unet(tmp_path / f'{n}.pt', seed)}, device: cpu}}}}\n"
            for n, seed in (("unet1", 1), ("unet2", 2))) + "".join(
            f"  - {{name: {n}, kind: gemini, options: {{base_url: '{srv.url}', model: {m}, target: polyp, "
            f"backoff_s: 0.01, max_side: 96}}}}\n" for n, m in (("gemA", "gemini-3.5-flash"), ("gemB", "gemini-3.5-flash-lite")))
        cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, entries, "curation: {reference: unet2}\n")
        store, out, cli = tmp_path / "s.sqlite", tmp_path / "rep", CliRunner()
        for args in (["run", "--config", cfg, "--store", store, "-q"], ["curate", "--store", store, "-n", "4", "-q"],
                     ["report", "--store", store, "--out", out]):
            r = cli.invoke(app, [str(a) for a in args])
            assert r.exit_code == 0, r.output
    pairs = {(s, o) for s in ("unet1", "unet2") for o in ("gemA", "gemB")}
    cmp_ = pd.read_csv(out / "comparisons.csv")
    assert pairs <= {tuple(sorted(p, key=lambda m: m.startswith("gem"))) for p in zip(cmp_["model_b"], cmp_["model_a"])}
    routing = pd.read_csv(out / "routing.csv")
    assert set(zip(routing["specialist"], routing["omnimodel"])) == pairs
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims["omnimodel"]) >= {"gemA", "gemB"} and set(claims["specialist"]) == {"unet2"}
    with Store(store) as st:
        assert set(st.query("SELECT DISTINCT reference FROM subsets")["reference"]) == {"unet2"}
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {f"polyp_routing_{s}_{o}.png" for s, o in pairs} <= figures
    assert {"polyp_scatter_gemA.png", "polyp_scatter_gemB.png"} <= figures


def test_no_kind_name_is_compared_outside_the_registry_and_the_kinds_modules():
    """Reports, curation, routing and configuration select models by role or by what a kind can do."""
    kinds = "|".join(re.escape(k) for k in models.names())
    compare = re.compile(rf"""kind['"]?\)?\s*(==|!=|=|\bin\b)\s*\(?\s*['"]({kinds})['"]""")
    allowed = {REPO / "src/omniseg/models/__init__.py", REPO / "src/omniseg/datasets/__init__.py"}
    offenders = []
    for path in (REPO / "src" / "omniseg").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            m = compare.search(line)
            if not m or path in allowed:
                continue
            own = re.search(rf"^\s+kind = ['\"]{re.escape(m.group(2))}['\"]", line)  # a kind naming itself
            if not own:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_an_old_store_is_migrated_and_new_metrics_get_their_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE models (task TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, signature TEXT NOT NULL,
                             signature_hash TEXT NOT NULL, PRIMARY KEY (task, model));
        CREATE TABLE scores (task TEXT NOT NULL, sample_id TEXT NOT NULL, model TEXT NOT NULL, tp INTEGER, fp INTEGER,
                             fn INTEGER, tn INTEGER, pred_px INTEGER, ref_px INTEGER, dice REAL, iou REAL,
                             precision REAL, recall REAL, specificity REAL, hd95 REAL, cldice REAL,
                             PRIMARY KEY (task, sample_id, model));
        INSERT INTO models VALUES ('t', 'g', 'gemini', '{}', 'h');
        INSERT INTO scores (task, sample_id, model, dice) VALUES ('t', 'a', 'g', 0.5);
        PRAGMA user_version = 1;
    """)
    db.commit()
    db.close()
    with Store(path) as st:
        assert store_runs.roles(st, "t") == {"g": "omnimodel"}  # schema 1 had no roles: the kind's
        store_results.record(st, 1, "t", "b", "g", status="ok", scores={"dice": 0.7, "brand_new": 3.0})
        assert st.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "brand_new" in store_results.score_columns(st)
        assert st.query("SELECT COUNT(*) n FROM batch_jobs")["n"][0] == 0  # schema 3's tables are there
        rows = st.query("SELECT sample_id, dice, brand_new FROM scores ORDER BY sample_id").values.tolist()
    assert rows[0][:2] == ["a", 0.5] and pd.isna(rows[0][2]) and rows[1] == ["b", 0.7, 3.0]


def test_a_metric_is_one_function_and_one_registry_line(tmp_path, monkeypatch):
    double = metrics.Metric("double_dice", lambda p, r, roi, c: 2 * metrics.dice(c), "twice the Dice")
    monkeypatch.setitem(metrics.REGISTRY._entries, "double_dice", double)
    monkeypatch.setitem(metrics.REGISTRY._origins, "double_dice", "test")
    ref = np.zeros((10, 10), bool)
    ref[2:6, 2:6] = True
    row = metrics.score(ref, ref)
    assert row["double_dice"] == 2.0 and row["dice"] == 1.0 and row["cldice"] is None
    assert "cldice" in metrics.score(ref, ref, include=["cldice"]) and metrics.score(ref, ref, include=["cldice"])["cldice"] == 1.0


def _omniseg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "omniseg", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_an_extension_that_exits_or_names_a_metric_badly_is_one_message_not_the_end(tmp_path):
    """Defect 14: a plugin calling sys.exit(3) at import ended omniseg silently with exit 3; a plugin metric
    with an invalid name passed `omniseg list` and failed only when the first score was written, after the
    predictions were paid for."""
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "badname.py").write_text(textwrap.dedent('''
        from omniseg.scoring.metrics import Metric
        SHOUTY = Metric("Area-Ratio", lambda p, r, roi, c: 1.0, "a name no store column can have")
        '''))
    r = _omniseg("--plugin", tmp_path / "exits.py", "list")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "exits.py: it called exit(3) while being imported" in r.stderr and "Traceback" not in r.stderr
    r = _omniseg("--plugin", tmp_path / "badname.py", "list")
    assert r.returncode == 2 and "metric name 'Area-Ratio': use lower-case letters" in r.stderr, r.stderr
    # named in a configuration: refused when it loads, before any model runs
    root = tmp_path / "k"
    from conftest import OTSU, make_kvasir, write_config

    make_kvasir(root, n=2)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU, extra=f"plugins: [{tmp_path / 'badname.py'}]\n")
    r = _omniseg("run", "--config", cfg, "--store", tmp_path / "s.sqlite", "-q")
    assert r.returncode == 2 and "Area-Ratio" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "s.sqlite").exists() or sqlite3.connect(tmp_path / "s.sqlite").execute(
        "SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
    for bad in ("", "1st", "dice-2", "x" * 42, "tp"):
        with pytest.raises(ValueError):
            metrics.Metric(bad, lambda p, r, roi, c: 0.0, "")


def test_an_extension_may_import_built_ins_to_reuse_them(tmp_path):
    """Defect 14: `from omniseg.scoring.metrics import DICE` in an extension failed with "clashes with the one from
    built-in"; importing a built-in class or metric is reuse, not a new registration."""
    (tmp_path / "reuse.py").write_text(textwrap.dedent('''
        from omniseg.scoring.metrics import DICE, IOU, Metric
        from omniseg.models.baselines import OtsuBaseline
        from omniseg.datasets.kvasir import KvasirSeg

        HALF_DICE = Metric("half_dice", lambda p, r, roi, c: DICE.fn(p, r, roi, c) / 2, "Dice / 2, built on DICE")
        '''))
    r = _omniseg("--plugin", tmp_path / "reuse.py", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.strip().startswith("half_dice") and ln.rstrip().endswith(f"module {(tmp_path / 'reuse.py').resolve()}")
               for ln in lines)
    assert any(ln.strip().startswith("dice ") and ln.rstrip().endswith("built-in") for ln in lines)
    assert any(ln.strip().startswith("otsu ") and ln.rstrip().endswith("built-in") for ln in lines)
    assert "extension not loaded" not in r.stdout

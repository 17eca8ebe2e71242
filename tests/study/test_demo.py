"""`omniseg demo`: the whole job offline, every number labelled demo and the stand-in named."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from omniseg.cli import app


def test_the_demo_trains_runs_curates_and_reports_offline_and_says_it_is_a_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/Kvasir-SEG here: a generated dataset, said so
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    from omniseg.study import demo

    out = tmp_path / "d"
    said = []
    d = demo.run(out, minutes=0.05, say=said.append, progress=False, images=60)
    assert d.report == out / "report" / "report.html" and d.report.is_file() and d.data_kind == "generated"
    assert any("generated polyp-like images" in s for s in said) and any("stand-in" in s for s in said)
    md = (out / "report" / "report.md").read_text()
    assert md.startswith("# omniseg report — DEMO") and "| Dice (demo) |" in md
    headings = [line for line in md.splitlines() if line.startswith("#")]
    assert {"## demo", "### Findings", "### Expert review (claim 4)", "### Figures"} <= {h.split(" (demo")[0] for h in headings}
    assert all("DEMO" in h or "(demo; `gemini` answered by a local stand-in)" in h for h in headings), headings
    import pandas as pd

    claims = pd.read_csv(out / "report" / "claims.csv")
    assert len(claims) and claims["demo"].all()
    assert "**Demo.**" in md and "did not answer from its provider's API** but from `http://127.0.0.1:" in md
    html = d.report.read_text()
    assert "DEMO" in html and "did not answer from its provider" in html and "127.0.0.1" in html
    manifest = json.loads((out / "report" / "manifest.json").read_text())
    cfg = next(iter(manifest["tasks"]["demo"]["configs"].values()))
    assert cfg["demo"] is True and cfg["models"][3]["options"]["base_url"].startswith("http://127.0.0.1:")
    training = manifest["tasks"]["demo"]["models"]["unet"]["signature"]["training"]
    assert training["epoch"] >= 1 and 0 <= training["val_dice"] <= 1 and training["minutes"] > 0  # from the checkpoint
    assert {"manifest.json", "report.html", "report.md", "summary.csv", "figures"} <= {p.name for p in (out / "report").iterdir()}


def test_live_without_a_key_is_one_message_before_anything_happens(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--live", "-q"])
    assert r.exit_code == 2 and "--live asks the real Gemini API: set GEMINI_API_KEY" in r.output, r.output
    assert not (tmp_path / "d" / "runs").exists()


def test_a_file_as_out_and_a_folder_too_small_to_curate_are_one_message_before_training(tmp_path, monkeypatch):
    from conftest import make_kvasir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "file"), "-q"])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output, r.output
    small = make_kvasir(tmp_path / "k", n=12)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--data-root", str(small), "-q"])
    assert r.exit_code == 2 and "the demo needs at least" in r.output, r.output
    assert not (tmp_path / "d").exists()  # nothing trained, nothing written


def test_the_volume_demo_runs_every_2d_model_slice_by_slice_on_the_mni152_template(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    r = CliRunner().invoke(app, ["demo", "--volumes", "--out", str(tmp_path / "v"), "--minutes", "0.1", "-q"])
    assert r.exit_code == 0, r.output
    assert "MNI152" in r.output and "the real MNI152 template data" in r.output
    import sqlite3

    with sqlite3.connect(tmp_path / "v" / "runs" / "omniseg.sqlite") as db:
        rows = db.execute("SELECT model, status, mask_path, json_extract(meta, '$.slices') FROM predictions").fetchall()
    assert {m for m, *_ in rows} == {"unet", "otsu", "ellipse", "gemini"} and all(s == "ok" for _, s, *_ in rows)
    assert all(p.endswith(".nii.gz") and n == 6 for _, _, p, n in rows)  # every volume asked slice by slice
    md = (tmp_path / "v" / "report" / "report.md").read_text()
    assert "HD95 (mm)" in md and "white matter" in (tmp_path / "v" / "demo.yaml").read_text()

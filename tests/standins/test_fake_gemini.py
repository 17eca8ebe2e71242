"""The fake Gemini as a tool a person uses: it serves until interrupted, says how to point omniseg at it, and
a run pointed at it through GOOGLE_GEMINI_BASE_URL (no config edited) is named as its source in the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from typer.testing import CliRunner

from conftest import make_kvasir, write_config
from omniseg.cli import app


def test_it_serves_in_the_background_until_interrupted_and_a_run_reaches_it_by_the_sdks_variable(tmp_path, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-m", "omniseg.standins.fake_gemini", "--delay", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert proc.poll() is None  # stdin closed (a background job): it goes on serving
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        monkeypatch.setenv("GEMINI_API_KEY", "stand-in")  # any non-empty key, as its usage says
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        root = make_kvasir(tmp_path / "k", n=4)
        models = "  - name: gem\n    kind: gemini\n    options: {model: gemini-3.5-flash, target: polyp, max_side: 128}\n"
        cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models)  # no base_url in it
        store = tmp_path / "runs" / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
        assert r.exit_code == 0 and "gem: 4 API answers" in r.output, r.output
        r = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--split", "all",
                                     "--no-figures"])
        assert r.exit_code == 0, r.output
        md = (tmp_path / "rep" / "report.md").read_text()
        assert f"**`gem` did not answer from its provider's API** but from `{url}`" in md
        assert f"{url}" in (tmp_path / "rep" / "report.html").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "export GOOGLE_GEMINI_BASE_URL=" in err and "GEMINI_API_KEY=" in err and "any non-empty key" in err
    h = subprocess.run([sys.executable, "-m", "omniseg.standins.fake_gemini", "--help"], capture_output=True, text=True)
    assert "until interrupted" in " ".join(h.stdout.split()) and "GOOGLE_GEMINI_BASE_URL" in h.stdout

"""`omniseg probe` and `omniseg models` against the fake server answering as the live API does today."""

from __future__ import annotations

import socket

import pytest
from PIL import Image
from typer.testing import CliRunner

from omniseg.cli import app
from omniseg.standins import fake_gemini as fg
from omniseg.standins import gemini_answers as ga

from conftest import REPO, gemini_yaml, make_kvasir


@pytest.fixture(autouse=True)
def _key(api_key):
    return api_key


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_shows_what_the_api_answers_and_its_answers_are_not_paid_twice(tmp_path):
    root = make_kvasir(tmp_path / "k", n=10)
    with fg.FakeGemini(ga.live()) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, model="gemini-3.5-flash")
        store, out = tmp_path / "runs" / "s.sqlite", tmp_path / "probe"
        r = CliRunner().invoke(app, ["probe", "--config", str(path), "-n", "3", "--out", str(out), "--store", str(store)])
        assert r.exit_code == 0, r.output
        lines = [ln for ln in r.output.splitlines() if ln.startswith("case")]
        assert len(lines) == 3 and all("gemini-3.5-flash" in ln and "polygon/points" in ln for ln in lines)
        assert "'[{\"points\"" in r.output  # the start of the raw answer
        strips = sorted(out.glob("*.png"))
        assert len(strips) == 3
        w, h = Image.open(strips[0]).size
        assert h == 256 and w > 3 * 256 * 0.9  # image | reference | prediction
        assert not store.exists()  # a probe writes no store
        assert len(srv.log) == 3
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
        assert "gem: 7 API answers, 0 errors retried or final, 3 from the archive" in r.output
        assert len(srv.log) == 10


def test_probe_and_models_fail_with_one_message_without_key_or_network(tmp_path, monkeypatch):
    root = make_kvasir(tmp_path / "k", n=3)
    dead = f"http://127.0.0.1:{_closed_port()}"
    path = gemini_yaml(tmp_path, root, dead, model="gemini-3.5-flash", max_retries=0, timeout_s=5)
    cli = CliRunner()
    r = cli.invoke(app, ["probe", "--config", str(path), "-n", "2", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert f"got no answer from {dead}" in r.output and "Traceback" not in r.output
    r = cli.invoke(app, ["models", "--base-url", dead])
    assert r.exit_code == 2 and f"cannot list models at {dead}" in r.output and r.output.count("\n") == 1, r.output
    monkeypatch.delenv("GEMINI_API_KEY")
    r = cli.invoke(app, ["probe", "--config", str(path), "-n", "2", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "GEMINI_API_KEY or GOOGLE_API_KEY" in r.output, r.output
    r = cli.invoke(app, ["models", "--base-url", dead])
    assert r.exit_code == 2 and "GEMINI_API_KEY or GOOGLE_API_KEY" in r.output, r.output


def test_models_lists_what_the_key_reaches_and_marks_the_configs(tmp_path):
    cfgs = tmp_path / "configs"
    cfgs.mkdir()
    for p in (REPO / "configs").glob("*.yaml"):
        (cfgs / p.name).write_text(p.read_text())
    with fg.FakeGemini(ga.live(), today="2026-12-02") as srv:
        r = CliRunner().invoke(app, ["models", "--base-url", srv.url, "--config-dir", str(cfgs)])
    assert r.exit_code == 0, r.output
    listed = {ln[2:].split()[0]: ln for ln in r.output.splitlines() if ln[:2] in ("* ", "  ")}
    assert "gemini-3.5-flash" in listed and listed["gemini-3.5-flash"].startswith("*")
    assert "polyp:gemini" in listed["gemini-3.5-flash"]
    assert "gemini-2.5-flash" not in listed  # shut down on 2026-12-01: no longer listed
    assert "! gemini-2.5-flash" in r.output and "not reachable" in r.output
    assert len(listed) == 5  # every model served on that day, across pages of two

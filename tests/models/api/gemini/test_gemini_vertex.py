"""Gemini on Vertex AI: Application Default Credentials instead of a key, Vertex's URL shape, same rows.

The credentials are a service-account key file made for the test whose token endpoint is the fake
server's ``/token``; google-auth signs a JWT with it and trades it for a bearer token, which the fake
requires on ``{v}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import api_rows, gemini_yaml, make_kvasir
from omniseg.cli import app
from omniseg.store.database import Store
from omniseg.standins.fake_gemini import FakeGemini, service_account_file

runner = CliRunner()


@pytest.fixture
def no_google_env(monkeypatch, tmp_path):
    """No key, no ADC from the environment, gcloud's folder empty, no metadata-server probe."""
    for v in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
              "GOOGLE_CLOUD_LOCATION", "GOOGLE_GENAI_USE_VERTEXAI", "GCLOUD_PROJECT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return monkeypatch


def _rows(store: Path):
    with Store(store) as st:
        rows = api_rows(st)
        calls = st.query("SELECT sample_id, prompt_tokens, output_tokens, cost_usd FROM api_calls ORDER BY sample_id")
    return rows, calls


def test_a_vertex_run_gives_the_same_rows_as_the_api_key_path(tmp_path, no_google_env):
    root = make_kvasir(tmp_path / "K", n=8)
    with FakeGemini() as srv:
        no_google_env.setenv("GEMINI_API_KEY", "omniseg-test-key-not-real-0123456789abcd")
        keyed = runner.invoke(app, ["run", "--config", str(gemini_yaml(tmp_path, root, srv.url, name="gem")),
                                    "--store", str(tmp_path / "k.sqlite"), "-q"])
        assert keyed.exit_code == 0, keyed.output
        no_google_env.delenv("GEMINI_API_KEY")
        service_account_file(tmp_path / "sa.json", srv.url + "/token", project="clinic-project")
        no_google_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
        cfg = gemini_yaml(tmp_path, root, srv.url, name="gem", vertexai=True, location="europe-west4")
        r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "v.sqlite"), "-q"])
        assert r.exit_code == 0, r.output
        vertex = [e for e in srv.log if "/projects/" in e.get("path", "")]
        assert len(vertex) == 8 and len(srv.tokens) == 1  # one token, reused
        assert {e["path"] for e in vertex} == {
            "/v1/projects/clinic-project/locations/europe-west4/publishers/google/models/gemini-3.5-flash:generateContent"}
    (k_rows, k_calls), (v_rows, v_calls) = _rows(tmp_path / "k.sqlite"), _rows(tmp_path / "v.sqlite")
    assert list(v_rows["status"]) == ["ok"] * 8
    assert list(v_rows["sample_id"]) == list(k_rows["sample_id"]) and list(v_rows["dice"]) == list(k_rows["dice"])
    assert v_calls.to_dict("records") == k_calls.to_dict("records")  # same tokens, same cost


def test_vertex_from_the_environment_variables(tmp_path, no_google_env):
    root = make_kvasir(tmp_path / "K", n=3)
    with FakeGemini() as srv:
        service_account_file(tmp_path / "sa.json", srv.url + "/token", project="adc-project")
        no_google_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
        no_google_env.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
        no_google_env.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
        no_google_env.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
        r = runner.invoke(app, ["run", "--config", str(gemini_yaml(tmp_path, root, srv.url)), "--store",
                                str(tmp_path / "s.sqlite"), "-q"])
        assert r.exit_code == 0, r.output
        assert {e["path"].split("/publishers/")[0] for e in srv.log} == {"/v1/projects/env-project/locations/us-central1"}


def test_vertex_without_credentials_is_one_message(tmp_path, no_google_env):
    root = make_kvasir(tmp_path / "K", n=2)
    cfg = gemini_yaml(tmp_path, root, "http://127.0.0.1:9", vertexai=True, project="p")
    r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "s.sqlite"), "-q"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "uses Vertex AI but found no Application Default Credentials" in lines[0]
    assert "Traceback" not in r.output and "project" not in lines[0].split("):")[-1]  # the project was given
    cfg = gemini_yaml(tmp_path, root, "http://127.0.0.1:9", name="gem2", vertexai=True)
    r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "s2.sqlite"), "-q"])
    assert r.exit_code == 2 and "and no Google Cloud project" in r.output and "GOOGLE_CLOUD_PROJECT" in r.output


def test_vertex_credentials_without_a_project(tmp_path, no_google_env):
    root = make_kvasir(tmp_path / "K", n=2)
    service_account_file(tmp_path / "sa.json", "http://127.0.0.1:9/token")
    info = json.loads((tmp_path / "sa.json").read_text())
    del info["project_id"]
    (tmp_path / "sa.json").write_text(json.dumps(info))
    no_google_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    cfg = gemini_yaml(tmp_path, root, "http://127.0.0.1:9", vertexai=True)
    r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "s.sqlite"), "-q"])
    assert r.exit_code == 2 and "no Google Cloud project is known" in r.output


def test_batch_on_vertex_is_refused_when_the_config_is_loaded(tmp_path, no_google_env):
    root = make_kvasir(tmp_path / "K", n=2)
    cfg = gemini_yaml(tmp_path, root, "http://127.0.0.1:9", vertexai=True, project="p", batch=True)
    r = runner.invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "s.sqlite"), "-q"])
    assert r.exit_code == 2 and "Cloud Storage" in r.output and "models.0.options" in r.output

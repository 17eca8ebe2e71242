"""`omniseg redecode`: kept answers decoded again by a newer decoder, rescored, zero API calls, resumable."""

from __future__ import annotations


import pandas as pd
import pytest
from typer.testing import CliRunner

from omniseg.cli import app
from omniseg.models.api import forms
from omniseg.store.database import Store
from omniseg.standins import fake_gemini as fg
from omniseg.standins import gemini_answers as ga

from conftest import DOCUMENTED, api_rows, gemini_yaml, make_kvasir
import warm_start


@pytest.fixture(autouse=True)
def _key(api_key):
    return api_key


def test_a_newer_decoder_turns_kept_answers_into_ok_rows_with_zero_requests(tmp_path):
    root = make_kvasir(tmp_path / "k", n=24)
    with fg.FakeGemini(ga.live()) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, model="gemini-3.5-flash", prompts={"documented": DOCUMENTED},
                        prompt="documented")
        store = tmp_path / "runs" / "s.sqlite"
        cli = CliRunner()
        with pytest.MonkeyPatch.context() as old:  # yesterday's decoder: no polygons under "mask"
            old.setattr(forms, "POLYGON_KEYS", tuple(k for k in forms.POLYGON_KEYS if k != "mask"))
            old.setattr(forms, "DECODER_VERSION", "1")
            r = cli.invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
            assert r.exit_code == 0, r.output
        requests = len(srv.log)
        assert requests == 24
        r = cli.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "before"), "--split", "all",
                             "--no-figures"])
        assert r.exit_code == 0, r.output
        with Store(store) as st:
            assert set(api_rows(st)["status"]) == {"unknown_form"}
        # a fault after 5 rows: the redecode stops part-way and resumes without rewriting a row twice
        from omniseg.store import results as store_results

        calls = {"n": 0}
        real = store_results.rewrite

        def flaky(store, *a, **kw):
            calls["n"] += 1
            if calls["n"] == 6:
                raise OSError("disk went away")
            return real(store, *a, **kw)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store_results, "rewrite", flaky)
            r = cli.invoke(app, ["redecode", "--store", str(store), "-q"])
            assert r.exit_code != 0
        r = cli.invoke(app, ["redecode", "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
        assert "19 of 19 rows decoded again (unknown_form -> ok: 19)" in r.output and "0 API calls" in r.output
        assert len(srv.log) == requests  # not one request reached the server
        r = cli.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "after"), "--split", "all",
                             "--no-figures"])
        assert r.exit_code == 0, r.output
    with Store(store) as st:
        df = api_rows(st)
        booked = st.query("SELECT COUNT(*) n FROM api_calls")["n"][0]
    assert (df["status"] == "ok").all() and df["dice"].gt(0.5).all()
    assert df["meta"].map(lambda m: m["decoder_version"] == forms.DECODER_VERSION
                          and m["redecoded_from"] == {"status": "unknown_form", "decoder_version": "1"}).all()
    assert booked == 24  # redecode booked no call
    before = pd.read_csv(tmp_path / "before" / "summary.csv").set_index("subset").loc["all"]
    after = pd.read_csv(tmp_path / "after" / "summary.csv").set_index("subset").loc["all"]
    assert before["failure_rate"] == 1.0 and before["dice_mean"] == 0.0
    assert after["failure_rate"] == 0.0 and after["dice_mean"] > 0.5
    r = cli.invoke(app, ["redecode", "--store", str(store), "-q"])
    assert "0 of 0 rows decoded again" in r.output  # nothing left: each pair rewritten once


@pytest.mark.parametrize("kill_after", [1, 5])
def test_a_killed_redecode_resumes_rewrites_each_row_once_and_pays_nothing(tmp_path, kill_after):
    """SIGKILL right after the n-th row is rewritten, then redecode again: each row decoded once by today's
    decoder, no API call, every answer still booked once (the invariant check)."""
    import sqlite3

    import invariants
    from conftest import API_KEY, omniseg_with_fault

    root = make_kvasir(tmp_path / "k", n=12)
    with fg.FakeGemini(ga.live()) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, model="gemini-3.5-flash", prompts={"documented": DOCUMENTED},
                           prompt="documented")
        store = tmp_path / "runs" / "s.sqlite"
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
        with sqlite3.connect(store) as db:  # as if an older decoder had read them
            db.execute("UPDATE predictions SET meta = json_set(meta, '$.decoder_version', '1')")
        requests = len(srv.log)
        killed = omniseg_with_fault(["redecode", "--store", store, "-q"], "omniseg.store.results:rewrite", kill_after)
        assert killed.returncode == -9, killed.stderr
        with sqlite3.connect(store) as db:
            done = db.execute("SELECT COUNT(*) FROM predictions WHERE json_extract(meta, '$.decoder_version') = ?",
                              (forms.DECODER_VERSION,)).fetchone()[0]
        assert done == kill_after
        again = warm_start.omniseg(["redecode", "--store", str(store), "-q"])
        assert again.returncode == 0, again.stderr
        assert f"{12 - kill_after} of {12 - kill_after} rows decoded again" in again.stdout, again.stdout
        assert len(srv.log) == requests
    with Store(store) as st:
        df = api_rows(st)
    assert (df["status"] == "ok").all()
    assert df["meta"].map(lambda m: m["decoder_version"] == forms.DECODER_VERSION and
                          m["redecoded_from"]["decoder_version"] == "1").all()
    invariants.check(store, asked={(f"case{i:03d}", "gem") for i in range(12)}, key=API_KEY, served_ok=requests,
                     answers_expected=12)

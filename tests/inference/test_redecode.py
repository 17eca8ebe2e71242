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


def test_redecode_called_directly_keeps_each_rows_bookkeeping_and_touches_only_what_it_is_asked(tmp_path, capsys):
    """The function behind the command, row by row: the task asked for and no other, today's rows left alone
    unless ``everything``, the dataset read from ``data_root`` when it moved, an answer kept in the row read
    like one in the archive, a row whose sample is gone or whose meta is empty counted as without answer, the
    stored mask the one scored, the bookkeeping of the row kept and its token counts not copied (booked once,
    by the run), the claim on the model given back, and a progress line that names the task and model."""
    import json
    import shutil
    import sqlite3

    from omniseg import config as omniseg_config, datasets, models
    from omniseg.inference.redecode import redecode
    from omniseg.inference.runner import run_context
    from omniseg.store import masks as store_masks

    root = make_kvasir(tmp_path / "k", n=6)
    store = tmp_path / "runs" / "s.sqlite"
    with fg.FakeGemini(ga.live()) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, model="gemini-3.5-flash", prompts={"documented": DOCUMENTED},
                           prompt="documented")
        other = tmp_path / "other.yaml"
        other.write_text(path.read_text().replace("task: polyp", "task: polyp_b"))
        with pytest.MonkeyPatch.context() as old:  # yesterday's decoder: no polygons under "mask"
            old.setattr(forms, "POLYGON_KEYS", tuple(k for k in forms.POLYGON_KEYS if k != "mask"))
            old.setattr(forms, "DECODER_VERSION", "1")
            for cfg in (path, other):
                r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
                assert r.exit_code == 0, r.output
        requests = len(srv.log)
    with sqlite3.connect(store) as db:
        # case001's answer kept in its row (as a full disk leaves it), not in the archive; case002's meta empty
        meta = json.loads(db.execute("SELECT meta FROM predictions WHERE task='polyp' AND sample_id='case001'").fetchone()[0])
        with Store(store) as st:
            seg = models.build(omniseg_config.load(path).model("gem"))
            seg.bind(run_context(st.root))
            raw = seg.archive.get(meta["cache_key"])
            seg.close()
        assert raw is not None
        meta = {k: v for k, v in meta.items() if k != "cache_key"} | {"unkept_answer": raw}
        db.execute("UPDATE predictions SET meta=? WHERE task='polyp' AND sample_id='case001'", (json.dumps(meta),))
        db.execute("UPDATE predictions SET meta=NULL WHERE task='polyp' AND sample_id='case002'")
        before = {r[0]: json.loads(r[1] or "{}") for r in
                  db.execute("SELECT sample_id, meta FROM predictions WHERE task='polyp'")}
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    for sub in ("images", "masks"):
        (moved / sub / "case005.jpg").unlink()  # case005's sample is gone from the dataset
    with Store(store) as st:
        capsys.readouterr()
        done = redecode(st, task="polyp", data_root=moved)
        progress = capsys.readouterr().err
        assert st.query("SELECT COUNT(*) n FROM workers")["n"][0] == 0  # the claim was given back
        rows = st.query("SELECT p.sample_id, p.status, p.meta, c.dice FROM predictions p LEFT JOIN scores c "
                        "USING (task, sample_id, model) WHERE p.task = 'polyp'").set_index("sample_id")
        rows["meta"] = rows["meta"].map(lambda m: json.loads(m) if isinstance(m, str) else {})
        tasks = st.query("SELECT task, COUNT(*) n FROM predictions WHERE json_extract(meta, '$.decoder_version') = ? "
                         "GROUP BY task", (forms.DECODER_VERSION,))
        paths = st.query("SELECT sample_id, mask_path FROM predictions WHERE task='polyp'").set_index("sample_id")
        ds = datasets.open("kvasir-seg", moved)
        for sid in ("case000", "case001", "case003", "case004"):
            ref = ds.load(next(r for r in ds.refs("all") if r.id == sid)).mask
            m = store_masks.load_mask(st, paths.loc[sid, "mask_path"], ref.shape)
            assert 2 * (m & ref).sum() / (m.sum() + ref.sum()) == pytest.approx(rows.loc[sid, "dice"])
        assert [(d.task, d.model, d.rows, d.rewritten, d.without_answer) for d in done] == [("polyp", "gem", 6, 4, 2)]
        assert "redecode polyp/gem" in progress and "row/s" in progress, progress
        assert dict(zip(tasks.task, tasks.n)) == {"polyp": 4}  # polyp_b left as it was
        models_recorded = st.query("SELECT task, model, kind FROM models ORDER BY 1, 2").values.tolist()
        assert models_recorded == [["polyp", "gem", "gemini"], ["polyp_b", "gem", "gemini"]]
        for sid in ("case000", "case001", "case003", "case004"):
            new = rows.loc[sid, "meta"]
            assert rows.loc[sid, "status"] == "ok" and "tokens" not in new
            for k in ("cache_hit", "cache_key", "attempts", "unkept_answer"):
                assert new.get(k) == before[sid].get(k), (sid, k)
        assert rows.loc["case001", "meta"]["unkept_answer"] == raw
        quiet = redecode(st, task="polyp", data_root=moved, progress=False)
        assert capsys.readouterr().err == ""  # progress=False: nothing on stderr
        assert [(d.rows, d.rewritten, d.without_answer) for d in quiet] == [(2, 0, 2)]  # today's rows left alone
        again = redecode(st, task="polyp", data_root=moved, everything=True, progress=False)
        assert [(d.rows, d.rewritten) for d in again] == [(6, 4)]
    assert len(srv.log) == requests

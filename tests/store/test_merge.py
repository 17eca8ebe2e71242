"""`omniseg run --shard K/N` and `omniseg merge`: four shards, merged, give what one unsharded run gives."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import invariants
from conftest import gemini_yaml, make_kvasir, run_killed_after_writes
from omniseg.cli import app
from omniseg.evaluation.runner import in_shard, parse_shard
from omniseg.errors import OmnisegError
from omniseg.testing.fake_gemini import FakeGemini

LOCAL = ("  - name: otsu\n    kind: otsu\n    options: {foreground: bright, sigma: 1.0}\n"
         "  - name: ellipse\n    kind: ellipse\n")
N = 24


def cli(*args) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output)
    return r.output


def report(store: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    cli("curate", "--store", store, "-n", "5", "-q")
    cli("report", "--store", store, "--out", out, "--split", "all", "--no-figures", "--no-html")
    per_image = pd.read_csv(out / "per_image.csv").drop(columns=["elapsed_s"])  # model time differs run to run
    return per_image, pd.read_csv(out / "summary.csv")


def table(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def digest(db: Path) -> str:
    """Everything a second merge could change: rows of every table but the workers'."""
    h = hashlib.sha256()
    for t in ("runs", "models", "samples", "predictions", "scores", "api_calls", "batch_jobs", "difficulty"):
        h.update(repr(table(db, f"SELECT * FROM {t} ORDER BY 1, 2, 3")).encode())
    return h.hexdigest()


def test_the_shards_are_disjoint_cover_every_sample_and_do_not_depend_on_the_others():
    ids = [f"case{i:04d}" for i in range(1000)]
    slices = [{i for i in ids if in_shard(i, (k, 4))} for k in range(1, 5)]
    assert set().union(*slices) == set(ids) and sum(map(len, slices)) == 1000
    assert all(180 < len(s) < 320 for s in slices)  # a hash, not a split by position
    assert {i for i in ids[:10] if in_shard(i, (2, 4))} == slices[1] & set(ids[:10])
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "2", "a/b", "-1/3"):
        with pytest.raises(OmnisegError, match="expected K/N"):
            parse_shard(bad)


def test_four_shards_merged_give_the_rows_scores_bookings_and_report_of_one_run(tmp_path, api_key):
    root = make_kvasir(tmp_path / "k", n=N)
    with FakeGemini() as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url)
        cfg.write_text(cfg.read_text() + LOCAL)
        whole = tmp_path / "whole" / "s.sqlite"
        cli("run", "--config", cfg, "--store", whole, "-q")
        shards = [tmp_path / f"shard{k}" / "s.sqlite" for k in range(1, 5)]
        for k, store in enumerate(shards, start=1):
            args = ["run", "--config", cfg, "--store", store, "-q", "--shard", f"{k}/4", "--batch-size", "2"]
            if k == 2:  # killed part-way, then rerun: it still merges exactly once
                killed = run_killed_after_writes([str(a) for a in args], 3)
                assert killed.returncode == -signal.SIGKILL, killed.stderr
            cli(*args)
        served = len([e for e in srv.log if e["kind"] == "ok"])
    sizes = [table(s, "SELECT COUNT(DISTINCT sample_id) FROM predictions")[0][0] for s in shards]
    assert sum(sizes) == N and all(sizes)
    merged = tmp_path / "merged" / "s.sqlite"
    out = cli("merge", *shards, "--into", merged)
    assert f"{3 * N} pairs added, 0 already there" in out
    invariants.check(merged, asked={(f"case{i:03d}", m) for i in range(N) for m in ("gem", "otsu", "ellipse")},
                     key=api_key, served_ok=served - N, report=False)  # the unsharded run was served N more
    a_rows, a_sum = report(whole, tmp_path / "rep_whole")
    b_rows, b_sum = report(merged, tmp_path / "rep_merged")
    pd.testing.assert_frame_equal(a_rows, b_rows)
    pd.testing.assert_frame_equal(a_sum, b_sum)
    # every answer booked once (a killed shard's rerun takes its kept answers from the archive, as cache hits at 0)
    bookings = ("SELECT model, COUNT(*), ROUND(SUM(cost_usd), 9) FROM api_calls WHERE outcome IN ('answered', "
                "'recovered', 'batch') GROUP BY model")
    assert table(merged, bookings) == table(whole, bookings) and table(whole, bookings)[0][1] == N
    assert table(merged, "SELECT COUNT(*) FROM runs")[0][0] == 5  # four shards, one of them run twice
    assert len(table(merged.with_name("answers.sqlite"), "SELECT key FROM answers")) == N
    before = digest(merged)
    again = cli("merge", *shards, "--into", merged)
    assert "0 pairs added, 72 already there; 0 runs, 0 API call records, 0 mask files, 0 archived answers" in again
    assert digest(merged) == before


def test_stores_made_with_other_settings_are_refused_naming_the_model(tmp_path):
    root = make_kvasir(tmp_path / "k", n=6)
    from conftest import write_config

    one = write_config(tmp_path / "a.yaml", "polyp", "kvasir-seg", root, LOCAL)
    other = write_config(tmp_path / "b.yaml", "polyp", "kvasir-seg", root, LOCAL.replace("sigma: 1.0", "sigma: 3.0"))
    cli("run", "--config", one, "--store", tmp_path / "a" / "s.sqlite", "-q", "--shard", "1/2")
    cli("run", "--config", other, "--store", tmp_path / "b" / "s.sqlite", "-q", "--shard", "2/2")
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "a" / "s.sqlite"), str(tmp_path / "b" / "s.sqlite"),
                                 "--into", str(tmp_path / "m" / "s.sqlite")])
    assert r.exit_code == 2 and "model 'otsu' of task 'polyp' was made with other settings" in r.output, r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "nowhere.sqlite"), "--into", str(tmp_path / "m2.sqlite")])
    assert r.exit_code == 2 and "no store there" in r.output

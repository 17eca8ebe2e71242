"""`omniseg run --executor local|slurm --shards N`: the shards submitted, followed and merged give the store an
unsharded run gives; an API model pays each answer once; a shard killed part-way resumes on the same command."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import OTSU, make_kvasir, write_config
from omniseg.cli import app

MODELS = OTSU + "  - name: ellipse\n    kind: ellipse\n"


def _table(store: Path) -> dict:
    """What a store holds, independent of how it was made: rows, statuses and scores per pair, and the bookings."""
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT p.task, p.sample_id, p.model, p.status, s.dice, s.hd95 FROM predictions p LEFT JOIN "
                          "scores s USING (task, sample_id, model) ORDER BY 1, 2, 3").fetchall()
        calls = db.execute("SELECT sample_id, model, outcome, cache_key FROM api_calls ORDER BY 1, 2, 3, 4").fetchall()
    return {"rows": rows, "calls": calls}


def _run(*args: str):
    r = CliRunner().invoke(app, ["run", *args, "-q"])
    return r


@pytest.fixture
def study(tmp_path):
    root = make_kvasir(tmp_path / "k", n=14)
    return write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, MODELS)


def test_local_shards_merge_into_the_store_an_unsharded_run_makes(tmp_path, study):
    plain, sharded = tmp_path / "plain" / "s.sqlite", tmp_path / "sharded" / "s.sqlite"
    assert _run("--config", str(study), "--store", str(plain)).exit_code == 0
    r = _run("--config", str(study), "--store", str(sharded), "--executor", "local", "--shards", "4")
    assert r.exit_code == 0, r.output
    assert "4 shard(s) through local; 4 merged" in r.output
    assert _table(sharded) == _table(plain) and len(_table(plain)["rows"]) == 28
    again = _run("--config", str(study), "--store", str(sharded), "--executor", "local", "--shards", "4")
    assert again.exit_code == 0 and "(0 pairs added)" in again.output  # merged exactly once
    assert _table(sharded) == _table(plain)


def test_slurm_through_submitits_local_executor_gives_the_same_store(tmp_path, study):
    pytest.importorskip("submitit")
    plain, sharded = tmp_path / "plain" / "s.sqlite", tmp_path / "sharded" / "s.sqlite"
    assert _run("--config", str(study), "--store", str(plain)).exit_code == 0
    r = _run("--config", str(study), "--store", str(sharded), "--executor", "slurm", "--shards", "2",
             "--executor-param", "cluster=local", "--time-min", "5")
    assert r.exit_code == 0, r.output
    assert _table(sharded) == _table(plain)
    assert any((sharded.parent / "shards" / "s" / "submitit").iterdir())  # submitit's own job folder


def test_ray_tasks_on_a_local_runtime_give_the_same_store(tmp_path, study):
    pytest.importorskip("ray")
    plain, sharded = tmp_path / "plain" / "s.sqlite", tmp_path / "sharded" / "s.sqlite"
    assert _run("--config", str(study), "--store", str(plain)).exit_code == 0
    r = _run("--config", str(study), "--store", str(sharded), "--executor", "ray", "--shards", "3",
             "--executor-param", "num_cpus=2")
    assert r.exit_code == 0, r.output
    assert "3 shard(s) through ray; 3 merged" in r.output
    assert _table(sharded) == _table(plain)


def test_a_shard_killed_part_way_resumes_on_the_same_command(tmp_path, study):
    # the fault rides in with the shards' interpreter (sitecustomize on PYTHONPATH): shard 2 of 3 is killed after its
    # second recorded pair, once; the product has no hook
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "killed-once"
    (site / "sitecustomize.py").write_text(f"""
import os, signal, sys
if "2/3" in sys.argv and not os.path.exists({str(marker)!r}):
    import omniseg.store.results as d
    real, n = d.record, [0]
    def record(store, *a, **k):
        real(store, *a, **k)
        n[0] += 1
        if n[0] == 2:
            open({str(marker)!r}, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    d.record = record
""")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(site) + (os.pathsep + old if old else "")
    try:
        plain, sharded = tmp_path / "plain" / "s.sqlite", tmp_path / "sharded" / "s.sqlite"
        assert _run("--config", str(study), "--store", str(plain)).exit_code == 0
        first = _run("--config", str(study), "--store", str(sharded), "--executor", "local", "--shards", "3")
        assert first.exit_code != 0 and marker.exists()
        assert "2/3: exit -9" in first.output and "rerun the same command" in first.output
        partial = _table(sharded)["rows"]
        assert 0 < len(partial) < 28  # the finished shards were merged; the killed one was not
        second = _run("--config", str(study), "--store", str(sharded), "--executor", "local", "--shards", "3")
        assert second.exit_code == 0, second.output
        assert _table(sharded) == _table(plain)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_an_api_model_sharded_pays_each_answer_once(tmp_path, sent_polyps):
    from conftest import openai_yaml
    from omniseg.standins import fake_openai as fo

    root, masks, shas = sent_polyps
    with fo.FakeOpenAI(lambda req: fo.completion(fo.boxes(masks[shas[req.image_sha]]))) as srv:
        cfg = openai_yaml(tmp_path, root, srv.url, mode="box")
        store = tmp_path / "runs" / "s.sqlite"
        r = _run("--config", str(cfg), "--store", str(store), "--executor", "local", "--shards", "3")
        assert r.exit_code == 0, r.output
        assert len(srv.log) == len(masks)
        assert _run("--config", str(cfg), "--store", str(store), "--executor", "local", "--shards", "3").exit_code == 0
        assert len(srv.log) == len(masks)  # the rerun reads every answer from the shards' archive
    calls = _table(store)["calls"]
    answered = [c for c in calls if c[2] == "answered"]
    assert len(answered) == len({c[3] for c in answered}) == len(masks)


def test_executor_options_are_checked(tmp_path, study):
    r = _run("--config", str(study), "--store", str(tmp_path / "s.sqlite"), "--executor", "kubernetes")
    assert r.exit_code != 0 and "expected one of local, slurm, ray" in r.output
    r = _run("--config", str(study), "--store", str(tmp_path / "s.sqlite"), "--executor", "local", "--shard", "1/2")
    assert r.exit_code != 0 and "leave --shard out" in r.output
    r = _run("--config", str(study), "--store", str(tmp_path / "s.sqlite"), "--executor", "slurm",
             "--executor-param", "nonsense")
    assert r.exit_code != 0 and "expected KEY=VALUE" in r.output

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
from omniseg.inference.runner import in_shard, parse_shard
from omniseg.errors import OmnisegError
from omniseg.standins.fake_gemini import FakeGemini
from omniseg.store import reviews as store_reviews

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
    for bad in ("0/4", "5/4", "2", "a/b", "-1/3", "²/3", "1/³", "١/2"):
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
    # the unsharded run was served N more; the killed shard's answers on the wire (up to max_in_flight) are asked again
    invariants.check(merged, asked={(f"case{i:03d}", m) for i in range(N) for m in ("gem", "otsu", "ellipse")},
                     key=api_key, served_ok=served - N, repeats_allowed=8, report=False)
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


FOLDER = "task: polyp\ndataset:\n  name: folder\n  root: {root}\n  options: {{masks: masks, threshold: {t}}}\nsplit: all\nmodels:\n"


def folder_study(tmp_path: Path, n: int = 8) -> Path:
    """A Kvasir-shaped folder read by the `folder` kind, whose mask threshold is a dataset setting."""
    return make_kvasir(tmp_path / "k", n=n)


def test_sources_that_disagree_with_each_other_are_refused_before_anything_is_written(tmp_path):
    root = folder_study(tmp_path)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(FOLDER.format(root=root, t=128) + LOCAL)
    b.write_text(FOLDER.format(root=root, t=250) + LOCAL)
    cli("run", "--config", a, "--store", tmp_path / "sa" / "s.sqlite", "-q", "--shard", "1/2")
    cli("run", "--config", b, "--store", tmp_path / "sb" / "s.sqlite", "-q", "--shard", "2/2")
    target = tmp_path / "m" / "s.sqlite"
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "sa" / "s.sqlite"), str(tmp_path / "sb" / "s.sqlite"),
                                 "--into", str(target)])
    assert r.exit_code == 2 and "other dataset settings" in r.output and "dataset.options" in r.output, r.output
    assert "250" in r.output and "128" in r.output and not target.exists()
    # the same samples in two stores, in different splits (each alone against an empty target is fine)
    cli("run", "--config", a, "--store", tmp_path / "c1" / "s.sqlite", "-q")
    cli("run", "--config", a, "--store", tmp_path / "c2" / "s.sqlite", "-q")
    with sqlite3.connect(tmp_path / "c2" / "s.sqlite") as db:
        db.execute("UPDATE samples SET split = CASE split WHEN 'train' THEN 'test' ELSE 'train' END "
                   "WHERE sample_id = 'case003'")
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "c1" / "s.sqlite"), str(tmp_path / "c2" / "s.sqlite"),
                                 "--into", str(target)])
    assert r.exit_code == 2 and "sample 'case003'" in r.output and "different splits" in r.output, r.output
    assert not target.exists()
    # a target run with other settings than a source: refused too, the target unchanged
    cli("merge", tmp_path / "sa" / "s.sqlite", "--into", target)
    before = digest(target)
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "sb" / "s.sqlite"), "--into", str(target)])
    assert r.exit_code == 2 and "other dataset settings" in r.output and digest(target) == before


def test_a_store_merged_while_its_run_was_writing_ends_its_run_at_the_next_merge(tmp_path):
    import shutil

    root = make_kvasir(tmp_path / "k", n=8)
    from conftest import write_config

    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, LOCAL)
    shard = tmp_path / "sh" / "s.sqlite"
    cli("run", "--config", cfg, "--store", shard, "-q")
    # the store as a merge saw it mid-run: the run marked running (by this live process), half of its rows written
    mid = tmp_path / "mid" / "s.sqlite"
    shutil.copytree(shard.parent, mid.parent)
    import os

    with sqlite3.connect(mid) as db:
        db.execute("UPDATE runs SET status = 'running', finished_at = NULL, summary = NULL, pid = ?", (os.getpid(),))
        db.execute("DELETE FROM predictions WHERE sample_id > 'case003'")
        db.execute("DELETE FROM scores WHERE sample_id > 'case003'")
    with sqlite3.connect(shard) as db:
        db.execute("UPDATE runs SET pid = ?", (os.getpid(),))
    target = tmp_path / "m" / "s.sqlite"
    cli("merge", mid, "--into", target)
    assert table(target, "SELECT status FROM runs") == [("running",)]
    cli("merge", shard, "--into", target)
    assert table(target, "SELECT status, finished_at IS NOT NULL, summary IS NOT NULL FROM runs") == [("finished", 1, 1)]
    assert table(target, "SELECT COUNT(*) FROM predictions") == [(16,)]
    with sqlite3.connect(shard) as db:
        db.execute("UPDATE runs SET status = 'running'")  # a later merge of an older copy does not undo the end
    cli("merge", shard, "--into", target)
    assert table(target, "SELECT status FROM runs") == [("finished",)]


def test_a_merge_that_adds_pairs_says_the_review_items_are_stale_and_review_rebuilds_them(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "study" / "review"))
    import planted_study as ps
    from omniseg.study.review import items

    st, _ = ps.make(tmp_path / "whole", n=12)
    st.close()
    from omniseg.store.database import Store

    src = tmp_path / "whole" / "runs" / "s.sqlite"
    part = tmp_path / "part" / "s.sqlite"
    part.parent.mkdir()
    import shutil

    shutil.copy(src, part)
    with sqlite3.connect(part) as db:
        db.execute("DELETE FROM predictions WHERE sample_id >= 'case006'")
        db.execute("DELETE FROM scores WHERE sample_id >= 'case006'")
    with Store(part) as st:
        (tmp_path / "part" / "masks").symlink_to(tmp_path / "whole" / "runs" / "masks")
        half = items.build(st, "polyp")["items"]
    out = cli("merge", src, "--into", part)
    assert "review items predate the pairs just added" in out and "--rebuild" in out
    with Store(part) as st:
        whole = items.build(st, "polyp")["items"]  # no answers yet: built again from every pair
        assert whole > half
        some = sorted(items.load(st, "polyp"))[0]
        store_reviews.put_review(st, "polyp", some, "ann", "model_wrong")
        st.db.execute("UPDATE predictions SET created_at = created_at + 1 WHERE sample_id = 'case000'")  # redone
        with pytest.raises(OmnisegError, match="changed since they were built"):
            items.build(st, "polyp")
        assert items.build(st, "polyp", rebuild=True)["items"] == whole
        assert len(st.query("SELECT * FROM reviews")) == 0


def test_a_shard_with_no_sample_succeeds_with_nothing_to_do_so_a_job_arrays_merge_runs(tmp_path):
    """Found by tests/cli/test_sequences.py: three shards of four images left one shard empty, which failed (exit
    2) and would have kept a SLURM array's `afterok` merge from ever running."""
    from conftest import write_config

    root = make_kvasir(tmp_path / "k", n=2)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, LOCAL)
    outs = []
    for k in range(1, 9):
        r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / f"s{k}" / "s.sqlite"),
                                     "-q", "--shard", f"{k}/8"])
        assert r.exit_code == 0, r.output
        outs.append(r.output)
    empty = [k for k, o in enumerate(outs, start=1) if "nothing to do" in o]
    written = sorted(tmp_path.glob("s*/s.sqlite"))
    assert len(empty) >= 6 and len(written) == 8 - len(empty)
    assert all(not (tmp_path / f"s{k}").exists() for k in empty)  # no store, no folder
    cli("merge", *written, "--into", tmp_path / "m" / "s.sqlite")
    assert table(tmp_path / "m" / "s.sqlite", "SELECT COUNT(*) FROM predictions") == [(4,)]
    r = CliRunner().invoke(app, ["run", "--config", str(cfg), "--store", str(tmp_path / "x.sqlite"), "-q",
                                 "--split", "train"])
    assert r.exit_code == 2 and "no samples in split 'train'" in r.output  # no shard: still an error


def test_copies_of_one_image_land_in_one_shard_and_are_paid_once(tmp_path, api_key):
    """Found by tests/cli/test_sequences.py: a duplicate image under two ids fell into two shards, each shard paid
    for the same answer and the merged store booked it twice. A sample's shard follows its image's content."""
    from omniseg.inference.runner import select_refs
    from omniseg import datasets

    root = make_kvasir(tmp_path / "k", n=8)
    for sub in ("images", "masks"):
        for k in range(3):
            (root / sub / f"copy{k} of case000.jpg").write_bytes((root / sub / "case000.jpg").read_bytes())
    ds = datasets.open("kvasir-seg", root)
    holding = [k for k in range(1, 5) if "case000" in {r.id for r in select_refs(ds, "all", None, (k, 4))}]
    copies = {k for k in range(1, 5) for r in select_refs(ds, "all", None, (k, 4)) if r.id.startswith("copy")}
    assert len(holding) == 1 and copies == set(holding)
    with FakeGemini() as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url)
        shards = [tmp_path / f"shard{k}" / "s.sqlite" for k in range(1, 5)]
        for k, store in enumerate(shards, start=1):
            cli("run", "--config", cfg, "--store", store, "-q", "--shard", f"{k}/4")
        served = [e["image_sha"] for e in srv.log if e["kind"] == "ok"]
    assert len(served) == len(set(served)) == 8
    target = tmp_path / "m" / "s.sqlite"
    cli("merge", *[s for s in shards if s.is_file()], "--into", target)
    invariants.check(target, asked={(r.id, "gem") for r in ds.refs("all")}, key=api_key, served_ok=8)


def test_a_source_that_disagrees_with_the_target_alone_is_refused_and_the_target_unchanged(tmp_path):
    """Each source against what the target already holds: a model made with other settings, a sample in another
    split (the sources agreeing with each other is not enough)."""
    from conftest import write_config

    root = make_kvasir(tmp_path / "k", n=6)
    one = write_config(tmp_path / "a.yaml", "polyp", "kvasir-seg", root, LOCAL)
    other = write_config(tmp_path / "b.yaml", "polyp", "kvasir-seg", root, LOCAL.replace("sigma: 1.0", "sigma: 3.0"))
    for name, cfg in (("a", one), ("b", one), ("c", other)):
        cli("run", "--config", cfg, "--store", tmp_path / name / "s.sqlite", "-q")
    target = tmp_path / "m" / "s.sqlite"
    cli("merge", tmp_path / "a" / "s.sqlite", "--into", target)
    before = digest(target)
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "c" / "s.sqlite"), "--into", str(target)])
    assert r.exit_code == 2 and "model 'otsu' of task 'polyp' was made with other settings" in r.output, r.output
    assert str(target) in r.output and digest(target) == before
    with sqlite3.connect(tmp_path / "b" / "s.sqlite") as db:
        db.execute("UPDATE samples SET split = CASE split WHEN 'train' THEN 'test' ELSE 'train' END "
                   "WHERE sample_id = 'case002'")
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "b" / "s.sqlite"), "--into", str(target)])
    assert r.exit_code == 2 and "sample 'case002' of task 'polyp' is in split" in r.output, r.output
    assert "these stores saw different splits" in r.output and digest(target) == before


def test_runs_pairs_calls_and_difficulty_are_renumbered_into_the_target_and_counted(tmp_path, api_key):
    """A target that already holds another store's run, then one run of a source, then the whole source (that run
    again and a newer one): each run is added once, each prediction and API call points at its own run under the
    target's numbering, the curated difficulty comes along, and the counts say what was added and what was there."""
    import shutil

    from conftest import write_config
    from omniseg.store.merge import merge

    root = make_kvasir(tmp_path / "k", n=6)
    other = tmp_path / "x" / "s.sqlite"
    cli("run", "--config", write_config(tmp_path / "x.yaml", "polyp", "kvasir-seg", root, LOCAL), "--store", other, "-q")
    src = tmp_path / "src" / "s.sqlite"
    with FakeGemini() as srv:
        cfg = gemini_yaml(tmp_path, root, srv.url)
        cli("run", "--config", cfg, "--store", src, "-q", "--shard", "1/2")
        first = tmp_path / "first" / "s.sqlite"
        shutil.copytree(src.parent, first.parent)  # the source as it was after its first run
        cli("run", "--config", cfg, "--store", src, "-q", "--shard", "2/2")
    cli("curate", "--store", other, "-n", "2", "--strata", "-q")
    target = tmp_path / "m" / "s.sqlite"
    merge([other], target)
    once = merge([first], target)
    shard1 = table(src, "SELECT COUNT(*) FROM predictions p JOIN runs r USING (run_id) WHERE r.run_id = 1")[0][0]
    assert (once.runs_added, once.pairs_added) == (1, shard1)
    whole = merge([src], target)
    assert (whole.runs_added, whole.pairs_present, whole.pairs_added) == (1, shard1, 6 - shard1)
    assert table(target, "SELECT run_id FROM runs ORDER BY run_id") == [(1,), (2,), (3,)]
    assert merge([src], tmp_path / "m2" / "s.sqlite").runs_added == 2
    cli("curate", "--store", target, "-n", "2", "-q")
    again = merge([src], target)  # nothing new: no note that the curated subsets predate the pairs
    assert (again.pairs_present, again.pairs_added, again.notes, merge([src, src], target).pairs_present) == (6, 0, [], 12)
    # each source run is the target's run with the same start; its pairs and calls point at it
    starts = dict(table(src, "SELECT run_id, started_at FROM runs"))
    renumbered = dict(table(target, "SELECT started_at, run_id FROM runs"))
    expected = sorted((sid, renumbered[starts[run]]) for sid, run in table(src, "SELECT sample_id, run_id FROM predictions"))
    assert sorted(table(target, "SELECT sample_id, run_id FROM predictions WHERE model = 'gem'")) == expected
    assert sorted(table(target, "SELECT sample_id, run_id FROM api_calls")) == expected
    assert sorted(table(target, "SELECT * FROM difficulty")) == sorted(table(other, "SELECT * FROM difficulty")) != []
    # what each merge says it added: calls, mask files and kept answers, one of each per pair here
    assert (once.calls_added, once.files_copied, once.answers_added) == (shard1, shard1, shard1)
    assert (whole.calls_added, whole.files_copied, whole.answers_added) == (6 - shard1, 6 - shard1, 6 - shard1)
    masks = table(target, "SELECT mask_path FROM predictions WHERE model = 'gem'")
    assert len(masks) == 6 and all((target.parent / m).is_file() for (m,) in masks)
    assert table(target.with_name("answers.sqlite"), "SELECT COUNT(*) FROM answers") == [(6,)]
    both = merge([first, src], tmp_path / "m3" / "s.sqlite")  # two sources in one merge: the counts add up
    assert (both.pairs_added, both.calls_added, both.files_copied, both.answers_added) == (6, 6, 6, 6)
    # rerun with --force (answers from the archive, no call): the pairs are the new run's, the calls stay the first's
    with FakeGemini() as srv:
        cli("run", "--config", gemini_yaml(tmp_path, root, srv.url), "--store", src, "-q", "--force")
        assert srv.log == []
    merge([src], tmp_path / "m4" / "s.sqlite")
    starts = dict(table(src, "SELECT run_id, started_at FROM runs"))
    renumbered = dict(table(tmp_path / "m4" / "s.sqlite", "SELECT started_at, run_id FROM runs"))
    for tbl in ("predictions", "api_calls"):
        mapped = sorted((sid, renumbered[starts[run]]) for sid, run in table(src, f"SELECT sample_id, run_id FROM {tbl}"))
        assert sorted(table(tmp_path / "m4" / "s.sqlite", f"SELECT sample_id, run_id FROM {tbl}")) == mapped, tbl
    assert table(src, "SELECT DISTINCT run_id FROM predictions") == [(3,)]


@pytest.mark.parametrize("dropped", [("predictions", ("answer_form", "confidence", "answer_head", "endpoint")),
                                     ("models", ("privileged", "api_model"))], ids=["row-fields", "model-fields"])
def test_a_source_from_before_schema_6_is_only_read_and_its_fields_are_filled_in_the_target(tmp_path, dropped):
    """A store written before schema 6 (either group of its JSON fields not yet columns) merges into a target whose
    columns are filled from the rows' JSON, as a migration fills them; the source itself is not migrated."""
    import shutil

    from omniseg.store import results as store_results, runs as store_runs
    from omniseg.store.database import Store
    from omniseg.store.merge import merge

    new = tmp_path / "new" / "s.sqlite"
    with Store(new) as st:
        run = store_runs.start_run(st, "t", "test", ["gem", "box"], {"task": "t"}, "h", None)
        store_results.add_samples(st, "t", [("a", "test", None, {})])
        store_runs.set_model(st, "t", "gem", "gemini", {"options": {"model": "gemini-x"}}, "h1", "omnimodel")
        store_runs.set_model(st, "t", "box", "sam3", {"privileged": True, "options": {}}, "h2", "foundation")
        store_results.record(st, run, "t", "a", "gem", status="ok", scores={"dice": 0.5}, meta={
            "answer_form": "boxes", "confidence": 0.25, "answer_head": "[{\"box_2d\"", "endpoint": "http://h/v1"})
        store_results.record(st, run, "t", "a", "box", status="ok", scores={"dice": 0.9}, meta={})
    fields = ("SELECT model, answer_form, confidence, answer_head, endpoint FROM predictions ORDER BY 1",
              "SELECT model, privileged, api_model FROM models ORDER BY 1")
    want = [table(new, q) for q in fields]
    old = tmp_path / "old" / "s.sqlite"
    shutil.copytree(new.parent, old.parent)
    with sqlite3.connect(old) as db:
        table_name, columns = dropped
        for column in columns:
            db.execute(f"ALTER TABLE {table_name} DROP COLUMN {column}")
        db.execute("PRAGMA user_version=5")
    target = tmp_path / "m" / "s.sqlite"
    merge([old], target)
    assert [table(target, q) for q in fields] == want
    assert table(old, "PRAGMA user_version") == [(5,)]  # read only: not migrated by the merge


def test_a_batch_runs_jobs_and_requests_come_along(tmp_path, api_key):
    from omniseg.store.merge import merge

    root = make_kvasir(tmp_path / "k", n=4)
    src = tmp_path / "b" / "s.sqlite"
    with FakeGemini() as srv:
        cli("run", "--config", gemini_yaml(tmp_path, root, srv.url, batch_poll_s=0.05), "--store", src, "--batch", "-q")
    target = tmp_path / "m" / "s.sqlite"
    merge([src], target)
    for tbl in ("batch_jobs", "batch_requests"):
        assert table(target, f"SELECT * FROM {tbl} ORDER BY 1, 2") == table(src, f"SELECT * FROM {tbl} ORDER BY 1, 2") != []


def test_the_dataset_settings_compared_are_per_task_and_every_differing_key_is_named(tmp_path):
    """Stores of two tasks may read their datasets differently; two of one task may not, and the refusal names each
    setting that differs (one only one store has, too) and no setting that agrees."""
    from omniseg.store import runs as store_runs
    from omniseg.store.database import Store
    from omniseg.store.merge import merge

    def store(name: str, task: str, dataset: dict) -> Path:
        path = tmp_path / name / "s.sqlite"
        with Store(path) as st:
            store_runs.start_run(st, task, "all", ["e"], {"task": task, "dataset": dataset}, "h", None)
        return path

    a = store("a", "t", {"name": "folder", "root": "/a", "options": {"threshold": 128}})
    other_task = store("c", "u", {"name": "folder", "root": "/c", "max_pixels": 5})
    merge([a, other_task], tmp_path / "ok" / "s.sqlite")  # another task: its own settings
    b = store("b", "t", {"name": "folder", "root": "/b", "max_pixels": 5})
    with pytest.raises(OmnisegError) as e:
        merge([a, b], tmp_path / "no" / "s.sqlite")
    msg = str(e.value)
    assert "dataset.max_pixels: 5 there, null in" in msg and 'dataset.options: null there, {"threshold": 128} in' in msg
    assert "dataset.name" not in msg and "dataset.root" not in msg  # the same name; where it lies is no setting

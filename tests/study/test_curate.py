from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from omniseg.errors import OmnisegError
from omniseg.study.curate import curate
from omniseg.store.database import Store
from omniseg.store import results as store_results
from omniseg.store import runs as store_runs


def seeded_store(path, values: dict[str, float], split: str = "test") -> Store:
    st = Store(path)
    cfg = {"split": split, "curation": {"reference": "ref"}, "models": [{"name": "ref"}]}
    run_id = store_runs.start_run(st, "t", split, ["ref"], cfg, "h", None)
    store_results.add_samples(st, "t", [(sid, split, None, {}) for sid in values])
    for sid, v in values.items():
        store_results.record(st, run_id, "t", sid, "ref", status="ok", scores={"dice": v, "iou": v / (2 - v)})
    return st


def test_easiest_and_hardest_with_ties_broken_by_id(store_path):
    st = seeded_store(store_path, {"e": 0.9, "a": 0.5, "d": 0.9, "c": 0.1, "b": 0.1, "f": 0.7})
    lists = curate(st, "t", 2)
    assert [r["sample_id"] for r in lists["easiest"]] == ["d", "e"]
    assert [r["sample_id"] for r in lists["hardest"]] == ["b", "c"]
    stored = st.query("SELECT subset, rank, sample_id, reference, metric FROM subsets ORDER BY subset, rank")
    assert stored.values.tolist() == [["easiest", 1, "d", "ref", "dice"], ["easiest", 2, "e", "ref", "dice"],
                                      ["hardest", 1, "b", "ref", "dice"], ["hardest", 2, "c", "ref", "dice"]]
    with pytest.raises(OmnisegError, match=r"the stored lists hold 2 easiest and 2 hardest cases picked by 'ref'; "
                                           r"this would replace them with 1 and 1 by 'ref': pass --replace"):
        curate(st, "t", 1, metric="iou")
    assert len(st.query("SELECT * FROM subsets")) == 4  # refused: the lists a report may rest on are kept
    curate(st, "t", 2, metric="iou")  # the same size and reference: recomputed in place
    curate(st, "t", 1, metric="iou", replace=True)  # curation is replaced as a whole
    assert len(st.query("SELECT * FROM subsets")) == 2


def test_too_few_cases_never_overlap(store_path):
    st = seeded_store(store_path, {f"s{i}": i / 10 for i in range(5)})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lists = curate(st, "t", 50)
    assert len(lists["easiest"]) == len(lists["hardest"]) == 2
    assert not {r["sample_id"] for r in lists["easiest"]} & {r["sample_id"] for r in lists["hardest"]}
    assert "only 5 scored cases" in str(w[0].message)


def test_only_the_chosen_split_is_ranked(store_path):
    st = seeded_store(store_path, {"a": 0.2, "b": 0.8})
    assert curate(st, "t", 1)["split"] == "test"  # only test cases were scored
    store_results.add_samples(st, "t", [("z", "train", None, {})])
    store_results.record(st, 1, "t", "z", "ref", status="ok", scores={"dice": 1.0, "iou": 1.0})
    assert [r["sample_id"] for r in curate(st, "t", 1, split="test")["easiest"]] == ["b"]


def test_default_split_is_what_was_scored_and_config_keys_are_read(store_path):
    """Defect 8: `run --split all` then curate took the config's split; curation.extremes/metric were ignored."""
    st = seeded_store(store_path, {"a": 0.2, "b": 0.8, "c": 0.5, "d": 0.1})
    store_results.add_samples(st, "t", [("z", "train", None, {}), ("y", "train", None, {})])
    for sid, v in (("z", 1.0), ("y", 0.05)):
        store_results.record(st, 1, "t", sid, "ref", status="ok", scores={"dice": v, "iou": 1 - v})
    lists = curate(st, "t")  # the recorded config says split test: the scores say train and test
    assert lists["split"] == "all" and [r["sample_id"] for r in lists["easiest"]][:1] == ["z"]
    assert len(lists["easiest"]) == 3  # default 50, capped at half of the 6 cases
    cfg = {"split": "test", "curation": {"reference": "ref", "extremes": 2, "metric": "iou"}, "models": [{"name": "ref"}]}
    store_runs.start_run(st, "t", "all", ["ref"], cfg, "h2", None)
    lists = curate(st, "t", replace=True)
    assert len(lists["easiest"]) == 2 and lists["easiest"][0]["metric"] == "iou"
    assert lists["easiest"][0]["sample_id"] == "y"  # iou 0.95
    assert len(curate(st, "t", 1, metric="dice", replace=True)["easiest"]) == 1  # flags win over the config


def test_one_scored_case_is_an_error_and_keeps_the_stored_subsets(store_path):
    """Defect 4: an IndexError traceback, and the stored subsets were deleted."""
    import pytest

    from omniseg.errors import OmnisegError

    st = seeded_store(store_path, {"a": 0.2, "b": 0.8, "c": 0.4, "d": 0.6})
    curate(st, "t", 1)
    before = st.query("SELECT * FROM subsets").values.tolist()
    store_results.delete_model(st, "t", "ref")
    store_results.record(st, 1, "t", "a", "ref", status="ok", scores={"dice": 0.3, "iou": 0.2})
    with pytest.raises(OmnisegError, match="only 1 scored case .* at least 2 are needed .* unchanged"):
        curate(st, "t", 1)
    assert st.query("SELECT * FROM subsets").values.tolist() == before


def test_a_killed_curate_leaves_the_previous_lists_whole(tmp_path):
    """SIGKILL inside the write of the new lists: the store keeps the old lists (one transaction), the next
    curate replaces them, and the invariant check holds."""
    import sqlite3

    import invariants
    from conftest import OTSU, make_kvasir, omniseg_with_fault, write_config
    from typer.testing import CliRunner

    from omniseg.cli import app

    root = make_kvasir(tmp_path / "k", n=12)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU + "  - name: ellipse\n    kind: ellipse\n")
    store = tmp_path / "runs" / "s.sqlite"
    cli = CliRunner()
    assert cli.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"]).exit_code == 0
    assert cli.invoke(app, ["curate", "--store", str(store), "-n", "2", "-q"]).exit_code == 0
    with sqlite3.connect(store) as db:
        before = db.execute("SELECT subset, rank, sample_id FROM subsets ORDER BY 1, 2").fetchall()
    killed = omniseg_with_fault(["curate", "--store", store, "-n", "4", "--replace", "-q"], "omniseg.store.schema:Transaction.__exit__", 1,
                                before=True)
    assert killed.returncode == -9, killed.stderr
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT subset, rank, sample_id FROM subsets ORDER BY 1, 2").fetchall() == before
    invariants.check(store, asked={(f"case{i:03d}", m) for i in range(12) for m in ("otsu", "ellipse")}, curate_n=4)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM subsets").fetchone()[0] == 8


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402


@given(values=st.dictionaries(st.text("abcdef", min_size=1, max_size=4), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
                              min_size=2, max_size=25), n=st.integers(1, 30))
def test_the_lists_are_ordered_tie_broken_by_id_and_never_overlap(values, n, tmp_path_factory):
    """Any scores (ties are common: Dice 0 and 1 repeat) and any N, also larger than the set: N' = min(N, n // 2)
    cases each way, easiest by score down and hardest by score up, ties by id ascending, no case in both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st_ = seeded_store(tmp_path_factory.mktemp("s") / "s.sqlite", values)
        lists = curate(st_, "t", n)
        st_.close()
    easy, hard = lists["easiest"], lists["hardest"]
    k = min(n, len(values) // 2)
    assert len(easy) == len(hard) == k
    assert not {r["sample_id"] for r in easy} & {r["sample_id"] for r in hard}
    key_easy = [(-r["value"], r["sample_id"]) for r in easy]
    key_hard = [(r["value"], r["sample_id"]) for r in hard]
    assert key_easy == sorted(key_easy) and key_hard == sorted(key_hard)
    chosen = {r["sample_id"] for r in easy} | {r["sample_id"] for r in hard}
    rest = [v for sid, v in values.items() if sid not in chosen]
    assert all(v <= easy[-1]["value"] for v in rest) and all(v >= hard[-1]["value"] for v in rest)
    assert [r["rank"] for r in easy] == list(range(1, k + 1))


def test_curation_control_in_the_config_is_used_without_the_flag(store_path):
    """`curation.control` in the task configuration picks the second specialist's lists when --control is not given
    (a mutant that ignored the key survived the old suite); the flag still wins."""
    st = seeded_store(store_path, {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.7})
    for sid, v in {"a": 0.2, "b": 0.8, "c": 0.6, "d": 0.4}.items():
        store_results.record(st, 1, "t", sid, "ref2", status="ok", scores={"dice": v, "iou": v / (2 - v)})
    cfg = {"split": "test", "curation": {"reference": "ref", "control": "ref2"}, "models": [{"name": "ref"}, {"name": "ref2"}]}
    store_runs.start_run(st, "t", "test", ["ref", "ref2"], cfg, "h", None)
    lists = curate(st, "t", 1)
    assert [r["sample_id"] for r in lists["easiest@ref2"]] == ["b"] and [r["sample_id"] for r in lists["hardest@ref2"]] == ["a"]
    assert [r["sample_id"] for r in lists["easiest"]] == ["a"]


def test_fifty_by_default_and_no_warning_when_exactly_enough(store_path):
    st = seeded_store(store_path, {f"s{i:03d}": i / 120 for i in range(120)})
    lists = curate(st, "t")
    assert len(lists["easiest"]) == len(lists["hardest"]) == 50
    assert lists["easiest"][0]["sample_id"] == "s119" and lists["hardest"][0]["sample_id"] == "s000"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 cases make exactly 2 easiest and 2 hardest: nothing to warn about
        four = seeded_store(store_path.with_name("four.sqlite"), {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4})
        assert len(curate(four, "t", 2)["hardest"]) == 2


def test_without_a_recorded_reference_the_first_specialist_ranks(store_path):
    st = seeded_store(store_path, {"a": 0.9, "b": 0.1})  # "ref" scores: a easiest
    for sid, v in {"a": 0.2, "b": 0.8}.items():
        store_results.record(st, 1, "t", sid, "unet", status="ok", scores={"dice": v, "iou": v / (2 - v)})
    store_runs.set_model(st, "t", "ref", "otsu", {}, "h1")  # a floor, listed first
    store_runs.set_model(st, "t", "unet", "unet", {}, "h2", role="specialist")
    cfg = {"split": "test", "curation": {"reference": None}, "models": [{"name": "ref"}, {"name": "unet"}]}
    store_runs.start_run(st, "t", "test", ["ref", "unet"], cfg, "h", None)
    lists = curate(st, "t", 1)
    assert lists["easiest"][0]["reference"] == "unet" and lists["easiest"][0]["sample_id"] == "b"
    store_runs.set_model(st, "t", "unet", "unet", {}, "h2", role="omnimodel")  # no specialist at all: the first model
    assert curate(st, "t", 1, replace=True)["easiest"][0]["reference"] == "ref"


def test_strata_recorded_in_the_config_are_measured_and_data_root_is_where_the_images_are(store_path, tmp_path):
    values = {"a": 0.9, "b": 0.1, "c": 0.5}
    st = seeded_store(store_path, values)
    cfg = {"split": "test", "curation": {"reference": "ref", "strata": True}, "models": [{"name": "ref"}],
           "dataset": {"name": "folder", "root": str(tmp_path / "moved"), "options": None}}
    store_runs.start_run(st, "t", "test", ["ref"], cfg, "h", None)
    with pytest.raises(OmnisegError, match="--strata reads the images"):
        curate(st, "t", 1)  # strata from the config: the recorded root is gone
    assert curate(st, "t", 1, strata=False)["easiest"][0]["sample_id"] == "a"  # the flag wins
    root = tmp_path / "here"
    for i, sid in enumerate(values):
        m = np.zeros((20, 20), np.uint8)
        m[2:4 + 4 * i, 2:10] = 255
        for folder, arr in (("images", np.dstack([m // 2 + 60] * 3)), ("masks", m)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / folder / f"{sid}.png")
    curate(st, "t", 1, data_root=root, progress=False)
    shares = st.query("SELECT sample_id, lesion_share FROM difficulty ORDER BY sample_id")
    assert shares["sample_id"].tolist() == ["a", "b", "c"]
    assert shares["lesion_share"].tolist() == pytest.approx([16 / 400, 48 / 400, 80 / 400])

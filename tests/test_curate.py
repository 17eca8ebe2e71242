from __future__ import annotations

import warnings


from omniseg.curate import curate
from omniseg.store import Store


def seeded_store(path, values: dict[str, float], split: str = "test") -> Store:
    st = Store(path)
    cfg = {"split": split, "curation": {"reference": "ref"}, "models": [{"name": "ref"}]}
    run_id = st.start_run("t", split, ["ref"], cfg, "h", None)
    st.add_samples("t", [(sid, split, None, {}) for sid in values])
    for sid, v in values.items():
        st.record(run_id, "t", sid, "ref", status="ok", scores={"dice": v, "iou": v / (2 - v)})
    return st


def test_easiest_and_hardest_with_ties_broken_by_id(store_path):
    st = seeded_store(store_path, {"e": 0.9, "a": 0.5, "d": 0.9, "c": 0.1, "b": 0.1, "f": 0.7})
    lists = curate(st, "t", 2)
    assert [r["sample_id"] for r in lists["easiest"]] == ["d", "e"]
    assert [r["sample_id"] for r in lists["hardest"]] == ["b", "c"]
    stored = st.query("SELECT subset, rank, sample_id, reference, metric FROM subsets ORDER BY subset, rank")
    assert stored.values.tolist() == [["easiest", 1, "d", "ref", "dice"], ["easiest", 2, "e", "ref", "dice"],
                                      ["hardest", 1, "b", "ref", "dice"], ["hardest", 2, "c", "ref", "dice"]]
    curate(st, "t", 1, metric="iou")  # curation is replaced as a whole
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
    st.add_samples("t", [("z", "train", None, {})])
    st.record(1, "t", "z", "ref", status="ok", scores={"dice": 1.0, "iou": 1.0})
    assert [r["sample_id"] for r in curate(st, "t", 1)["easiest"]] == ["b"]
    assert [r["sample_id"] for r in curate(st, "t", 1, split="all")["easiest"]] == ["z"]

"""The committed split lists agree with the rule that wrote them, and the rule is stable."""

from __future__ import annotations

from importlib import resources

from omniseg.datasets.base import rank_split, split_of

BUSI_COUNTS = {"benign": 437, "malignant": 210, "normal": 133}


def read(name: str) -> dict[str, str]:
    text = (resources.files("omniseg") / "splits" / f"{name}.tsv").read_text()
    return dict(line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))


def test_kvasir_list_is_the_rule_over_its_ids():
    table = read("kvasir-seg")
    assert len(table) == 1000
    assert table == rank_split(sorted(table))
    assert sum(v == "test" for v in table.values()) == 200


def test_busi_list_is_the_rule_per_class():
    table = read("busi")
    expected = {}
    for cls, n in BUSI_COUNTS.items():
        expected.update(rank_split([f"{cls} ({i})" for i in range(1, n + 1)], group=cls))
    assert table == expected


def test_unlisted_ids_fall_to_a_deterministic_hash_rule():
    ids = [f"mine{i}" for i in range(2000)]
    splits = [split_of("kvasir-seg", i) for i in ids]
    assert splits == [split_of("kvasir-seg", i) for i in ids]
    assert 0.15 < splits.count("test") / len(ids) < 0.25

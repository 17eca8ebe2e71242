"""Review items: regions of disagreement found, shared regions shown once and credited to each model, blinded
ids, a recorded per-reviewer order, and a rebuild that would drop answers refused."""

from __future__ import annotations

import numpy as np
import pytest

import planted_study as ps
from omniseg.errors import OmnisegError
from omniseg.study.review import items
from omniseg.store import reviews as store_reviews


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_regions_split_disagreement_into_sides_and_drop_small_ones():
    ref = _disc((60, 60), 20, 20, 8)
    pred = ref.copy()
    pred[20:28, 20:30] = False  # a missed part of the lesion (reference-only)
    pred |= _disc((60, 60), 45, 45, 6)  # an extra mark (model-only)
    pred[2, 55] = True  # one stray pixel: below any sensible min_area
    got = items.regions(pred, ref, min_area=10)
    sides = sorted(s for s, _ in got)
    assert sides == ["model-only", "reference-only"]
    extra = next(m for s, m in got if s == "model-only")
    assert extra.sum() == _disc((60, 60), 45, 45, 6).sum()
    assert not extra[2, 55]
    assert len(items.regions(pred, ref, min_area=1)) == 3
    with pytest.raises(ValueError):
        items.regions(pred[:10], ref)


def test_a_region_two_models_share_is_one_item_credited_to_both():
    shape = (50, 50)
    a = _disc(shape, 20, 20, 8)
    a2 = _disc(shape, 21, 20, 8)  # nearly the same region (IoU > 0.5)
    elsewhere = _disc(shape, 40, 40, 5)
    merged = items.merge_shared({"m1": [("model-only", a)], "m2": [("model-only", a2), ("model-only", elsewhere)],
                                 "m3": [("reference-only", a)]})  # the same pixels on the other side: another item
    by_models = sorted((side, sorted(models)) for side, _, models in merged)
    assert by_models == [("model-only", ["m1", "m2"]), ("model-only", ["m2"]), ("reference-only", ["m3"])]
    union = next(r for s, r, m in merged if m == {"m1", "m2"})
    assert np.array_equal(union, a | a2)


def test_items_of_the_planted_study_are_its_extra_marks(tmp_path):
    st, planted = ps.make(tmp_path, n=24)
    got = items.build(st, "polyp")
    spec_blobs = len(range(0, 24, 3))
    assert got == {"items": len(planted) + spec_blobs, "model-only": len(planted) + spec_blobs, "reference-only": 0}
    loaded = items.load(st, "polyp")
    credited = sorted(tuple(it["models"]) for it in loaded.values())
    assert credited.count((ps.OMNI,)) == len(planted) and credited.count((ps.SPEC,)) == spec_blobs
    for item_id, it in loaded.items():  # the id is a hash: no model's name in it
        assert ps.SPEC not in item_id and ps.OMNI not in item_id and len(item_id) == 16
        assert it["area"] == items.read_bits(it["region"]).sum() > 0
    # built again with the same options: the same items, answers kept
    some = sorted(loaded)[0]
    store_reviews.put_review(st, "polyp", some, "ann", "model_wrong")
    assert items.build(st, "polyp") == got
    assert len(st.query("SELECT * FROM reviews")) == 1
    # other options while answers exist: refused, then --rebuild drops them
    with pytest.raises(OmnisegError, match="--rebuild"):
        items.build(st, "polyp", max_items=5)
    assert items.build(st, "polyp", max_items=5, rebuild=True)["items"] == 5
    assert len(st.query("SELECT * FROM reviews")) == 0
    assert set(items.load(st, "polyp")) <= set(loaded)  # a sample of the same regions


def test_models_and_subsets_are_checked(tmp_path):
    st, _ = ps.make(tmp_path, n=6)
    with pytest.raises(OmnisegError, match="unknown model 'omni-gemni'.*did you mean 'omni-gemini'"):
        items.build(st, "polyp", models=["omni-gemni"])
    with pytest.raises(OmnisegError, match="omniseg curate"):
        items.build(st, "polyp", subset="hardest")
    assert items.build(st, "polyp", models=[ps.SPEC])["items"] == 2  # its blobs on images 0 and 3


def test_each_reviewer_has_a_recorded_shuffled_order(tmp_path):
    st, _ = ps.make(tmp_path, n=24)
    items.build(st, "polyp")
    seed_a, first = items.order(st, "polyp", "ann", seed=7)
    assert seed_a == 7 and sorted(first) == sorted(items.load(st, "polyp"))
    assert items.order(st, "polyp", "ann", seed=99) == (7, first)  # the recorded one, whatever is asked later
    seed_b, other = items.order(st, "polyp", "bob", seed=8)
    assert other != first and sorted(other) == sorted(first)
    seed_c, _ = items.order(st, "polyp", "cy")  # no seed given: a random one, recorded
    assert items.order(st, "polyp", "cy")[0] == seed_c
    with pytest.raises(OmnisegError, match="reviewer"):
        items.order(st, "polyp", "  ")


def test_a_volume_task_is_refused_in_one_message(tmp_path):
    import yaml

    from omniseg import config
    from omniseg.inference.runner import run
    from omniseg.store.database import Store

    from conftest import make_volumes

    root = make_volumes(tmp_path / "v", n=2, shape=(3, 16, 14))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "task": "les", "dataset": {"name": "nifti", "root": str(root)}, "split": "all",
        "models": [{"name": "spec", "kind": "otsu", "role": "specialist", "options": {"foreground": "bright"}}]}))
    with Store(tmp_path / "s.sqlite") as st:
        run(config.load(tmp_path / "c.yaml"), st, progress=False)
        with pytest.raises(OmnisegError, match="reads volumes .nifti.: the blinded review shows regions of images"):
            items.build(st, "les", split="all")

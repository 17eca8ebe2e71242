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


def _item(region: np.ndarray) -> dict:
    ys, xs = np.nonzero(region)
    return {"region": items.png_bits(region), "bbox": (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)}


def _decoded(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


YELLOW_TINT, YELLOW_EDGE, GREEN_EDGE = (255, 221, 0, 70), (255, 221, 0, 255), (0, 230, 64, 255)


def test_render_at_the_images_size_draws_one_pixel_outlines_and_the_box():
    region = np.zeros((60, 80), bool)
    region[35:50, 50:70] = True
    ref = np.zeros((60, 80), bool)
    ref[10:30, 10:40] = True
    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 0] = np.linspace(0, 250, 80, dtype=np.uint8)[None, :]
    image[..., 2] = 90
    pic = items.render(_item(region), image, ref)
    assert pic["size"] == (80, 60) and pic["box"] == [50, 35, 70, 50]
    shown = _decoded(pic["image"]).astype(int)
    assert shown.shape == (60, 80, 3) and np.abs(shown - image).mean() < 4  # the image itself, JPEG-compressed
    ovl = _decoded(pic["overlay"])
    assert ovl.shape == (60, 80, 4)
    assert tuple(ovl[35, 60]) == YELLOW_EDGE and tuple(ovl[36, 60]) == YELLOW_TINT  # a 1-pixel outline at 80 px
    assert tuple(ovl[42, 60]) == YELLOW_TINT and tuple(ovl[10, 20]) == GREEN_EDGE and tuple(ovl[11, 20])[3] == 0
    assert tuple(ovl[5, 5]) == (0, 0, 0, 0)
    assert (ovl[..., 3] == 255).sum() == (15 * 20 - 13 * 18) + (20 * 30 - 18 * 28)  # the two rectangles' rims


def test_render_scales_a_large_image_to_max_side_with_thicker_outlines_and_reads_other_sizes_and_grey():
    h, w = 1200, 900
    region = np.zeros((h, w), bool)
    region[300:600, 200:500] = True
    ref = np.zeros((h // 2, w // 2), bool)  # the reference at half the size: resized onto the region's grid
    ref[400:550, 100:400] = True
    grey = np.full((h // 3, w // 3), 180, np.uint8)  # a grey image at a third of the size
    pic = items.render(_item(region), grey, ref)
    scale = 1024 / 1200
    assert pic["size"] == (768, 1024)
    assert pic["box"] == pytest.approx([200 * scale, 300 * scale, 500 * scale, 600 * scale])
    shown = _decoded(pic["image"]).astype(int)
    assert shown.shape == (1024, 768, 3) and np.abs(shown - 180).max() <= 2
    ovl = _decoded(pic["overlay"])
    assert ovl.shape == (1024, 768, 4)
    col = round(350 * scale)  # down the middle of the region: its top outline is round(1024 / 300) = 3 pixels
    edge_rows = np.flatnonzero((ovl[:, col] == YELLOW_EDGE).all(axis=1))
    assert edge_rows.min() == round(300 * scale) and edge_rows[:3].tolist() == list(range(edge_rows.min(), edge_rows.min() + 3))
    assert tuple(ovl[edge_rows.min() + 3, col]) == YELLOW_TINT
    green = np.argwhere((ovl == GREEN_EDGE).all(axis=2))
    assert green[:, 0].min() == round(800 * scale) and green[:, 1].min() == round(200 * scale)
    small = items.render(_item(region), grey, ref, max_side=300)
    assert small["size"] == (225, 300) and _decoded(small["overlay"]).shape == (300, 225, 4)


def test_render_keeps_a_one_pixel_wide_image_one_pixel_wide_and_outlines_a_region_at_the_border():
    strip = np.zeros((2048, 1), bool)
    strip[100:900] = True
    for region in (strip, strip.T):
        grey = np.full(region.shape, 50, np.uint8)
        pic = items.render(_item(region), grey, np.zeros_like(region))
        assert pic["size"] == ((1, 1024) if region.shape[1] == 1 else (1024, 1))
    region = np.zeros((300, 450), bool)  # 450 px: outlines of round(450 / 300) = 2 pixels
    region[:, :40] = True  # along the image's left, top and bottom edges
    pic = items.render(_item(region), np.zeros((300, 450, 3), np.uint8), np.zeros((300, 450), bool))
    ovl = _decoded(pic["overlay"])
    edge = (ovl == YELLOW_EDGE).all(axis=2)
    assert edge[150, :2].all() and not edge[150, 2] and edge[:2, 20].all() and edge[-2:, 20].all()
    assert edge[150, 38:40].all() and not edge[150, 37]


def test_an_order_is_made_from_its_seed_alone(tmp_path):
    st, _ = ps.make(tmp_path, n=12)
    items.build(st, "polyp")
    (seed_a, a), (seed_b, b) = items.order(st, "polyp", "ann", 11), items.order(st, "polyp", "bob", 11)
    ids = store_reviews.item_ids(st, "polyp")
    assert seed_a == seed_b == 11 and a == b == [ids[i] for i in np.random.default_rng(11).permutation(len(ids))]
    assert items.order(st, "polyp", "cy", 12)[1] != a and sorted(a) == sorted(ids)


def test_regions_are_8_connected_and_a_side_without_any_does_not_hide_the_other():
    ref = np.zeros((30, 30), bool)
    ref[5:25, 5:25] = True
    pred = ref.copy()
    pred[5:15, 5:15] = False  # a 10x10 missed corner; no pixel marked outside the reference
    assert [(s, int(r.sum())) for s, r in items.regions(pred, ref, min_area=50)] == [("reference-only", 100)]
    pred = np.zeros((30, 30), bool)
    pred[0:6, 0:6] = pred[6:12, 6:12] = True  # two blocks that touch only at a corner: one region
    assert [(s, int(r.sum())) for s, r in items.regions(pred, np.zeros((30, 30), bool), min_area=50)] == [
        ("model-only", 72)]


def test_shared_regions_merge_from_an_iou_of_one_half_across_models_whatever_else_they_found():
    def box(y0, y1, x0, x1):
        m = np.zeros((40, 40), bool)
        m[y0:y1, x0:x1] = True
        return m

    found = {
        "a": [("model-only", box(0, 10, 0, 10)), ("reference-only", box(30, 40, 30, 40))],
        "b": [("model-only", box(0, 10, 0, 5))],  # IoU 50/100 with a's: the same region
        "c": [("model-only", box(0, 10, 8, 20))],  # overlaps a's (IoU 20/200): another region
    }
    got = sorted((side, int(r.sum()), sorted(ms)) for side, r, ms in items.merge_shared(found))
    assert got == [("model-only", 100, ["a", "b"]), ("model-only", 120, ["c"]), ("reference-only", 100, ["a"])]


def test_read_mask_resizes_a_stored_mask_and_reads_no_path_as_empty(tmp_path):
    from PIL import Image

    from omniseg.store.database import Store

    with Store(tmp_path / "s.sqlite") as st:
        m = np.zeros((10, 16), bool)
        m[:, :8] = True
        Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "m.png")
        big = items.read_mask(st, "m.png", (20, 32))
        assert big.shape == (20, 32) and big[:, :16].all() and not big[:, 16:].any()
        for none in (None, float("nan"), ""):  # pandas reads a NULL mask_path as NaN
            assert not items.read_mask(st, none, (4, 5)).any() and items.read_mask(st, none, (4, 5)).shape == (4, 5)


def test_default_models_leave_out_floors_and_privileged_models(tmp_path):
    import json

    st, _ = ps.make(tmp_path, n=4)
    assert items.default_models(st, "polyp") == sorted([ps.SPEC, ps.OMNI])
    st.db.execute("UPDATE models SET role = 'floor' WHERE model = ?", (ps.OMNI,))
    assert items.default_models(st, "polyp") == [ps.SPEC]
    sig = json.loads(st.db.execute("SELECT signature FROM models WHERE model = ?", (ps.SPEC,)).fetchone()[0])
    st.db.execute("UPDATE models SET privileged = 1, signature = ? WHERE model = ?",
                  (json.dumps({**sig, "privileged": True}), ps.SPEC))
    assert items.default_models(st, "polyp") == []


def test_the_options_items_were_built_with_are_stored_as_documented_and_build_is_quiet_by_default(tmp_path, capsys):
    import json

    st, _ = ps.make(tmp_path, n=6)
    capsys.readouterr()
    items.build(st, "polyp")
    assert capsys.readouterr().err == ""
    stored = json.loads(store_reviews.built_options(st, "polyp"))
    assert len(stored.pop("basis")) == 16
    assert stored == {"models": sorted([ps.SPEC, ps.OMNI]), "subset": None, "split": "test", "max": items.DEFAULT_MAX,
                      "min_area": items.DEFAULT_MIN_AREA, "seed": 0}


def test_build_draws_from_a_curated_subset_reads_moved_data_and_says_why_it_refuses_a_rebuild(tmp_path):
    import json
    import shutil

    from omniseg.study.curate import curate

    st, _ = ps.make(tmp_path, n=12)
    curate(st, "polyp", 3)
    hardest = set(st.db.execute("SELECT sample_id FROM subsets WHERE task = 'polyp' AND subset = 'hardest'").fetchall())
    hardest = {s for (s,) in hardest}
    shutil.move(tmp_path / "kvasir", tmp_path / "moved")  # the data moved since the run: data_root says where
    items.build(st, "polyp", subset="hardest", data_root=tmp_path / "moved")
    drawn = {it["sample_id"] for it in items.load(st, "polyp").values()}
    assert drawn and drawn <= hardest
    _, order = items.order(st, "polyp", "ann", 0)
    store_reviews.put_review(st, "polyp", order[0], "ann", "model_wrong")
    with pytest.raises(OmnisegError) as e:
        items.build(st, "polyp", subset="hardest", max_items=5, data_root=tmp_path / "moved")
    options = json.dumps({"max": items.DEFAULT_MAX, "min_area": items.DEFAULT_MIN_AREA,
                          "models": sorted([ps.SPEC, ps.OMNI]), "seed": 0, "split": "test", "subset": "hardest"})
    assert str(e.value).startswith(f"task 'polyp': the review items were built with other options ({options}), and 1 answers")
    # a store from before the basis was kept: its items are taken as fresh, not rebuilt over the answer
    stored = json.loads(store_reviews.built_options(st, "polyp"))
    del stored["basis"]
    st.db.execute("UPDATE review_sets SET options = ? WHERE task = 'polyp'", (json.dumps(stored),))
    assert items.build(st, "polyp", subset="hardest", data_root=tmp_path / "moved")["items"] == len(order)
    st.db.execute("UPDATE review_sets SET options = ? WHERE task = 'polyp'", (json.dumps({**stored, "basis": "0" * 16}),))
    with pytest.raises(OmnisegError) as e:
        items.build(st, "polyp", subset="hardest", data_root=tmp_path / "moved")
    assert str(e.value).startswith("task 'polyp': the predictions the review items were drawn from changed since they "
                                   "were built (a merge or a --force run;")


def test_build_stores_each_regions_box_and_size_keeps_min_area_draws_by_seed_and_reports_progress(tmp_path, capsys):
    st, _ = ps.make(tmp_path / "a", n=12)
    capsys.readouterr()
    items.build(st, "polyp", progress=True)
    assert "polyp: regions" in capsys.readouterr().err
    loaded = items.load(st, "polyp")
    for it in loaded.values():
        region = items.read_bits(it["region"])
        ys, xs = np.nonzero(region)
        assert it["bbox"] == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert (it["height"], it["width"]) == region.shape == ps.SIZE and it["area"] == region.sum()
    smallest = min(it["area"] for it in loaded.values())
    items.build(st, "polyp", min_area=smallest + 1, rebuild=True)
    assert len(items.load(st, "polyp")) < len(loaded) and min(it["area"] for it in items.load(st, "polyp").values()) > smallest
    st2, _ = ps.make(tmp_path / "b", n=12)  # the same study again: the same items drawn for the same seed
    drawn = []
    for s in (st, st2):
        items.build(s, "polyp", max_items=3, seed=4, rebuild=True)
        drawn.append(sorted(items.load(s, "polyp")))
    assert len(drawn[0]) == 3 and drawn[0] == drawn[1]

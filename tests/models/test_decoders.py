"""Every malformed answer listed in the Gemini notes maps to its documented status."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from omniseg import metrics
from omniseg.models import decoders as d
from omniseg.testing.fake_gemini import box_and_crop, json_masks_text, polygons_text

H, W = 90, 120


def blob(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def entry(mask):
    box, png = box_and_crop(mask)
    return {"box_2d": box, "mask": png, "label": "polyp"}


def dice(a, b):
    return metrics.dice(metrics.confusion(a, b))


def test_fenced_json_masks_decode_close_to_the_truth():
    truth = blob(20, 60, 30, 90)
    out = d.decode_json_masks(json_masks_text([truth], fence=True), H, W)
    assert out.status == "ok" and out.instances == 1 and dice(out.mask, truth) > 0.95


def test_several_instances_are_united():
    a, b = blob(5, 30, 5, 40), blob(50, 80, 70, 110)
    out = d.decode_json_masks(json.dumps([entry(a), entry(b)]), H, W)
    assert out.instances == 2 and dice(out.mask, a | b) > 0.95


def test_empty_list_is_a_valid_empty_prediction():
    for text in ("[]", "```json\n[]\n```", '{"masks": []}'):
        out = d.decode_json_masks(text, H, W)
        assert out.status == "ok" and not out.mask.any()


def test_truncated_json_keeps_the_complete_objects():
    a, b = blob(5, 30, 5, 40), blob(50, 80, 70, 110)
    full = json.dumps([entry(a), entry(b)])
    cut = full[: full.rindex("{\"box_2d\"") + 60]  # stops inside the second entry
    out = d.decode_json_masks(cut, H, W)
    assert out.status == "ok" and out.instances == 1 and dice(out.mask, a) > 0.95
    assert any("kept 1 complete" in n for n in out.notes)
    early = d.decode_json_masks(full[:50], H, W)
    assert early.status == "unparseable" and "before any complete object" in early.reason


def test_inverted_and_out_of_range_boxes():
    a = blob(20, 60, 30, 90)
    inverted = entry(a) | {"box_2d": [600, 200, 300, 100]}
    out = d.decode_json_masks(json.dumps([inverted, entry(a)]), H, W)
    assert out.status == "ok" and out.instances == 1 and "inverted or empty box skipped" in out.notes
    wide = entry(blob(0, H, 0, W)) | {"box_2d": [-50, -10, 1200, 1001]}
    out = d.decode_json_masks(json.dumps([wide]), H, W)
    assert out.status == "ok" and out.mask.mean() > 0.9 and "box outside 0..1000 clipped" in out.notes
    only_inverted = d.decode_json_masks(json.dumps([inverted]), H, W)
    assert only_inverted.status == "invalid_answer"


def test_missing_mask_key_and_bad_png():
    a = blob(20, 60, 30, 90)
    no_mask = {"box_2d": entry(a)["box_2d"], "label": "polyp"}
    out = d.decode_json_masks(json.dumps([no_mask]), H, W)
    assert out.status == "invalid_answer" and "entry without a mask skipped" in out.notes
    bad_png = entry(a) | {"mask": "data:image/png;base64,bm90IGEgcG5n"}
    assert d.decode_json_masks(json.dumps([bad_png, entry(a)]), H, W).instances == 1


def test_prose_and_seg_tokens():
    out = d.decode_json_masks("I can see a polyp in the lower left corner.", H, W)
    assert out.status == "unparseable" and out.mask is None
    seg = [{"box_2d": [100, 100, 500, 500], "mask": "<start_of_mask><seg_4><seg_77>", "label": "x"}]
    out = d.decode_json_masks(json.dumps(seg), H, W)
    assert out.status == "unsupported_format"


def test_json_followed_by_prose():
    a = blob(20, 60, 30, 90)
    out = d.decode_json_masks(json.dumps([entry(a)]) + "\nThat is the polyp.", H, W)
    assert out.status == "ok" and dice(out.mask, a) > 0.95


@pytest.mark.parametrize("wrap", [False, True])
def test_polygons_bare_and_wrapped(wrap):
    truth = blob(20, 70, 30, 100)
    out = d.decode_polygons(polygons_text(truth, wrap=wrap), H, W)
    assert out.status == "ok" and dice(out.mask, truth) > 0.9


def test_polygon_edge_cases():
    bare = json.dumps([[100, 100], [900, 100], [900, 900], [100, 900]])
    assert d.decode_polygons(bare, H, W).mask.mean() > 0.5
    assert d.decode_polygons("[]", H, W).status == "ok"
    assert d.decode_polygons(json.dumps([{"points": [[1, 2], [3, 4]]}]), H, W).status == "invalid_answer"
    assert d.decode_polygons("no polygons here", H, W).status == "unparseable"


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_image_masks_of_other_size_and_aspect():
    truth = blob(20, 70, 30, 100)
    same_aspect = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize((240, 180), Image.NEAREST))
    out = d.decode_image_mask(png(same_aspect), H, W)
    assert out.status == "ok" and dice(out.mask, truth) > 0.95 and "resized from 240x180" in out.notes
    square = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize((1024, 1024), Image.NEAREST))
    ok = d.decode_image_mask(png(square), H, W, requested_aspect=1.0)
    assert ok.status == "ok" and dice(ok.mask, truth) > 0.95
    bad = d.decode_image_mask(png(square), H, W, requested_aspect=4 / 3)
    assert bad.status == "aspect_mismatch" and "1024x1024" in bad.reason
    assert d.decode_image_mask(None, H, W).status == "no_image"
    assert d.decode_image_mask(b"junk", H, W).status == "no_image"


def test_nearest_aspect():
    assert d.nearest_aspect(622, 530) == "5:4"
    assert d.nearest_aspect(565, 584) == "1:1"
    assert d.nearest_aspect(1920, 1080) == "16:9"


def test_every_status_is_documented():
    for s in ("ok", "unparseable", "invalid_answer", "unsupported_format", "no_image", "aspect_mismatch"):
        assert s in d.STATUSES

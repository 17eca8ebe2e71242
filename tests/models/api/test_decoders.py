"""Every answer form and malformed answer in the Gemini notes maps to its documented status and mask.

The literal tests state their expected pixels by hand (not through the fake server's encoder), on
non-square images, so a convention changed on both sides (box axis order, threshold, the half-pixel
of polygons) still fails here.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from omniseg.scoring import metrics
from omniseg.models.api import decoders as d
from omniseg.models.api.forms import FORMS, decode_answer
from omniseg.standins.gemini_answers import box_and_crop, json_masks_text, polygons_text

H, W = 90, 120


def blob(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def entry(mask):
    box, png = box_and_crop(mask)
    return {"box_2d": box, "mask": png, "label": "polyp"}


def png_uri(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def dice(a, b):
    return metrics.dice(metrics.confusion(a, b))


def dec(text, h=H, w=W, **kw):
    return decode_answer(text, None, h, w, **kw)


# -- literal expectations ---------------------------------------------------------------------
def test_box_2d_is_y0_x0_y1_x1_on_a_non_square_image():
    # 50 x 200 image; box rows 0.1..0.5 of 50 = 5..25, columns 0.25..0.75 of 200 = 50..150
    text = json.dumps([{"box_2d": [100, 250, 500, 750], "mask": png_uri(np.full((3, 7), 255)), "label": "p"}])
    out = dec(text, 50, 200)
    assert out.status == "ok" and out.form == "png-crops"
    assert np.array_equal(out.mask, blob(5, 25, 50, 150, 50, 200))


def test_crop_threshold_is_grey_above_127():
    # a 1 x 4 crop filling a 1 x 4 box exactly (no resampling): 126, 127 background; 128, 255 foreground
    crop = np.array([[126, 127, 128, 255]], np.uint8)
    text = json.dumps([{"box_2d": [0, 0, 100, 400], "mask": png_uri(crop)}])
    out = dec(text, 10, 10)
    assert out.mask[0, :4].tolist() == [False, False, True, True]
    assert out.mask.sum() == 2


def test_polygon_points_are_x_y_and_fill_pixels_whose_centre_is_inside():
    # 100 x 200 image; x 250..750 of 1000 -> pixel edges 50..150, y 100..600 -> 10..60
    poly = [[250, 100], [750, 100], [750, 600], [250, 600]]
    out = dec(json.dumps([{"mask": poly, "label": "p"}]), 100, 200)
    assert out.status == "ok" and out.form == "polygon/mask"
    assert np.array_equal(out.mask, blob(10, 60, 50, 150, 100, 200))
    yx = dec(json.dumps([{"points": poly}]), 100, 200, point_order="yx")
    assert yx.form == "polygon/points" and np.array_equal(yx.mask, blob(25, 75, 20, 120, 100, 200))


def test_polygon_edges_between_pixel_centres():
    # 100 x 200 image; y 104..596 of 1000 -> edges at 10.4 and 59.6: the centres 10.5 .. 59.5 are inside
    # (rows 10..59); x 252..748 -> 50.4 .. 149.6: centres 50.5 .. 149.5 (columns 50..149)
    poly = [[252, 104], [748, 104], [748, 596], [252, 596]]
    out = dec(json.dumps([{"points": poly}]), 100, 200)
    assert np.array_equal(out.mask, blob(10, 60, 50, 150, 100, 200))
    # 0.6 of a pixel either side of the centres of rows 10 and 59: still those rows, no more
    tight = [[252, 106], [748, 106], [748, 594], [252, 594]]
    assert np.array_equal(dec(json.dumps([{"points": tight}]), 100, 200).mask, blob(11, 59, 50, 150, 100, 200))


def test_polygon_coordinates_are_clipped_to_the_image():
    out = dec(json.dumps([[[-50, -50], [1200, -50], [1200, 1100], [-50, 1100]]]), 30, 40)
    assert out.form == "polygon/bare" and out.mask.all()


# -- forms, whatever the mode ------------------------------------------------------------------
@pytest.mark.parametrize("key", ["mask", "points", "polygon", "vertices"])
@pytest.mark.parametrize("wrap", [False, True])
def test_polygons_under_any_key_bare_or_wrapped(key, wrap):
    truth = blob(20, 70, 30, 100)
    out = dec(polygons_text(truth, wrap=wrap, key=key))
    assert out.status == "ok" and out.form == f"polygon/{key}" and dice(out.mask, truth) > 0.95


def test_several_rings_under_one_key_and_bare_lists():
    rings = [[[0, 0], [500, 0], [500, 500], [0, 500]], [[600, 600], [1000, 600], [1000, 1000], [600, 1000]]]
    out = dec(json.dumps({"mask": rings}), 10, 10)
    assert out.instances == 2 and out.mask.sum() == 25 + 16
    assert dec(json.dumps(rings), 10, 10).form == "polygon/bare"


def test_fenced_json_masks_decode_close_to_the_truth():
    truth = blob(20, 60, 30, 90)
    out = dec(json_masks_text([truth], fence=True))
    assert out.status == "ok" and out.instances == 1 and out.form == "png-crops" and dice(out.mask, truth) > 0.95


def test_several_instances_are_united_even_of_mixed_forms():
    a, b = blob(5, 30, 5, 40), blob(50, 80, 70, 110)
    poly = json.loads(polygons_text(b, key="mask"))[0]
    out = dec(json.dumps([entry(a), poly]))
    assert out.instances == 2 and out.form == "png-crops+polygon/mask" and dice(out.mask, a | b) > 0.95


def test_empty_list_is_a_valid_empty_prediction():
    for text in ("[]", "```json\n[]\n```", '{"masks": []}', '{"boxes": []}'):
        out = dec(text)
        assert out.status == "ok" and out.form == "empty" and not out.mask.any()


def test_truncated_json_keeps_the_complete_objects():
    a, b = blob(5, 30, 5, 40), blob(50, 80, 70, 110)
    full = json.dumps([entry(a), entry(b)])
    cut = full[: full.rindex("{\"box_2d\"") + 60]  # stops inside the second entry
    out = dec(cut)
    assert out.status == "ok" and out.instances == 1 and dice(out.mask, a) > 0.95
    assert any("kept 1 complete" in n for n in out.notes)
    early = dec(full[:50])
    assert early.status == "unparseable" and "before any complete object" in early.reason


def test_inverted_and_out_of_range_boxes():
    a = blob(20, 60, 30, 90)
    inverted = entry(a) | {"box_2d": [600, 200, 300, 100]}
    out = dec(json.dumps([inverted, entry(a)]))
    assert out.status == "ok" and out.instances == 1 and "inverted or empty box skipped" in out.notes
    wide = entry(blob(0, H, 0, W)) | {"box_2d": [-50, -10, 1200, 1001]}
    out = dec(json.dumps([wide]))
    assert out.status == "ok" and out.mask.mean() > 0.9 and "box outside 0..1000 clipped" in out.notes
    assert dec(json.dumps([inverted])).status == "invalid_answer"


def test_boxes_without_masks_are_crude_masks_of_their_own_form():
    # box_2d is [y0, x0, y1, x1]; bbox / bbox_2d / box are [x0, y0, x1, y1]; 50 x 200 image
    for box in ({"box_2d": [100, 250, 500, 750]}, {"bbox": [250, 100, 750, 500]}, {"bbox_2d": [250, 100, 750, 500]}):
        out = dec(json.dumps([{**box, "label": "polyp"}]), 50, 200)
        assert out.status == "ok" and out.form == "box", box
        assert np.array_equal(out.mask, blob(5, 25, 50, 150, 50, 200)), box
    pixels = decode_answer(json.dumps([{"bbox_2d": [25, 2.5, 75, 12.5]}]), None, 50, 200, coords="pixels",
                           sent_size=(100, 25))  # the image was sent at half size
    assert np.array_equal(pixels.mask, blob(5, 25, 50, 150, 50, 200))


def test_coordinate_conventions_give_the_same_mask():
    """The same polygon in 0..1000, in 0..1 and in pixels of a half-size sent image."""
    poly = [[250, 100], [750, 100], [750, 600], [250, 600]]
    want = blob(10, 60, 50, 150, 100, 200)
    norm1 = [[x / 1000, y / 1000] for x, y in poly]
    pixels = [[x / 1000 * 100, y / 1000 * 50] for x, y in poly]
    assert np.array_equal(dec(json.dumps([{"points": poly}]), 100, 200).mask, want)
    assert np.array_equal(dec(json.dumps([{"points": norm1}]), 100, 200, coords="norm1").mask, want)
    out = dec(json.dumps([{"points": pixels}]), 100, 200, coords="pixels", sent_size=(100, 50))
    assert np.array_equal(out.mask, want) and out.form == "polygon/points"
    yx = [[y, x] for x, y in pixels]
    assert np.array_equal(dec(json.dumps([yx]), 100, 200, coords="pixels", sent_size=(100, 50), point_order="yx").mask, want)


def test_bad_pngs_and_short_polygons():
    a = blob(20, 60, 30, 90)
    bad_png = entry(a) | {"mask": "data:image/png;base64,bm90IGEgcG5n"}
    assert dec(json.dumps([bad_png, entry(a)])).instances == 1
    assert dec(json.dumps([{"mask": [[1, 2], [3, 4]]}])).status == "invalid_answer"  # under 3 points


def test_prose_tokens_and_unknown_forms_quote_the_answer():
    out = dec("I can see a polyp in the lower left corner.")
    assert out.status == "unparseable" and out.form == "prose" and "I can see a polyp" in out.reason
    seg = [{"box_2d": [100, 100, 500, 500], "mask": "<start_of_mask><seg_4><seg_77>", "label": "x"}]
    out = dec(json.dumps(seg))
    assert out.status == "unsupported_format" and out.form == "seg-tokens" and out.mask is None
    out = dec(json.dumps({"polyp": {"centre": [3, 4], "radius": 9}}))
    assert out.status == "unknown_form" and '"centre"' in out.reason
    assert dec("42").status == "unknown_form"


def test_json_followed_by_prose():
    a = blob(20, 60, 30, 90)
    out = dec(json.dumps([entry(a)]) + "\nThat is the polyp.")
    assert out.status == "ok" and dice(out.mask, a) > 0.95


def test_an_image_part_wins_and_text_is_read_when_an_image_was_expected():
    truth = blob(20, 70, 30, 100)
    img = png(np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize((240, 180), Image.NEAREST)))
    out = decode_answer("here is the mask", img, H, W)
    assert out.status == "ok" and out.form == "image" and dice(out.mask, truth) > 0.95
    polys = decode_answer(polygons_text(truth), None, H, W, expect_image=True)
    assert polys.status == "ok" and polys.form == "polygon/points"
    assert decode_answer("sorry", None, H, W, expect_image=True).status == "no_image"


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


def test_every_status_and_form_is_documented():
    outputs = (__import__("pathlib").Path(__file__).resolve().parents[3] / "docs" / "outputs.md").read_text()
    for s in d.STATUSES:
        assert f"`{s}`" in outputs, s
    for form in FORMS:
        assert f"`{form}`" in outputs, form


def test_the_scanline_fill_agrees_with_scikit_image_on_random_polygons():
    """fill_polygon (fast) against skimage.draw.polygon (the oracle): pixel centres inside, even-odd."""
    from skimage.draw import polygon

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = int(rng.integers(20, 120)), int(rng.integers(20, 120))
        n = int(rng.integers(3, 30))
        xs, ys = rng.uniform(-5, w + 5, n), rng.uniform(-5, h + 5, n)  # self-intersecting, partly outside
        ours = np.zeros((h, w), bool)
        d.fill_polygon(ours, xs, ys)
        theirs = np.zeros((h, w), bool)
        rr, cc = polygon(ys - 0.5, xs - 0.5, (h, w))
        theirs[rr, cc] = True
        assert np.array_equal(ours, theirs)


def test_answers_that_used_to_crash_the_decoders_are_statuses():
    """Defect 3 and 13, at the decoder: NaN points (IndexError), a NaN box (ValueError), lists nested 200,000
    deep (RecursionError), 200,000 triangles (150 s of drawing): each a status with a reason, quickly."""
    from omniseg.models.api.forms import decode_answer
    from omniseg.standins import hostile

    cases = {
        '[{"points": [[NaN, 10], [20, NaN], [NaN, NaN]]}]': ("invalid_answer", "valid points"),
        '[{"points": [[Infinity, 10], [20, 30], [40, 50]]}]': ("invalid_answer", "valid points"),
        '[{"box_2d": [NaN, 100, 600, 700], "label": "p"}]': ("invalid_answer", "box"),
        '[{"box_2d": [100, 100, "600", 700], "mask": 3}]': ("invalid_answer", ""),
        hostile.deep(): ("unparseable", "nested too deeply"),
        hostile.triangles(): ("invalid_answer", "200000 entries"),
        json.dumps([{"points": [[i % 1000, (i * 7) % 1000] for i in range(200)]}] * 600): ("invalid_answer", "vertices"),
        json.dumps([{"label": "x", "points": [[1, 2], [3, 4], [5, 6]]}] * 1001): ("invalid_answer", "1001 entries"),
    }
    for text, (status, words) in cases.items():
        d = decode_answer(text, None, 64, 80)
        assert d.status == status, (text[:60], d.status, d.reason)
        assert words in d.reason + " ".join(d.notes), (text[:60], d.reason, d.notes)
    ok = decode_answer('[{"points": [[100, 100], [900, 100], [NaN, 5], [900, 900], [100, 900]]}]', None, 64, 80)
    assert ok.status == "invalid_answer"  # one bad point spoils that polygon, never the run


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402

from omniseg.models.api.decoders import draw_polygon  # noqa: E402


@st.composite
def star_polygons(draw):
    """Simple polygons (star-shaped around a centre, vertices by angle), float vertices in 0..1000."""
    n = draw(st.integers(3, 12))
    cx, cy = draw(st.floats(200, 800)), draw(st.floats(200, 800))
    angles = sorted(draw(st.lists(st.floats(0, 2 * np.pi, exclude_max=True), min_size=n, max_size=n, unique=True)))
    radii = draw(st.lists(st.floats(10, 190), min_size=n, max_size=n))
    return [[cx + r * np.cos(a), cy + r * np.sin(a)] for a, r in zip(angles, radii)]


@given(star_polygons(), st.integers(5, 60), st.integers(5, 60))
def test_polygon_fill_agrees_with_a_reference_rasterizer(points, h, w):
    """A pixel is filled exactly when its centre is inside the polygon: matplotlib's point-in-polygon on the
    centres is the oracle (vertices that fall on a centre are left out: on the edge either answer is right)."""
    from matplotlib.path import Path as MplPath

    xs = np.array([p[0] for p in points]) / 1000 * w
    ys = np.array([p[1] for p in points]) / 1000 * h
    yy, xx = np.mgrid[:h, :w]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    path = MplPath(np.column_stack([xs, ys]))
    inside = path.contains_points(centres).reshape(h, w)
    near_edge = ~(path.contains_points(centres, radius=1e-6) == path.contains_points(centres, radius=-1e-6)).reshape(h, w)
    mask = np.zeros((h, w), bool)
    assert draw_polygon(mask, points, [])
    assert np.array_equal(mask[~near_edge], inside[~near_edge])


#: how a list of polygons is wrapped, and the form the detector must name
_WRAPS = {"entries": lambda e, k: [{k: p, "label": "x"} for p in e], "bare": lambda e, k: e[0],
          "rings": lambda e, k: [{k: e, "label": "x"}], "wrapped": lambda e, k: {"boxes": [{k: p} for p in e]}}


@given(st.lists(star_polygons(), min_size=1, max_size=3), st.sampled_from(["mask", "points", "polygon", "vertices"]),
       st.sampled_from(sorted(_WRAPS)), st.booleans(), st.booleans())
def test_the_form_is_detected_from_any_generated_answer(polys, key, wrap, fenced, prose_after):
    """Generated answers in every polygon form (key, wrapper, fence, trailing prose): the detected form names the
    key (or bare), and the mask is the same as drawing the polygons directly."""
    from omniseg.models.api.forms import decode_answer

    value = _WRAPS[wrap](polys, key)
    text = json.dumps(value)
    text = f"```json\n{text}\n```" if fenced else text
    text = text + "\nI outlined the polyp." if prose_after and not fenced else text
    got = decode_answer(text, None, 40, 56)
    assert got.status == "ok", (got.status, got.reason)
    assert got.form == ("polygon/bare" if wrap == "bare" else f"polygon/{key}")
    expected = np.zeros((40, 56), bool)
    for p in ([polys[0]] if wrap == "bare" else polys):
        draw_polygon(expected, p, [])
    assert np.array_equal(got.mask, expected)


@given(st.sampled_from(["prose", "tokens", "empty", "box", "unknown"]), st.integers(0, 3))
def test_the_other_forms_are_detected_too(kind, k):
    from omniseg.models.api.forms import decode_answer

    text = {"prose": f"There are {k} polyps here.", "tokens": "[{\"box_2d\": [1, 2, 3, 4], \"mask\": \"<seg_%d>\"}]" % k,
            "empty": "[]" if k % 2 else "```json\n[]\n```", "box": json.dumps([{"box_2d": [100 + k, 100, 600, 700]}]),
            "unknown": json.dumps({"answer": k})}[kind]
    got = decode_answer(text, None, 30, 30)
    want = {"prose": ("unparseable", "prose"), "tokens": ("unsupported_format", "seg-tokens"), "empty": ("ok", "empty"),
            "box": ("ok", "box"), "unknown": ("unknown_form", "unknown")}[kind]
    assert (got.status, got.form) == want


# -- boundaries of boxes, crops and mask images (each written against a mutant that survived) -------------------
def test_box_pixels_scale_clip_and_skip_at_their_boundaries():
    notes: list[str] = []
    assert d.box_pixels([500, 250, 1000, 750], 2000, 2000, notes) == (1000, 500, 2000, 1500) and notes == []
    assert d.box_pixels([0, 0, 1000, 1000], 1000, 1000, notes) == (0, 0, 1000, 1000) and notes == []
    assert d.box_pixels([999, 999, 1000, 1000], 1000, 1000, notes) == (999, 999, 1000, 1000) and notes == []
    assert d.box_pixels([-5, -5, 1200, 1300], 1000, 1000, notes) == (0, 0, 1000, 1000)
    assert notes == ["box outside 0..1000 clipped"]
    for box in ([500, 100, 400, 900], [500, 100, 500, 900], [100, 500, 900, 500], [100, 500, 900, 400]):
        notes = []
        assert d.box_pixels(box, 1000, 1000, notes) is None and notes == ["inverted or empty box skipped"], box
    for box in ([500, 0, 500.4, 1000], [0, 500, 1000, 500.4]):  # under a pixel on one axis only
        notes = []
        assert d.box_pixels(box, 1000, 1000, notes) is None and notes == ["box smaller than a pixel skipped"], box
    for box in ([1, 2, 3], [1, 2, 3, 4, 5], [1, 2, "3", 4], "1234", None):
        notes = []
        assert d.box_pixels(box, 100, 100, notes) is None and notes == ["entry without a valid box_2d skipped"], box


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(png(arr.astype(np.uint8))).decode()


def test_a_crop_is_grey_resized_bilinearly_and_added_to_what_is_there():
    # [0, 255] stretched over 4 pixels: bilinear 0, 64, 191, 255 (bicubic 0, 53, 202, 255; nearest 0, 0, 255, 255)
    mask = np.zeros((10, 10), bool)
    assert d.paste_crop(mask, [0, 0, 100, 400], "data:image/png;base64," + _b64(np.array([[0, 255]])), 60, [])
    assert mask[0, :4].tolist() == [False, True, True, True] and mask.sum() == 3
    # a second crop over the first adds to it (a union), its background never erases
    assert d.paste_crop(mask, [0, 0, 100, 400], _b64(np.array([[255, 0]])), 60, [])  # bare base64, no data: prefix
    assert mask[0, :4].tolist() == [True, True, True, True]
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[:, 1] = 255
    colour = np.zeros((10, 10), bool)
    assert d.paste_crop(colour, [0, 0, 200, 200], _b64(rgb), 127, [])  # a colour crop is read as grey
    assert colour[:2, :2].tolist() == [[False, True], [False, True]]


def test_a_crop_with_stray_characters_in_its_base64_still_decodes():
    """Line breaks and a comma inside the payload are not base64: they are dropped, as the service's own
    decoders do, rather than costing the answer."""
    b = _b64(np.full((4, 4), 255))
    for payload in ("\n".join(b[i:i + 8] for i in range(0, len(b), 8)), b[:10] + "," + b[10:]):
        mask = np.zeros((10, 10), bool)
        notes: list[str] = []
        assert d.paste_crop(mask, [0, 0, 400, 400], "data:image/png;base64," + payload, 127, notes), notes
        assert mask.sum() == 16 and notes == []


def test_crop_and_image_size_limits_count_pixels_not_the_aspect():
    wide = Image.new("L", (16_001, 1000))  # 16,001,000 pixels, aspect 16: over the crop limit
    buf = io.BytesIO()
    wide.save(buf, format="PNG")
    notes: list[str] = []
    assert not d.paste_crop(np.zeros((10, 10), bool), [0, 0, 100, 100], base64.b64encode(buf.getvalue()).decode(), 127, notes)
    assert notes == ["mask PNG of 16001x1000 pixels skipped (over 16000000)"]
    exact = Image.new("L", (4000, 4000))  # exactly the limit: read
    buf = io.BytesIO()
    exact.save(buf, format="PNG")
    notes = []
    assert d.paste_crop(np.zeros((10, 10), bool), [0, 0, 100, 100], base64.b64encode(buf.getvalue()).decode(), 127, notes)
    assert notes == []
    buf = io.BytesIO()
    Image.new("L", (64_001, 1000)).save(buf, format="PNG")
    out = d.decode_image_mask(buf.getvalue(), 10, 10)
    assert (out.status, out.form) == ("invalid_answer", "image") and "64001x1000 pixels, over 64000000" in out.reason
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG")
    assert d.decode_image_mask(buf.getvalue(), 10, 10).status == "ok"  # exactly the limit


def test_mask_images_keep_their_form_reason_and_notes_on_every_path():
    def png_of(arr):
        return png(arr.astype(np.uint8))

    none = d.decode_image_mask(None, 10, 10)
    assert (none.status, none.reason, none.form) == ("no_image", "the response held no image", "image")
    junk = d.decode_image_mask(b"junk", 10, 10)
    assert (junk.status, junk.form) == ("no_image", "image") and junk.reason.startswith("the returned image cannot be read: ")
    square = png_of(np.zeros((100, 100)))
    bad = d.decode_image_mask(square, 90, 120)
    assert (bad.status, bad.form) == ("aspect_mismatch", "image")
    assert bad.reason == "returned 100x100 (aspect 1.000) for a 120x90 input"
    asked = d.decode_image_mask(square, 90, 120, requested_aspect=4 / 3)
    assert asked.reason == "returned 100x100 (aspect 1.000) for a 120x90 input asked at aspect 1.333"
    edge = d.decode_image_mask(png_of(np.zeros((100, 125))), 100, 100, tolerance=0.25)  # 1.25 / 1 - 1 = 0.25
    assert edge.status == "ok" and edge.notes == ["resized from 125x100"]
    rgb = np.zeros((10, 10, 3))
    rgb[:, 5:] = 255
    same = d.decode_image_mask(png_of(rgb), 10, 10)  # a colour picture is read as grey
    assert same.status == "ok" and same.notes == [] and same.form == "image"
    assert same.mask.sum() == 50 and same.mask[:, 5:].all()


# -- a provider's reply as a prediction (forms.to_prediction) --------------------------------------------------
from omniseg.models.api.forms import DECODER_VERSION, head, to_prediction  # noqa: E402
from omniseg.models.api.types import Reply  # noqa: E402

_TOKENS = {"prompt_tokens": 11, "output_tokens": 22, "thoughts_tokens": 33}


def _reply(text="", **kw):
    return Reply(text=text, model_version="m-001", response_id="r-9", tokens=dict(_TOKENS), **kw)


def _meta(**extra):
    return {"model_version": "m-001", "response_id": "r-9", "decoder_version": DECODER_VERSION, "tokens": _TOKENS,
            **extra}


def test_blocked_empty_and_unfinished_replies_are_failures_that_keep_what_the_api_said():
    p = to_prediction(_reply(blocked="SAFETY: the prompt", finish="SAFETY"), 10, 10)
    assert (p.mask, p.status, p.reason) == (None, "blocked", "SAFETY: the prompt")
    assert p.meta == _meta(finish_reason="SAFETY")
    p = to_prediction(_reply(has_candidates=False), 10, 10)
    assert (p.status, p.reason, p.meta) == ("api_error", "the response has no candidates", _meta(finish_reason=""))
    p = to_prediction(_reply(finish="RECITATION"), 10, 10)
    assert (p.status, p.reason) == ("blocked", "no answer: finish reason RECITATION")
    for finish in ("STOP", "MAX_TOKENS", ""):  # an empty answer that finished is the decoder's to judge
        p = to_prediction(_reply(finish=finish), 10, 10)
        assert p.status == "unparseable" and p.meta["answer_form"] == "prose", finish


def test_a_decoded_reply_records_its_form_point_order_coordinates_and_a_cut_answer():
    poly = json.dumps([{"label": "p", "points": [[100, 100], [900, 100], [900, 900], [100, 900]]}])
    p = to_prediction(_reply(poly, finish="STOP"), 10, 10, point_order="yx", coords="norm1")
    assert p.status == "ok" and p.mask.shape == (10, 10) and p.reason == ""
    assert p.meta == _meta(finish_reason="STOP", answer_form="polygon/points", notes=[], instances=1,
                           answer_head=head(poly, 60), point_order="yx", coords="norm1")
    box = json.dumps([{"box_2d": [0, 0, 500, 500], "label": "p"}])
    p = to_prediction(_reply(box, finish="MAX_TOKENS"), 10, 10)
    assert p.meta["answer_form"] == "box" and p.meta["coords"] == "norm1000" and "point_order" not in p.meta
    assert p.meta["notes"] == ["answer cut at the output-token cap"] and p.mask.sum() == 25
    crops = json.dumps([{"box_2d": [0, 0, 1000, 1000], "mask": png_uri(np.full((2, 2), 255))}])
    p = to_prediction(_reply(crops, finish="STOP"), 10, 10)
    assert p.meta["answer_form"] == "png-crops" and "coords" not in p.meta and "point_order" not in p.meta
    bad = to_prediction(_reply("sorry, key AIza-secret", finish="STOP"), 10, 10,
                        redact=lambda s: s.replace("AIza-secret", "***"))
    assert bad.status == "unparseable" and "***" in bad.reason and "AIza-secret" not in bad.reason
    img = to_prediction(_reply(image=png(np.full((10, 10), 255, np.uint8)), finish="STOP"), 10, 10)
    assert img.status == "ok" and img.meta["answer_head"] == "" and img.meta["answer_form"] == "image"
    notes = to_prediction(_reply(json.dumps([{"box_2d": [0, 0, 500, 1200]}]), finish="STOP"), 10, 10)
    assert notes.reason == "box outside 0..1000 clipped"


def test_every_option_of_to_prediction_reaches_the_decoder():
    """Each argument changes the mask or the status the way its own decoder does; the defaults are the documented
    ones (grey > 127, [x, y] points, 0..1000) and are recorded."""
    tri_xy = [[100, 100], [900, 100], [100, 700]]  # asymmetric: swapping x and y gives another mask
    yx = json.dumps([{"points": [[y, x] for x, y in tri_xy]}])
    want = decode_answer(json.dumps([{"points": tri_xy}]), None, 20, 30).mask
    assert not np.array_equal(want, decode_answer(yx, None, 20, 30).mask)
    p = to_prediction(_reply(yx, finish="STOP"), 20, 30, point_order="yx")
    assert np.array_equal(p.mask, want) and p.meta["point_order"] == "yx"
    norm1 = json.dumps([{"points": [[x / 1000, y / 1000] for x, y in tri_xy]}])
    assert np.array_equal(to_prediction(_reply(norm1, finish="STOP"), 20, 30, coords="norm1").mask, want)
    pixels = json.dumps([{"points": [[x * 0.2, y * 0.1] for x, y in tri_xy]}])  # sent as 200 x 100
    p = to_prediction(_reply(pixels, finish="STOP"), 20, 30, coords="pixels", sent_size=(200, 100))
    assert np.array_equal(p.mask, want) and p.meta["coords"] == "pixels"
    default = to_prediction(_reply(json.dumps([{"points": tri_xy}]), finish="STOP"), 20, 30)
    assert np.array_equal(default.mask, want)
    assert (default.meta["point_order"], default.meta["coords"]) == ("xy", "norm1000")
    grey = json.dumps([{"box_2d": [0, 0, 1000, 1000], "mask": png_uri(np.full((2, 2), 100))}])
    assert not to_prediction(_reply(grey, finish="STOP"), 4, 4).mask.any()  # 100 is not above 127
    assert to_prediction(_reply(grey, finish="STOP"), 4, 4, threshold=90).mask.all()
    prose = to_prediction(_reply("I cannot see a polyp.", finish="STOP"), 4, 4, expect_image=True)
    assert (prose.status, prose.meta["answer_form"]) == ("no_image", "prose")
    assert prose.reason == "the response held no image, and its text is no mask: 'I cannot see a polyp.'"
    square = png(np.full((8, 8), 100, np.uint8))  # a square picture for a 4:3 input
    assert to_prediction(_reply(image=square, finish="STOP"), 30, 40).status == "aspect_mismatch"
    asked = to_prediction(_reply(image=square, finish="STOP"), 30, 40, requested_aspect=1.0, threshold=90)
    assert asked.status == "ok" and asked.mask.all() and asked.reason == "resized from 8x8"
    mixed = json.dumps([{"box_2d": [0, 0, 500, 500]}, {"box_2d": [500, 500, 1000, 1000], "mask": png_uri(np.full((2, 2), 255))}])
    p = to_prediction(_reply(mixed, finish="MAX_TOKENS"), 10, 10)
    assert p.meta["answer_form"] == "box+png-crops" and p.meta["coords"] == "norm1000" and p.mask.sum() == 50
    two_notes = to_prediction(_reply(json.dumps([{"box_2d": [0, 0, 500, 1200]}, 7]), finish="STOP"), 10, 10)
    assert two_notes.reason == "box outside 0..1000 clipped; entry in no known form skipped"
    cut = to_prediction(_reply(finish="RECITATION"), 10, 10)
    assert cut.meta == _meta(finish_reason="RECITATION")


def test_answer_heads_reasons_forms_and_the_entry_limit():
    assert head("a  b\n c") == "'a b c'"
    assert head("x" * 80) == repr("x" * 80) and head("x" * 81) == repr("x" * 80 + "…")
    assert head("abcdef", 3) == repr("abc…") and head("abc", 3) == repr("abc")
    seg = dec("<seg_3><seg_9>")
    assert (seg.status, seg.form, seg.reason) == ("unsupported_format", "seg-tokens",
                                                  "mask given as <seg_..> tokens: '<seg_3><seg_9>'")
    unknown = dec('{"answer": 3}')
    assert (unknown.status, unknown.form, unknown.reason) == ("unknown_form", "unknown",
                                                              "JSON in no known answer form: '{\"answer\": 3}'")
    assert dec("42").form == "unknown" and dec("42").reason.startswith("JSON in no known answer form: ")
    empty = dec("[]")
    assert empty.status == "ok" and empty.mask.dtype == bool and not empty.mask.any() and empty.notes == ["no objects found"]
    boxes = json.dumps([{"box_2d": [0, 0, 100, 100]}] * 1000)  # exactly the limit: decoded
    assert dec(boxes).status == "ok" and dec(boxes).instances == 1000
    # an empty list or a non-list under a polygon key is no polygon: the entry is in no known form
    odd = dec(json.dumps([[], {"points": 5}, {"points": [[100, 100], [900, 100], [900, 900]]}]))
    assert odd.status == "ok" and odd.form == "polygon/points"
    assert odd.notes == ["entry in no known form skipped", "entry in no known form skipped"]


# -- the JSON reader and the scanline fill at their edges ------------------------------------------------------------
def test_the_json_reader_on_fences_prose_and_truncation():
    assert d.parse_json("```json\n[1, 2]\n```") == ([1, 2], [])  # a fence is not "text after the JSON"
    assert d.parse_json('Here: {"a": [1]} and {"b": 2}') == ({"a": [1]}, ["text after the JSON ignored"])
    with pytest.raises(ValueError, match="no JSON in the answer"):
        d.parse_json("no json here at all")
    kept = ["truncated answer: kept 2 complete object(s)"]
    assert d.parse_json('Sure: [ {"a": 1},  {"b": 2}, {"c": ') == ([{"a": 1}, {"b": 2}], kept)
    assert d.parse_json('[{"a": 1},\n\t{"b": 2}, ') == ([{"a": 1}, {"b": 2}], kept)  # ends in separators
    assert d.parse_json('[{"a": 1}, X{"b": 2}') == ([{"a": 1}], ["truncated answer: kept 1 complete object(s)"])
    with pytest.raises(ValueError, match="before any complete object"):
        d.parse_json('[{"a": ')


def _pnpoly(xs, ys, h, w):
    """Crossing-number point-in-polygon for every pixel centre (the classic PNPOLY test, same half-open rule)."""
    out = np.zeros((h, w), bool)
    n = len(xs)
    for r in range(h):
        y = r + 0.5
        for c in range(w):
            x, inside = c + 0.5, False
            for i in range(n):
                x0, y0, x1, y1 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
                if (y0 <= y < y1) or (y1 <= y < y0):
                    if x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                        inside = not inside
            out[r, c] = inside
    return out


def test_the_scanline_fill_matches_pnpoly_with_vertices_on_pixel_centres():
    """Vertices on the half-pixel grid put pixel centres exactly on vertices and edges, where only the
    half-open rule decides; random polygons there, and two polygons in one mask (a union)."""
    rng = np.random.default_rng(8)
    for _ in range(40):
        h, w = rng.integers(4, 12, size=2)
        n = int(rng.integers(3, 7))
        xs, ys = rng.integers(-1, w + 1, n) + 0.5, rng.integers(-1, h + 1, n) + 0.5
        mask = np.zeros((h, w), bool)
        d.fill_polygon(mask, xs.astype(float), ys.astype(float))
        assert np.array_equal(mask, _pnpoly(xs, ys, h, w)), (xs.tolist(), ys.tolist(), h, w)
    mask = np.zeros((6, 10), bool)
    d.fill_polygon(mask, np.array([0.0, 4, 4, 0]), np.array([0.0, 0, 6, 6]))
    d.fill_polygon(mask, np.array([6.0, 10, 10, 6]), np.array([0.0, 0, 6, 6]))
    assert mask[:, :4].all() and mask[:, 6:].all() and not mask[:, 4:6].any()


def test_polygon_vertices_are_clipped_to_0_1000_before_filling():
    """Clipping moves a far vertex onto the border, which tilts its edges inside the image."""
    notes: list[str] = []
    far, clipped = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    assert d.draw_polygon(far, [[0, 0], [5000, 1000], [0, 1000]], notes)
    d.draw_polygon(clipped, [[0, 0], [1000, 1000], [0, 1000]], notes)
    assert np.array_equal(far, clipped) and notes == []
    below, at0 = np.zeros((1000, 1000), bool), np.zeros((1000, 1000), bool)
    d.draw_polygon(below, [[-300, -300], [500, -300], [500, 500], [-300, 500]], notes)
    d.draw_polygon(at0, [[0, 0], [500, 0], [500, 500], [0, 500]], notes)
    assert np.array_equal(below, at0) and below[0, 0]
    assert not d.draw_polygon(np.zeros((4, 4), bool), [[1, 2], [3, "x"], [5, 6]], notes)
    assert notes == ["entry without valid points skipped"]


def test_a_mask_picture_is_resized_bilinearly_and_thresholded_above_the_threshold():
    pic = np.array([[0, 255]] * 2, np.uint8)  # 2 x 2, stretched to 4 x 2: 0, 64, 191, 255 per row
    out = d.decode_image_mask(png(pic), 2, 4, tolerance=1.0, threshold=60)
    assert out.mask[0].tolist() == [False, True, True, True] and out.instances == 1 and out.status == "ok"
    edge = d.decode_image_mask(png(np.array([[127, 128]] * 2, np.uint8)), 2, 2)
    assert edge.mask[0].tolist() == [False, True]  # grey 127 is background at the threshold 127


def test_a_vertex_left_of_or_above_the_image_moves_onto_the_border():
    """Clipping at 0 moves a vertex that is outside on one axis only, which tilts its edges inside the image."""
    for far, border in (([-1000, 500], [0, 500]), ([500, -1000], [500, 0])):
        rest = [[1000, 0], [1000, 1000]] if far[0] < 0 else [[0, 1000], [1000, 1000]]
        a, b = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
        d.draw_polygon(a, [far, *rest], [])
        d.draw_polygon(b, [border, *rest], [])
        assert np.array_equal(a, b) and a.sum() == 200, far  # half the image (no pixel centre lies on an edge)


def test_an_entry_holding_several_bare_rings_fills_each():
    left = [[0, 0], [300, 0], [300, 1000], [0, 1000]]
    right = [[700, 0], [1000, 0], [1000, 1000], [700, 1000]]
    out = dec(json.dumps([[left, right]]), 10, 10)  # one entry: a list of rings
    assert out.status == "ok" and out.form == "polygon/bare" and out.instances == 2
    assert out.mask[:, :3].all() and out.mask[:, 7:].all() and not out.mask[:, 3:7].any()
    odd = dec(json.dumps([[left, [1, 2, 3]]]), 10, 10)  # a ring beside something that is no ring
    assert odd.status == "unknown_form" and odd.notes == ["entry in no known form skipped"]
    assert dec(json.dumps([[left, []]]), 10, 10).status == "unknown_form"


def test_the_coordinate_conventions_scale_to_0_1000_exactly():
    from omniseg.models.api.frames import scale_to_1000

    assert scale_to_1000("norm1", None) == (1000.0, 1000.0)
    assert scale_to_1000("pixels", (200, 50)) == (5.0, 20.0)  # sent size is (width, height)
    assert scale_to_1000("norm1000", None) == (1.0, 1.0)
    with pytest.raises(ValueError, match="size of the image as sent"):
        scale_to_1000("pixels", None)


def test_a_bad_crop_after_a_good_one_keeps_the_good_one():
    a = blob(20, 60, 30, 90)
    bad = entry(a) | {"mask": "data:image/png;base64,bm90IGEgcG5n"}
    out = dec(json.dumps([entry(a), bad]))
    assert out.status == "ok" and out.instances == 1 and dice(out.mask, a) > 0.95


def test_the_vertex_limit_counts_the_whole_answer_and_allows_exactly_the_limit(monkeypatch):
    from omniseg.models.api import forms

    MAX_VERTICES = 40  # the counting is what is tested; 100,000 vertices would only make it slow
    monkeypatch.setattr(forms, "MAX_VERTICES", MAX_VERTICES)
    def ring(n):  # n vertices on a circle
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.round(np.stack([500 + 400 * np.cos(t), 500 + 400 * np.sin(t)], 1), 2).tolist()

    half = MAX_VERTICES // 2
    at = dec(json.dumps([{"points": ring(half)}, {"points": ring(MAX_VERTICES - half)}]), 10, 10)
    assert at.status == "ok" and at.instances == 2  # exactly the limit, over two entries
    over = dec(json.dumps([{"points": ring(half)}, {"points": ring(half + 1)}, {"points": ring(3)}]), 10, 10)
    assert over.status == "invalid_answer" and over.form == "too-large" and over.mask is None


def test_failures_after_reading_every_entry_keep_their_notes_reason_and_form():
    unknown = dec(json.dumps([{"centre": [3, 4]}, {"radius": 9}]))
    assert unknown.status == "unknown_form" and unknown.form == "unknown"
    assert unknown.notes == ["entry in no known form skipped"] * 2 and unknown.reason.startswith("JSON in no known")
    out = dec(json.dumps([{"box_2d": [600, 200, 300, 100]}, {"box_2d": [1, 1, 1, 1]}]))
    assert out.status == "invalid_answer" and out.form == "box" and out.mask is None
    assert out.reason.startswith("none of 2 entries held a usable mask: '[{")
    assert out.notes == ["inverted or empty box skipped"] * 2


def test_a_failure_keeps_its_notes_and_has_no_form_unless_given():
    bare = d.Decoded.fail("unparseable", "why")
    assert (bare.mask, bare.status, bare.reason, bare.notes, bare.form) == (None, "unparseable", "why", [], "")
    assert d.Decoded.fail("invalid_answer", "why", ["a note"], form="box").notes == ["a note"]


def test_a_crops_box_follows_the_rules_of_a_box_without_a_mask():
    """Its key gives the order (box_2d is [y0, x0, y1, x1], bbox, bbox_2d and box [x0, y0, x1, y1]) and the model's
    coordinate convention applies, as for a box without a mask."""
    e = entry(blob(20, 60, 30, 90))
    y0, x0, y1, x1 = e["box_2d"]
    want = dec(json.dumps([e])).mask
    for key in ("bbox", "bbox_2d", "box"):
        out = dec(json.dumps([{key: [x0, y0, x1, y1], "mask": e["mask"]}]))
        assert out.status == "ok" and out.form == "png-crops" and np.array_equal(out.mask, want), key
    pixels = {"box_2d": [y0 * H / 2000, x0 * W / 2000, y1 * H / 2000, x1 * W / 2000], "mask": e["mask"]}
    assert np.array_equal(dec(json.dumps([pixels]), coords="pixels", sent_size=(W // 2, H // 2)).mask, want)
    out = dec(json.dumps([{"box_2d": [1, 2, "3", 4], "mask": e["mask"]}]))
    assert out.status == "invalid_answer" and out.notes == ["entry without a valid box_2d skipped"]

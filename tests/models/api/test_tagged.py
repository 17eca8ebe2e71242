"""The answer forms of open vision-language models, each read in its own frame, from answers written by each
model's documented grammar (docs/omnimodels.md names the sources): the exact boxes, points, polygons expected."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from omniseg.models.api import tagged
from omniseg.models.api.forms import decode_answer


def box(h: int, w: int, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def pixels(h: int, w: int, *rc: tuple[int, int]) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for r, c in rc:
        m[r, c] = True
    return m


def test_paligemma_location_tokens_are_y_x_on_1024_per_object_and_seg_tokens_need_their_codebook():
    # y0 256 -> 25.0 rows of 100, x0 512 -> 100 of 200 columns, y1 768 -> 75, x1 960 -> 187.5 (rounds to 188)
    text = "<loc0256><loc0512><loc0768><loc0960> polyp ; <loc0000><loc0000><loc0128><loc0128> polyp"
    d = decode_answer(text, None, 100, 200)
    assert d.status == "ok" and d.form == "paligemma/loc" and d.instances == 2
    assert np.array_equal(d.mask, box(100, 200, 25, 100, 75, 188) | box(100, 200, 0, 0, 12, 25))
    seg = "<loc0256><loc0512><loc0768><loc0960>" + "".join(f"<seg{k:03d}>" for k in range(16)) + " polyp"
    d = decode_answer(seg, None, 100, 200)
    assert d.status == "unsupported_format" and d.form == "paligemma/seg" and "seg_codebook" in d.reason


def test_florence_raw_location_tokens_are_bin_centres_of_1000_boxes_after_labels_polygons_in_even_runs():
    d = decode_answer("polyp<loc_100><loc_200><loc_299><loc_399>", None, 1000, 1000)
    # bins' centres: x 100.5 .. 299.5, y 200.5 .. 399.5 on 0..1000 = pixels of a 1000 x 1000 image (rounded half even)
    assert d.status == "ok" and d.form == "florence/loc" and np.array_equal(d.mask, box(1000, 1000, 200, 100, 400, 300))
    tri = decode_answer("<loc_99><loc_99><loc_899><loc_99><loc_899><loc_899>", None, 10, 10)
    assert tri.form == "florence/loc-polygon" and tri.mask[1, 8] and tri.mask[8, 8] and not tri.mask[8, 1]
    odd = decode_answer("<loc_1><loc_2><loc_3>", None, 10, 10)
    assert odd.status == "invalid_answer" and "neither a box nor a polygon" in " ".join(odd.notes)


def test_florence_post_processed_literals_are_read_whole_in_pixels_of_the_image_as_sent():
    od = "{'<OD>': {'bboxes': [[10.0, 20.0, 60.0, 80.0]], 'labels': ['polyp']}}"
    d = decode_answer(od, None, 200, 200, sent_size=(100, 100))
    assert d.status == "ok" and d.form == "florence/literal" and not d.notes  # no "truncated answer" note
    assert np.array_equal(d.mask, box(200, 200, 40, 20, 160, 120))
    seg = "{'<REFERRING_EXPRESSION_SEGMENTATION>': {'polygons': [[[10.0, 10.0, 90.0, 10.0, 90.0, 90.0, 10.0, 90.0]]], " \
          "'labels': ['']}}"
    d = decode_answer(seg, None, 100, 100, sent_size=(100, 100))
    assert d.status == "ok" and np.array_equal(d.mask, box(100, 100, 10, 10, 90, 90))
    none = decode_answer("{'<OD>': {'bboxes': [], 'labels': []}}", None, 10, 10, sent_size=(10, 10))
    assert none.status == "invalid_answer" and none.form == "florence/literal"


def test_internvl_boxes_are_on_1000_and_deepseek_vl2_boxes_on_999():
    d = decode_answer("<ref>polyp</ref><box>[[100, 200, 300, 400]]</box>", None, 100, 100)
    assert d.form == "internvl/box" and np.array_equal(d.mask, box(100, 100, 20, 10, 40, 30))
    two = decode_answer("<ref>polyp</ref><box>[[0, 0, 100, 100], [500, 500, 600, 600]]</box>", None, 10, 10)
    assert two.instances == 2 and np.array_equal(two.mask, box(10, 10, 0, 0, 1, 1) | box(10, 10, 5, 5, 6, 6))
    d = decode_answer("<|ref|>polyp<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>", None, 50, 40)
    assert d.form == "deepseek/box" and d.mask.all()
    half = decode_answer("<|det|>[[0, 0, 499.5, 999]]<|/det|>", None, 10, 10)  # 499.5 of 999 is half the width
    assert np.array_equal(half.mask, box(10, 10, 0, 0, 10, 5))


def test_molmo_points_are_percent_and_qwen_and_moondream_points_follow_the_models_frame():
    d = decode_answer('<point x="50.0" y="25.0" alt="polyp">polyp</point>', None, 100, 200)
    assert d.form == "molmo/points" and np.array_equal(d.mask, pixels(100, 200, (25, 100)))
    d = decode_answer('<points x1="10" y1="10" x2="90.5" y2="90.5" alt="p">p</points>', None, 10, 10)
    assert np.array_equal(d.mask, pixels(10, 10, (1, 1), (9, 9))) and d.instances == 2
    q = decode_answer(json.dumps([{"point_2d": [150, 50], "label": "polyp"}]), None, 100, 200, coords="pixels",
                      sent_size=(300, 200))
    assert q.form == "point" and np.array_equal(q.mask, pixels(100, 200, (25, 100)))
    m = decode_answer(json.dumps({"points": [{"x": 0.5, "y": 0.25}]}), None, 100, 200, coords="norm1")
    assert m.form == "point" and np.array_equal(m.mask, pixels(100, 200, (25, 100)))
    boxes = decode_answer(json.dumps({"objects": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]}),
                          None, 10, 10, coords="norm1")
    assert boxes.form == "box" and np.array_equal(boxes.mask, box(10, 10, 2, 1, 4, 3))
    out = decode_answer(json.dumps([{"point_2d": [1200, 50]}]), None, 10, 10)
    assert out.status == "invalid_answer" and "point outside the image skipped" in out.notes


def test_moondream_svg_paths_absolute_relative_and_curved():
    square = "M 0.1 0.1 L 0.9 0.1 L 0.9 0.9 L 0.1 0.9 Z"
    d = decode_answer(square, None, 10, 10)
    assert d.form == "svg-path" and np.array_equal(d.mask, box(10, 10, 1, 1, 9, 9))
    relative = decode_answer(json.dumps({"path": "m0.1,0.1 h0.8 v0.8 h-0.8 z"}), None, 10, 10)
    assert np.array_equal(relative.mask, d.mask)
    curved = decode_answer("M 0.5 0.1 C 1.0 0.1 1.0 0.9 0.5 0.9 C 0.0 0.9 0.0 0.1 0.5 0.1 Z", None, 40, 40)
    assert curved.mask[20, 20] and not curved.mask[1, 1] and not curved.mask[38, 38]  # a round blob, not its box
    assert tagged.svg_path("M 0 0 L 1 0 L 1 1 M 5 5 L 6 5 L 6 6 Z") == [[[0, 0], [1, 0], [1, 1]],
                                                                      [[5, 5], [6, 5], [6, 6]]]


def test_a_complete_python_literal_is_no_truncated_json():
    d = decode_answer("{'objects': [{'bbox': [0, 0, 500, 500]}]}", None, 10, 10)
    assert d.status == "ok" and not any("truncated" in n for n in d.notes)
    assert decode_answer("{'a': __import__('os')}", None, 10, 10).status in ("unknown_form", "unparseable")


#: the grammars' building blocks, cut and mixed at random
PIECES = st.sampled_from(["<loc0256>", "<loc1023>", "<seg012>", "<seg999>", "<seg000>" * 16, "<loc0900><loc0100>", "<loc_5>", "<loc_999>", "<box>", "</box>", "[[1, 2, 3, 4]]",
                          "<|det|>", "<|/det|>", '<point x="1e308" y="nan">', "<points x1=", "M 0.1", " L 1e999 0",
                          "Z", "{'<OD>': {'bboxes': [[", "]]}}", "'", "\"", "[", "{", "NaN", "-", "99999999999999999999",
                          ";", " polyp ", "<ref>", "</ref>", "\u202e", "\x00"])


_CODEBOOK: list[str] = []


def codebook() -> str:
    """A stand-in PaliGemma codebook, made once for the module (hypothesis runs many examples per test)."""
    if not _CODEBOOK:
        import atexit
        import shutil
        import tempfile
        from pathlib import Path

        from omniseg.standins import tiny_codebook

        folder = tempfile.mkdtemp(prefix="omniseg-codebook-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # 4 MB per worker, every run: do not leave it
        _CODEBOOK.append(str(tiny_codebook.save(Path(folder) / "vae.npz", entries=64)))
    return _CODEBOOK[0]


@given(st.lists(PIECES, max_size=30).map("".join), st.booleans())
def test_any_mix_of_the_grammars_ends_as_a_status_never_an_exception(text, with_codebook):
    d = decode_answer(text, None, 16, 20, sent_size=(20, 16), seg_codebook=codebook() if with_codebook else None)
    assert d.status in ("ok", "unparseable", "invalid_answer", "unknown_form", "unsupported_format")
    assert (d.mask is not None) == (d.status == "ok")
    if d.mask is not None:
        assert d.mask.shape == (16, 20) and d.mask.dtype == bool
    assert not any("truncated" in n for n in d.notes) or "[" in text


def test_a_colour_coded_mask_picture_has_every_colour_but_the_background_as_foreground():
    import io

    from PIL import Image

    pic = np.zeros((40, 60, 3), np.uint8)
    pic[5:15, 5:25] = (220, 30, 30)  # class 1 in red: grey level 82, background to a grey threshold
    pic[20:35, 30:55] = (30, 30, 220)  # class 2 in blue: grey level 49
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG")
    d = decode_answer("", buf.getvalue(), 40, 60)
    assert d.status == "ok" and np.array_equal(d.mask, box(40, 60, 5, 5, 15, 25) | box(40, 60, 20, 30, 35, 55))
    assert "colour-coded" in " ".join(d.notes)
    grey = np.zeros((40, 60), np.uint8)
    grey[5:15, 5:25] = 200
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    d = decode_answer("", buf.getvalue(), 40, 60)  # black and white: the grey threshold, no colour note
    assert np.array_equal(d.mask, box(40, 60, 5, 5, 15, 25)) and not d.notes

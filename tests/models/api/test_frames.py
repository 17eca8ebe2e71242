"""Qwen2.5-VL's own frame: the resize rule equals transformers' ``smart_resize``, and a box answered in the model's
pixels comes back to the image within a pixel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as transformers_smart_resize

from omniseg.models.api.forms import decode_answer
from omniseg.models.api.frames import RESIZE_RULES, ResizeRule, rule_of, scale_to_1000, smart_resize


@pytest.mark.parametrize("rule", [RESIZE_RULES["qwen2.5-vl"], RESIZE_RULES["ollama"],
                                  ResizeRule(factor=32, min_pixels=64 * 64, max_pixels=512 * 512)])
def test_the_resize_rule_is_transformers_smart_resize_on_a_thousand_random_sizes(rule):
    rng = np.random.default_rng(7)
    sizes = np.concatenate([rng.integers(10, 5000, (700, 2)), rng.integers(28, 200, (200, 2)),
                            rng.integers(1000, 9000, (100, 2))])
    for h, w in sizes.tolist():
        if max(h, w) / min(h, w) > 200:
            continue
        want = transformers_smart_resize(h, w, factor=rule.factor, min_pixels=rule.min_pixels, max_pixels=rule.max_pixels)
        assert smart_resize(h, w, rule) == tuple(want), (h, w)


def test_the_documented_examples_of_ollama_and_a_1024_square_for_the_checkpoint_processor():
    assert smart_resize(800, 1200, rule_of("ollama")) == (812, 1204)  # ollama issue 11217
    assert smart_resize(1000, 1000, rule_of("ollama")) == (980, 980)
    assert smart_resize(1024, 1024, rule_of("qwen2.5-vl")) == (1036, 1036)
    assert rule_of(None) == RESIZE_RULES["qwen2.5-vl"] and rule_of(ResizeRule(factor=14)).factor == 14
    with pytest.raises(ValueError, match="aspect over 200"):
        smart_resize(2, 500, rule_of(None))


@pytest.mark.parametrize("sent, rule", [((1024, 1024), "qwen2.5-vl"), ((1200, 800), "ollama"), ((640, 480), "qwen2.5-vl"),
                                        ((333, 1777), "ollama")])
def test_a_box_in_the_models_resized_frame_decodes_within_a_pixel_of_the_box_in_the_image(sent, rule):
    w, h = sent
    mh, mw = smart_resize(h, w, rule_of(rule))
    x0, y0, x1, y1 = 0.1 * w, 0.2 * h, 0.55 * w, 0.7 * h  # the object in the image as sent
    answer = json.dumps([{"bbox_2d": [x0 * mw / w, y0 * mh / h, x1 * mw / w, y1 * mh / h], "label": "polyp"}])
    d = decode_answer(answer, None, h, w, coords="model-pixels", sent_size=(w, h), resize_rule=rule_of(rule))
    rows, cols = np.nonzero(d.mask)
    got = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert all(abs(a - b) <= 1 for a, b in zip(got, (x0, y0, x1, y1))), (got, (x0, y0, x1, y1))
    if (mh, mw) != (h, w):  # read as pixels of the image sent, the same answer is off by more
        naive = decode_answer(answer, None, h, w, coords="pixels", sent_size=(w, h))
        assert not np.array_equal(naive.mask, d.mask)
    assert scale_to_1000("model-pixels", (w, h), rule_of(rule)) == (1000 / mw, 1000 / mh)

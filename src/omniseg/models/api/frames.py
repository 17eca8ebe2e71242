"""The frames models answer in, and the way from each back to the image's 0..1000 frame.

A point or a box means nothing without its frame. Gemini and Qwen3-VL answer on 0..1000 of the image, some
models on 0..1, Florence-2's post-processed answers in pixels of the image they were given. Qwen2.5-VL answers in
pixels of **its own resized input**: its processor rounds each side to a multiple of ``factor`` (28) and keeps
the pixel count within ``min_pixels`` and ``max_pixels`` (``smart_resize`` in transformers' Qwen2-VL image
processor; vLLM and SGLang use the checkpoint's processor, Ollama caps the pixel count at about a megapixel).
Read as pixels of the image sent, a 1024 x 1024 image that the model saw as 1036 x 1036 puts boxes up to 11.5
pixels off. :func:`smart_resize` reproduces the rule (checked against transformers' own on random sizes) so that
such answers come back to the image exactly; the rule is an option (``resize_rule``) because servers differ.

omniseg does not instead send images already sized to the rule: the sent image is also the answer archive's key
and the same for every model, and a server may still resize what it receives (Ollama does, by its own cap).
"""

from __future__ import annotations

import math
from typing import Literal, Union

from pydantic import Field

from ...options import Options


class ResizeRule(Options):
    """How a Qwen2-VL-family processor resizes an image before the model sees it."""

    factor: int = Field(28, ge=1, description="each side is rounded to a multiple of this (patch 14 x merge 2)")
    min_pixels: int = Field(56 * 56, ge=1, description="the fewest pixels the resized image keeps")
    max_pixels: int = Field(12_845_056, ge=1, description="the most pixels the resized image keeps")


#: documented rules: the Qwen2.5-VL checkpoints' processor (preprocessor_config.json: min 3,136, max 12,845,056
#: pixels), as transformers, vLLM and SGLang apply it; and Ollama's qwen2.5vl, which keeps under about a megapixel
#: (ollama issue 11217: 1200x800 becomes 1204x812, 1000x1000 becomes 980x980: the transformers default of
#: 1280 x 28 x 28 = 1,003,520 pixels)
RESIZE_RULES = {
    "qwen2.5-vl": ResizeRule(),
    "ollama": ResizeRule(max_pixels=1280 * 28 * 28),
}

RuleOption = Union[Literal["qwen2.5-vl", "ollama"], ResizeRule]


def rule_of(option: RuleOption | None) -> ResizeRule:
    """The resize rule an option names (a preset's name, or the rule itself)."""
    if option is None:
        return RESIZE_RULES["qwen2.5-vl"]
    return RESIZE_RULES[option] if isinstance(option, str) else option


def smart_resize(height: int, width: int, rule: ResizeRule) -> tuple[int, int]:
    """(height, width) of the image the model sees: each side a multiple of ``rule.factor``, the pixel count within
    the rule's bounds, the aspect ratio kept as closely as that allows (Python's ``round``, as the original)."""
    f = rule.factor
    if min(height, width) < 1 or max(height, width) / min(height, width) > 200:
        raise ValueError(f"a {width}x{height} image has no frame under this resize rule (aspect over 200)")
    h_bar, w_bar = round(height / f) * f, round(width / f) * f
    if h_bar * w_bar > rule.max_pixels:
        beta = math.sqrt((height * width) / rule.max_pixels)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < rule.min_pixels:
        beta = math.sqrt(rule.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return h_bar, w_bar


#: coordinate conventions of points and boxes (a model's option, recorded with each row)
COORDS = {"norm1000": "0..1000 of the image's width and height (Gemini, Qwen3-VL)", "norm1": "0..1 of the image",
          "pixels": "pixels of the image as it was sent",
          "model-pixels": "pixels of the model's own resized input (Qwen2.5-VL): the image as sent, resized by "
                          "resize_rule"}


def scale_to_1000(coords: str, sent_size: tuple[int, int] | None, rule: ResizeRule | None = None) -> tuple[float, float]:
    """Factors that bring x and y of the given convention to 0..1000 of the image."""
    if coords == "norm1":
        return 1000.0, 1000.0
    if coords in ("pixels", "model-pixels"):
        if not sent_size:
            raise ValueError("pixel coordinates need the size of the image as sent")
        w, h = sent_size
        if coords == "model-pixels":
            h, w = smart_resize(h, w, rule or RESIZE_RULES["qwen2.5-vl"])
        return 1000.0 / w, 1000.0 / h
    return 1.0, 1.0

from __future__ import annotations

import numpy as np
import pytest

from omniseg import metrics, models
from omniseg.config import ModelConfig
from omniseg.datasets.base import Sample

from conftest import blob_mask, lesion_image, vessel_mask


def build(kind, **options):
    return models.build(ModelConfig(name=kind, kind=kind, options=options))


@pytest.mark.parametrize("bright", [True, False])
def test_otsu_finds_a_contrasting_blob(bright):
    rng = np.random.default_rng(3)
    m = blob_mask(80, 90, rng)
    s = Sample("x", lesion_image(m, rng, bright=bright), m)
    pred = build("otsu", foreground="bright" if bright else "dark").predict(s)
    assert pred.status == "ok" and metrics.dice(metrics.confusion(pred.mask, m)) > 0.9


def test_frangi_finds_lines_inside_the_fov():
    rng = np.random.default_rng(4)
    v = vessel_mask(96, 96, rng)
    img = np.stack([np.full(v.shape, 120), np.where(v, 70, 170), np.full(v.shape, 40)], -1).astype(np.uint8)
    roi = np.ones(v.shape, bool)
    roi[:, :8] = False
    pred = build("frangi", fraction=float(v.mean()), fov_erosion=0).predict(Sample("x", img, v, roi=roi))
    assert not (pred.mask & ~roi).any()
    assert metrics.dice(metrics.confusion(pred.mask, v, roi)) > 0.5


def test_human_reference_needs_the_annotation():
    m = np.zeros((5, 5), bool)
    s = Sample("x", np.zeros((5, 5, 3), np.uint8), m, extra={"human": m})
    assert build("human").predict(s).status == "ok"
    p = build("human").predict(Sample("y", s.image, m))
    assert p.status == "unavailable" and "no 'human' annotation" in p.reason


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: frangi, gemini, human, otsu, unet .did you mean .unet"):
        models.get("unet2")

"""The routing curve's end points and its oracle bound."""

from __future__ import annotations

import numpy as np
import pytest

from omniseg.study import routing
from omniseg.models.specialist import confidence


def case(seed, n=40):
    rng = np.random.default_rng(seed)
    return [f"s{i:03d}" for i in range(n)], rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n)


@pytest.mark.parametrize("seed", range(5))
def test_end_points_are_each_model_alone_and_the_oracle_is_never_below(seed):
    ids, spec, omni, conf = case(seed)
    c = routing.curve(ids, spec, omni, conf)
    assert len(c) == len(ids) + 1
    assert c["hybrid_dice"].iloc[0] == pytest.approx(spec.mean())
    assert c["hybrid_dice"].iloc[-1] == pytest.approx(omni.mean())
    assert c["share_sent"].iloc[0] == 0 and c["share_sent"].iloc[-1] == 1
    assert (c["oracle_dice"] >= c["hybrid_dice"] - 1e-12).all()
    assert c["oracle_dice"].max() == pytest.approx(np.maximum(spec, omni).mean())
    assert c["oracle_dice"].max() >= max(spec.mean(), omni.mean())


def test_least_confident_images_go_first():
    ids = ["a", "b", "c"]
    c = routing.curve(ids, [0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.9, 0.1, 0.5])
    # sending one image sends "b" (least confident): hybrid = (0.9 + 0.8 + 0.5) / 3
    assert c["hybrid_dice"].iloc[1] == pytest.approx((0.9 + 0.8 + 0.5) / 3)


def test_confidence_of_probability_maps():
    sure = np.zeros((10, 10), np.float32)
    sure[2:6, 2:6] = 0.99
    unsure = sure * 0.55
    assert confidence(sure) > 0.95
    assert confidence(unsure) < 0.2
    assert confidence(np.zeros((4, 4))) == 0.0


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=40))
def test_the_curve_runs_from_one_model_to_the_other_under_its_oracle(rows):
    ids = [f"s{i:03d}" for i in range(len(rows))]
    s, o, c = (np.array(col) for col in zip(*rows))
    curve = routing.curve(ids, s, o, c)
    assert list(curve["n_sent"]) == list(range(len(rows) + 1))
    assert curve["hybrid_dice"].iloc[0] == pytest.approx(s.mean()) and curve["hybrid_dice"].iloc[-1] == pytest.approx(o.mean())
    assert (curve["oracle_dice"] >= curve["hybrid_dice"] - 1e-12).all()
    assert curve["oracle_dice"].max() == pytest.approx(np.maximum(s, o).mean())
    least_sure = int(np.lexsort((np.array(ids), c))[0])  # the first image sent is the least confident one
    if len(rows) > 1:
        assert curve["hybrid_dice"].iloc[1] == pytest.approx((s.sum() - s[least_sure] + o[least_sure]) / len(rows))

"""The report's cautions: which contender does not beat a floor (ties included), and which do not count."""

from __future__ import annotations

import math

import pandas as pd

from omniseg.study import caveats


def _summary(rows):
    return pd.DataFrame([{"subset": s, "model": m, "dice_mean": d} for s, m, d in rows])


ROLES = {"spec": "specialist", "omni": "omnimodel", "sam": "foundation", "oracle": "foundation",
         "ellipse": "floor", "blank": "floor", "nan-floor": "floor", "me": "human"}


def test_a_contender_at_or_below_the_best_floor_is_flagged_on_the_whole_split_only():
    s = _summary([("all", "spec", 0.80), ("all", "omni", 0.40), ("all", "sam", 0.40), ("all", "oracle", 0.10),
                  ("all", "ellipse", 0.40), ("all", "blank", 0.05), ("all", "nan-floor", math.nan),
                  ("all", "me", 0.10), ("hardest", "spec", 0.01), ("hardest", "ellipse", 0.9)])
    got = caveats.floor_failures(s, ROLES, privileged={"oracle"})
    assert got == [("omni", "omnimodel", 0.40, "ellipse", 0.40), ("sam", "foundation", 0.40, "ellipse", 0.40)]


def test_the_best_floor_is_the_highest_and_of_two_equal_the_later_name_and_no_floor_is_no_caution():
    s = _summary([("all", "spec", 0.30), ("all", "ellipse", 0.35), ("all", "blank", 0.35), ("all", "omni", math.nan)])
    assert caveats.floor_failures(s, ROLES) == [("spec", "specialist", 0.30, "ellipse", 0.35)]
    s = _summary([("all", "spec", 0.30), ("all", "ellipse", 0.20), ("all", "blank", 0.25)])
    assert caveats.floor_failures(s, ROLES) == []
    s = _summary([("all", "spec", 0.30), ("all", "ellipse", 0.20), ("all", "blank", 0.50)])  # the best by Dice
    assert caveats.floor_failures(s, ROLES) == [("spec", "specialist", 0.30, "blank", 0.50)]
    s = _summary([("all", "spec", 0.30), ("all", "nan-floor", math.nan), ("all", "me", 0.9)])
    assert caveats.floor_failures(s, ROLES) == []


def test_only_an_api_model_that_answered_from_another_endpoint_than_its_providers_is_named(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "review"))
    import planted_study as ps

    st, _ = ps.make(tmp_path, n=4)
    st.db.execute("UPDATE models SET kind = 'gemini' WHERE model IN (?, ?)", (ps.SPEC, ps.OMNI))
    st.db.execute("UPDATE predictions SET endpoint = 'https://generativelanguage.googleapis.com/' WHERE model = ?",
                  (ps.SPEC,))  # the provider's own endpoint (a trailing slash is the same)
    st.db.execute("UPDATE predictions SET endpoint = 'http://127.0.0.1:9/v1' WHERE model = ?", (ps.OMNI,))
    assert caveats.endpoints(st, "polyp") == {ps.OMNI: ["http://127.0.0.1:9/v1"]}
    # a kind with no API of its own (a chain records its drawer's endpoint) or one no longer registered: no default
    st.db.execute("UPDATE models SET kind = 'masks' WHERE model = ?", (ps.OMNI,))
    st.db.execute("UPDATE models SET kind = 'no-such-kind' WHERE model = ?", (ps.SPEC,))
    assert caveats.endpoints(st, "polyp") == {ps.OMNI: ["http://127.0.0.1:9/v1"],
                                              ps.SPEC: ["https://generativelanguage.googleapis.com/"]}

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omniseg import report
from omniseg.curate import curate

from test_curate import seeded_store


def test_summary_matches_a_hand_computation(store_path, tmp_path):
    st = seeded_store(store_path, {"a": 0.2, "b": 0.4, "c": 0.6, "d": 0.8})
    st.record(1, "t", "a", "omni", status="error", reason="blocked", scores={"dice": 0.0, "iou": 0.0})
    st.record(1, "t", "b", "omni", status="ok", scores={"dice": 0.5, "iou": 0.25})
    st.record(1, "t", "c", "omni", status="ok", scores={"dice": 0.7, "iou": 0.5})
    st.record(1, "t", "d", "omni", status="sample_error", reason="unreadable")
    curate(st, "t", 1)
    paths = report.write(st, tmp_path / "rep", split="test")
    per_image = pd.read_csv(paths["per_image"])
    summary = pd.read_csv(paths["summary"]).set_index(["subset", "model"])
    assert len(per_image) == 8
    omni = summary.loc[("all", "omni")]
    assert omni["n"] == 3 and omni["failures"] == 1 and omni["not_scored"] == 1
    assert omni["failure_rate"] == pytest.approx(1 / 3)
    assert omni["dice_mean"] == pytest.approx(np.mean([0.0, 0.5, 0.7]), abs=1e-6)
    assert omni["dice_std"] == pytest.approx(np.std([0.0, 0.5, 0.7], ddof=1), abs=1e-6)
    assert summary.loc[("hardest", "omni")]["dice_mean"] == 0.0  # "a" is the hardest for ref
    assert summary.loc[("easiest", "ref")]["dice_mean"] == pytest.approx(0.8)
    # every summary number recomputed from the per-image CSV
    for (subset, model), row in summary.iterrows():
        part = per_image[per_image["model"] == model]
        if subset != "all":
            part = part[part[f"{subset}_rank"].notna()]
        part = part[part["dice"].notna()]
        assert row["n"] == len(part)
        assert row["iou_mean"] == pytest.approx(part["iou"].mean(), abs=1e-6, nan_ok=True)
    md = paths["markdown"].read_text()
    assert "| all | omni | 3 | 0.400 ± 0.361 |" in md and "33.3%" in md

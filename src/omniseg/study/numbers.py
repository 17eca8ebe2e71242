"""How the reports write a number: three decimals, a dash for a missing value, small p-values as <0.001.

One place, so that report.md, the Findings and the review's claim write a number the same way.
"""

from __future__ import annotations

import pandas as pd

DASH = "–"


def decimals(v: float, signed: bool = True) -> str:
    """A difference (signed, +0.123) or a level (0.123) at three decimals; a dash when missing."""
    return DASH if pd.isna(v) else (f"{v:+.3f}" if signed else f"{v:.3f}")


def p_value(p: float) -> str:
    """A p-value at three decimals, <0.001 below that; a dash when missing."""
    return DASH if pd.isna(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")

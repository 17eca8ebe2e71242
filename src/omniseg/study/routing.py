"""Complementary routing: send an image to the omnimodel only when the specialist is unsure.

Images are sent least-confident first (ties by sample id). For each number k of images sent,
the hybrid's Dice is the omnimodel's on those k and the specialist's on the rest; k = 0 is the
specialist alone and k = n the omnimodel alone. The oracle sends, for each k, the k images on
which the omnimodel gains most: an upper bound for any router at that share, and at its best
it picks the better model on every image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The specialist's confidence per image is computed when it predicts
# (omniseg.models.specialist.confidence) and stored in its prediction's meta.


def curve(ids, specialist, omnimodel, conf) -> pd.DataFrame:
    """share_sent, n_sent, hybrid (mean Dice), oracle (mean Dice) for k = 0..n images sent."""
    ids = np.asarray(ids)
    s = np.asarray(specialist, dtype=float)
    o = np.asarray(omnimodel, dtype=float)
    c = np.asarray(conf, dtype=float)
    n = len(s)
    order = np.lexsort((ids, c))  # least confident first, ties by id
    gain = (o - s)[order]
    hybrid = (s.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / n
    best = np.sort(o - s)[::-1]
    oracle = (s.sum() + np.concatenate([[0.0], np.cumsum(best)])) / n
    k = np.arange(n + 1)
    return pd.DataFrame({"n_sent": k, "share_sent": k / n, "hybrid_dice": hybrid, "oracle_dice": oracle})

"""The fake answers' own outline tracer: what it simplifies must be what scikit-image's would, so the fake servers'
answers stay the ones the tests were written against."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from skimage import measure

from omniseg.standins.gemini_answers import simplify


def _ring(rng: np.random.Generator, n: int, jag: float) -> np.ndarray:
    """A closed contour of a random blob on the half-pixel lattice find_contours returns (first point = last)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = 20 + rng.normal(0, jag, n).cumsum() * 0.3
    pts = np.column_stack([40 + radius * np.sin(angles), 40 + radius * np.cos(angles)])
    pts = np.round(pts * 2) / 2
    return np.vstack([pts, pts[:1]])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 300), st.floats(0.0, 4.0), st.sampled_from([0.5, 1.0, 2.0]))
def test_simplify_keeps_exactly_the_points_scikit_image_keeps(seed, n, jag, tolerance):
    coords = _ring(np.random.default_rng(seed), n, jag)
    assert np.array_equal(simplify(coords, tolerance), measure.approximate_polygon(coords, tolerance))


def test_simplify_on_the_contours_of_a_lesion_mask():
    from conftest import blob_mask

    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = np.pad(blob_mask(96, 120, rng), 1)
        for contour in measure.find_contours(mask.astype(float), 0.5):
            assert np.array_equal(simplify(contour, 1.0), measure.approximate_polygon(contour, 1.0))

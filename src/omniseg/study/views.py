"""What a picture of a case shows: an image as it is; a volume as the axial slices that matter (the one through the
largest reference area, and the one where the models disagree most with the reference), windowed as the run showed
them to 2-D models. Reports, report.html and the montage draw these."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datasets import volumes


@dataclass
class View:
    label: str  # '' for an image; which slice of a volume ('axial 12/40: largest reference')
    image: np.ndarray  # 8-bit RGB
    truth: np.ndarray  # bool
    masks: dict[str, np.ndarray | None]


def views(sample, masks: dict[str, np.ndarray | None], slicing: dict | None = None, worst: bool = True) -> list[View]:
    """The views of one case; ``slicing`` is the task's recorded `slices` section (its window), ``worst`` adds a
    volume's slice of most disagreement when it is another slice."""
    if not sample.is_volume:
        return [View("", sample.image, sample.mask, masks)]
    slicing = slicing or {}
    axis = volumes.AXES[slicing.get("axis") or "axial"]
    other = tuple(a for a in range(3) if a != axis)
    lo, hi = volumes.intensity_range(sample.image, slicing.get("window"),
                                     tuple(slicing.get("percentiles") or (0.5, 99.5)))
    area = sample.mask.sum(axis=other)
    wrong = np.zeros_like(area)
    for m in masks.values():
        if m is not None and m.shape == sample.mask.shape:
            wrong = wrong + (m ^ sample.mask).sum(axis=other)
    picks = [(int(np.argmax(area)) if area.any() else int(np.argmax(wrong)), "largest reference")]
    if worst and wrong.any() and int(np.argmax(wrong)) != picks[0][0]:
        picks.append((int(np.argmax(wrong)), "worst disagreement"))
    n = sample.mask.shape[axis]
    out = []
    for k, why in picks:
        cut = lambda a: None if a is None or a.shape != sample.mask.shape else np.take(a, k, axis=axis)  # noqa: E731
        out.append(View(f"{slicing.get('axis') or 'axial'} {k}/{n}: {why}",
                        volumes.to_rgb(np.take(sample.image, k, axis=axis), lo, hi), cut(sample.mask),
                        {name: cut(m) for name, m in masks.items()}))
    return out

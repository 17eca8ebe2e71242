"""A volume seen as 2-D slices, windowed to 8-bit images: what 2-D models are given (omniseg.models.slicewise) and
what `omniseg train` fits a 2-D specialist on (:class:`Slices`), with one windowing for both.

The slicing is the task's `slices` section (omniseg.config.SliceConfig): the axis, the CT window or the volume's
percentiles, and which slices are asked. A slice's id is ``{volume}#{axis}{index:04d}``.
"""

from __future__ import annotations

import numpy as np

from . import volumes
from .base import Dataset, Sample, SampleRef


def plan(volume: Sample, slicing) -> tuple[int, list[int], tuple[float, float]]:
    """(the array axis, the slice indices asked, the intensities mapped to black and white) for one volume."""
    axis = volumes.AXES[slicing.axis]
    return (axis, volumes.selected(volume.mask, axis, slicing.select, slicing.margin, slicing.every),
            volumes.intensity_range(volume.image, slicing.window, slicing.percentiles))


def planes(volume: Sample, slicing, indices: list[int], axis: int, lo: float, hi: float) -> list[Sample]:
    """The 2-D samples of ``indices``: windowed RGB images with their reference slices."""
    return [Sample(f"{volume.id}#{slicing.axis}{k:04d}", volumes.to_rgb(np.take(volume.image, k, axis=axis), lo, hi),
                   np.take(volume.mask, k, axis=axis), meta={**volume.meta, "volume": volume.id, "slice": k})
            for k in indices]


class Slices(Dataset):
    """Every slice of a volume dataset as a 2-D sample, in its volume's split (a volume is never split across
    training and test); the last volume read is kept, so reading a volume's slices in order reads it once."""

    task = "volume"
    layout = "(the slices of a volume dataset)"

    def __init__(self, inner: Dataset, slicing):
        self.inner = inner
        self.slicing = slicing
        self.root = inner.root
        self.options = inner.options
        self.name = inner.name
        self._last: tuple[str, Sample, tuple] | None = None
        self._refs_cache: list[SampleRef] | None = None
        self._volumes: dict[str, SampleRef] = {}

    def check_root(self) -> None:
        self.inner.check_root()

    def _missing(self) -> list[str]:
        return []  # the volumes' dataset checks its own layout (check_root)

    def group(self, sample_id: str) -> str:
        """The volume a slice comes from: training holds out whole volumes for validation."""
        return sample_id.rsplit("#", 1)[0]

    def _volume(self, ref: SampleRef) -> tuple[Sample, tuple]:
        if self._last is None or self._last[0] != ref.id:
            sample = self.inner.load(ref)
            self._last = (ref.id, sample, plan(sample, self.slicing))
        return self._last[1], self._last[2]

    def _refs(self) -> list[SampleRef]:
        if self._refs_cache is None:
            from ..errors import SampleError

            out = []
            self._volumes = {r.id: r for r in self.inner.refs("all")}
            for ref in self._volumes.values():
                try:
                    volume, (axis, indices, _) = self._volume(ref)
                except SampleError as e:  # listed once, as the volume, with its problem
                    out.append(SampleRef(ref.id, ref.split, ref.files, problem=str(e)))
                    continue
                out += [SampleRef(f"{ref.id}#{self.slicing.axis}{k:04d}", ref.split, ref.files,
                                  meta={"volume": ref.id, "slice": k, "axis": axis}) for k in indices]
                del volume
            self._refs_cache = out
        return self._refs_cache

    def load(self, ref: SampleRef) -> Sample:
        from ..errors import SampleError

        if ref.problem:
            raise SampleError(ref.problem)
        self._refs()
        volume, (axis, _, (lo, hi)) = self._volume(self._volumes[ref.meta["volume"]])
        return planes(volume, self.slicing, [ref.meta["slice"]], axis, lo, hi)[0]

"""A 2-D model on volumes: each volume is cut into slices along the configured axis, windowed to 8-bit images, given
to the model a chunk at a time, and the slice masks are stacked back into one volume prediction (docs/datasets.md,
"Volumes").

The row is per volume. Each slice an API model is asked about is one request whose answer is archived under the sent
image, as any image's is, so a rerun or a resumed kill pays for no slice twice; `--dry-run` counts the slices'
calls. A slice that fails is predicted empty, and the volume's row says how many failed and why (meta
``failed_slices``); only when every asked slice failed is the row a failure itself. Slices the selection leaves out
are predicted empty. Memory holds two chunks of slices, never the whole volume as images.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..datasets import slices, volumes
from ..datasets.base import Sample
from .base import Prediction, RunContext, Segmenter

#: slices per chunk when the model has no preferred batch: the next chunk is submitted before this one is collected
CHUNK = 16


class SliceWise(Segmenter):
    """``inner`` (any 2-D model) asked slice by slice; ``slicing`` is the task's :class:`omniseg.config.SliceConfig`."""

    def __init__(self, inner: Segmenter, slicing):
        super().__init__(inner.name, inner.options)
        self.inner = inner
        self.slicing = slicing
        self.kind = inner.kind
        self.role = inner.role
        self.version = inner.version
        self.unhashed = inner.unhashed
        self.inert = inner.inert
        # told where the reference is: marked in every table as the box-oracle is
        self.privileged = inner.privileged or slicing.select == "reference"

    @property
    def stop_reason(self) -> str | None:
        return self.inner.stop_reason

    @stop_reason.setter
    def stop_reason(self, value: str | None) -> None:  # Segmenter.__init__ sets it
        if hasattr(self, "inner"):
            self.inner.stop_reason = value

    def signature(self) -> dict[str, Any]:
        sig = {**self.inner.signature(), "slices": self.slicing.model_dump(mode="json")}
        if self.privileged:  # what the store, the tables and the claims read to leave it out of the contenders
            sig["privileged"] = True
        return sig

    def bind(self, context: RunContext) -> None:
        self.context = context
        self.inner.bind(context)

    def check_ready(self) -> None:
        self.inner.check_ready()

    def close(self) -> None:
        self.inner.close()

    def _chunks(self, volume: Sample):
        axis, indices, (lo, hi) = slices.plan(volume, self.slicing)
        size = self.inner.preferred_batch or CHUNK
        for start in range(0, len(indices), size):
            part = indices[start:start + size]
            yield part, slices.planes(volume, self.slicing, part, axis, lo, hi)

    def estimate(self, samples: list[Sample]) -> dict[str, Any]:
        total = {"calls": 0, "cached": 0, "cost_usd": 0.0, "slices": 0}
        for volume in samples:
            for _, chunk in self._chunks(volume):
                e = self.inner.estimate(chunk)
                for k in ("calls", "cached", "cost_usd"):
                    total[k] += e[k]
                total["slices"] += len(chunk)
        return total

    def predict(self, sample: Sample) -> Prediction:
        axis = volumes.AXES[self.slicing.axis]
        mask = np.zeros(sample.mask.shape, bool)
        statuses: Counter = Counter()
        first_failure = ""
        calls: list[dict] = []
        pending = None
        for part, chunk in self._chunks(sample):
            handle = (part, self.inner.submit(chunk), chunk)
            if pending is not None:  # the next chunk is on its way while this one is collected
                first_failure = self._gather(pending, mask, axis, statuses, calls, first_failure)
            pending = handle
            if self.inner.stop_reason:
                break
        if pending is not None:
            first_failure = self._gather(pending, mask, axis, statuses, calls, first_failure)
        asked = sum(statuses.values())
        if statuses["skipped"]:  # the run stops (budget, quota): the volume is done when it is resumed
            return Prediction(None, status="skipped", reason=self.inner.stop_reason or "stopped", calls=calls)
        failed = asked - statuses["ok"]
        meta = {"slices": asked, "failed_slices": failed, "slice_axis": self.slicing.axis, "depth": int(mask.shape[axis])}
        if failed:
            meta["slice_statuses"] = {k: v for k, v in sorted(statuses.items()) if k != "ok"}
        if asked and failed == asked:
            worst = next(iter(meta["slice_statuses"]))
            return Prediction(None, status=worst, reason=f"every one of the {asked} slices failed; the first: "
                              f"{first_failure}", meta=meta, calls=calls)
        reason = f"{failed} of {asked} slices failed and count as empty; the first: {first_failure}" if failed else ""
        return Prediction(mask, reason=reason, meta=meta, calls=calls)

    def _gather(self, pending, mask, axis, statuses, calls, first_failure) -> str:
        part, handle, chunk = pending
        for k, p in zip(part, self.inner.collect(handle)):
            statuses[p.status] += 1
            calls.extend(p.calls)
            if p.status == "ok" and p.mask is not None and p.mask.shape == chunk[0].mask.shape:
                index = [slice(None)] * 3
                index[axis] = k
                mask[tuple(index)] = p.mask.astype(bool)
            elif p.status == "ok":
                statuses["ok"] -= 1
                statuses["error"] += 1
                first_failure = first_failure or f"slice {k}: a mask of shape {None if p.mask is None else p.mask.shape}"
            elif p.status != "skipped" and not first_failure:
                first_failure = f"slice {k}: {p.status}: {p.reason}"
        return first_failure


def for_volumes(segs: list[Segmenter], slicing) -> list[Segmenter]:
    """The run's models for a volume dataset: those that read whole volumes as they are, every other one slice by
    slice."""
    return [m if m.volumetric else SliceWise(m, slicing) for m in segs]

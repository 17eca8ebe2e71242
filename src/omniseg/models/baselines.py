"""Training-free reference models: a zero-shot floor for every table that is not an omnimodel.

* ``otsu``: grey-level Otsu threshold, the brighter or darker class, largest connected
  component not touching the border, holes filled (polyps are brighter; ultrasound tumours darker).
* ``frangi``: Frangi vesselness of the inverted green channel inside the field of view,
  keeping the most vessel-like share of field-of-view pixels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from ..datasets.base import Sample
from .base import Prediction, Segmenter


class OtsuOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    foreground: Literal["bright", "dark"] = Field("bright", description="which Otsu class is the target")
    sigma: float = Field(2.0, ge=0, description="Gaussian smoothing before thresholding, in pixels")
    drop_border: bool = Field(True, description="ignore components that touch the image border")


class OtsuBaseline(Segmenter):
    kind = "otsu"
    Options = OtsuOptions

    def predict(self, sample: Sample) -> Prediction:
        from skimage.filters import threshold_otsu

        grey = sample.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if self.options.sigma:
            grey = ndimage.gaussian_filter(grey, self.options.sigma)
        if np.ptp(grey) == 0:
            return Prediction(mask=np.zeros(grey.shape, bool), meta={"note": "constant image"})
        t = threshold_otsu(grey)
        fg = grey > t if self.options.foreground == "bright" else grey <= t
        labels, n = ndimage.label(fg)
        if n == 0:
            return Prediction(mask=fg, meta={"threshold": float(t)})
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        if self.options.drop_border:
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            kept = sizes.copy()
            kept[border] = 0
            if kept.any():  # fall back to all components when every one touches the border
                sizes = kept
        mask = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))
        return Prediction(mask=mask, meta={"threshold": float(t)})


class FrangiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sigmas: tuple[float, ...] = Field((1.0, 1.5, 2.0, 2.5, 3.0), description="vessel scales in pixels")
    fraction: float = Field(0.12, gt=0, lt=1, description="share of field-of-view pixels labelled vessel")
    fov_erosion: int = Field(6, ge=0, description="pixels trimmed off the field of view's rim (its edge looks like a vessel)")


class FrangiBaseline(Segmenter):
    kind = "frangi"
    Options = FrangiOptions

    def predict(self, sample: Sample) -> Prediction:
        from skimage.filters import frangi

        green = sample.image[..., 1].astype(np.float32) / 255.0
        roi = sample.roi if sample.roi is not None else np.ones(green.shape, bool)
        inner = ndimage.binary_erosion(roi, iterations=self.options.fov_erosion) if self.options.fov_erosion else roi
        v = frangi(green, sigmas=self.options.sigmas, black_ridges=True)
        v[~inner] = 0
        if not inner.any():
            return Prediction(mask=np.zeros(green.shape, bool))
        t = np.quantile(v[inner], 1 - self.options.fraction)
        mask = (v > t) & inner
        return Prediction(mask=mask, prob=(v / v.max()).astype(np.float32) if v.max() > 0 else None, meta={"threshold": float(t)})

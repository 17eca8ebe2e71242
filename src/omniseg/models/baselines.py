"""Training-free reference models: a zero-shot floor for every table that is not an omnimodel.

* ``otsu``: grey-level Otsu threshold inside the field of view (a dark frame and specular
  highlights left out), the brighter or darker class, the largest component near the centre,
  holes filled (polyps are brighter; ultrasound tumours darker).
* ``ellipse``: a centred ellipse covering a fixed share of the image: no look at the pixels at all,
  it measures how much a table owes to where datasets put their targets.
* ``frangi``: Frangi vesselness of the inverted green channel inside the field of view,
  keeping the most vessel-like share of field-of-view pixels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage

from ..datasets.base import Sample
from ..options import Options
from .base import Prediction, Segmenter


class OtsuOptions(Options):
    foreground: Literal["bright", "dark"] = Field("bright", description="which Otsu class is the target")
    sigma: float = Field(2.0, ge=0, description="Gaussian smoothing before thresholding, in pixels")
    frame: bool = Field(True, description="leave out a dark frame joined to the image border (an endoscope's black "
                                          "corners, an ultrasound fan's surround): it neither sets the threshold nor is target")
    highlights: bool = Field(True, description="leave specular highlights (bright, unsaturated) out of the threshold")
    opening: int = Field(3, ge=0, description="binary opening iterations that cut thin bridges between regions")
    centre_weight: float = Field(0.25, ge=0, description="pick the component by size x exp(-(d / w)^2), d its centre's "
                                                         "distance from the image centre (a share of the size); 0: the largest")
    drop_border: bool = Field(False, description="ignore components that touch the image border")


def across_channels(image: np.ndarray, op: np.ufunc) -> np.ndarray:
    """``op`` folded over an (H, W, C) image's channels in order: ``np.maximum`` gives ``image.max(axis=2)``, and in
    float32 ``np.add`` gives the sum ``mean(axis=2)`` divides. NumPy's reductions along a 3-long last axis walk the
    pixels one at a time (a fifth of the otsu floor's time on Kvasir-SEG); a fold over channels is whole planes."""
    out = image[..., 0].copy()
    for c in range(1, image.shape[2]):
        op(out, image[..., c], out=out)
    return out


def dark_frame(image: np.ndarray, level: float = 30.0, margin: int = 5) -> np.ndarray:
    """Dark pixels connected to the image border (and ``margin`` pixels around them)."""
    dark = across_channels(image.astype(np.float32), np.add) / np.float32(image.shape[2]) < level  # the float32 mean
    labels, _ = ndimage.label(dark)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    frame = np.isin(labels, border[border > 0])
    return ndimage.binary_dilation(frame, iterations=margin) if margin and frame.any() else frame


def component(fg: np.ndarray, centre_weight: float, drop_border: bool) -> np.ndarray:
    """The otsu floor's pick among the foreground's components (see OtsuOptions), its holes filled."""
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(float)
    sizes[0] = 0
    if drop_border:
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        kept = sizes.copy()
        kept[border] = 0
        if kept.any():  # fall back to all components when every one touches the border
            sizes = kept
    if centre_weight:
        h, w = fg.shape
        rows, cols = np.nonzero(labels)  # each component's mean row and column by counting, as ndimage's
        of = labels[rows, cols]  # center_of_mass sums them (it is ten times slower)
        count = np.bincount(of, minlength=n + 1)[1:]
        cy, cx = np.bincount(of, rows, n + 1)[1:] / count, np.bincount(of, cols, n + 1)[1:] / count
        d = np.hypot(cy / h - 0.5, cx / w - 0.5)
        sizes[1:] *= np.exp(-((d / centre_weight) ** 2))
    keep = int(np.argmax(sizes))
    if keep == 0:  # every weight underflowed to 0: label 0, the background, as argmax has always picked then
        return ndimage.binary_fill_holes(labels == 0)
    # holes filled within the component's box: a hole is enclosed by it, and a background pixel on the box's
    # edge touches the outside of the box, background joined to the image's border, as at the crop's border
    box = ndimage.find_objects(labels, max_label=keep)[-1]
    out = np.zeros(fg.shape, bool)
    out[box] = ndimage.binary_fill_holes(labels[box] == keep)
    return out


class OtsuBaseline(Segmenter):
    """Otsu threshold inside the field of view.

    Thresholding the whole Kvasir-SEG image split the black frame from the tissue, so the "bright"
    class was all tissue, which touched the border and was dropped: 89% of images scored 0 (mean
    Dice 0.04 on 100 training images). Inside the field of view, with highlights left out of the
    threshold: 0.38 (docs/metrics.md has the measurement).
    """

    kind = "otsu"
    version = "2"
    Options = OtsuOptions

    def predict(self, sample: Sample) -> Prediction:
        from skimage.filters import threshold_otsu

        o = self.options
        img = sample.image
        grey = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if o.sigma:
            grey = ndimage.gaussian_filter(grey, o.sigma)
        inside = ~dark_frame(img) if o.frame else np.ones(grey.shape, bool)
        if sample.roi is not None:
            inside &= sample.roi
        valid = inside.copy()
        if o.highlights:
            hi, lo = across_channels(img, np.maximum).astype(np.float32), across_channels(img, np.minimum).astype(np.float32)
            specular = (hi > 0.85 * 255) & ((hi - lo) < 0.25 * np.maximum(hi, 1))
            valid &= ~ndimage.binary_dilation(specular, iterations=3)
        if valid.sum() < 2 or np.ptp(grey[valid]) == 0:
            return Prediction(mask=np.zeros(grey.shape, bool), meta={"note": "nothing to threshold"})
        t = threshold_otsu(grey[valid])
        fg = (grey > t if o.foreground == "bright" else grey <= t) & inside
        if o.opening:
            fg = ndimage.binary_opening(fg, iterations=o.opening)
        return Prediction(mask=component(fg, o.centre_weight, o.drop_border), meta={"threshold": float(t)})


class FrangiOptions(Options):
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


class EllipseOptions(Options):
    radius: float = Field(0.28, gt=0, le=0.71, description="semi-axes as a share of the image's height and width")


class CentreEllipse(Segmenter):
    """A centred ellipse, whatever the image: the score any model gets for free from where targets sit."""

    kind = "ellipse"
    Options = EllipseOptions

    def predict(self, sample: Sample) -> Prediction:
        h, w = sample.mask.shape
        yy, xx = np.mgrid[:h, :w]
        r = self.options.radius
        return Prediction(mask=((yy + 0.5 - h / 2) / (r * h)) ** 2 + ((xx + 0.5 - w / 2) / (r * w)) ** 2 <= 1)

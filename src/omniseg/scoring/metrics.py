"""Per-image segmentation metrics: pure functions on numpy arrays.

Conventions (docs/metrics.md states them for users; tests check them):

* Counts TP/FP/FN/TN are taken inside the region of interest (``roi``; the whole
  image when it is None). Every score below is derived from them, so any other
  convention can be recomputed from the stored counts.
* Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN). Both masks empty: 1 (a correct
  "nothing here"); exactly one empty: 0.
* Precision, recall and specificity with a zero denominator are 1 when the
  numerator's complement is also zero (nothing claimed and nothing missed) and 0
  otherwise, so an empty prediction never earns a perfect precision on a lesion.
* Boundary metrics (Metrics Reloaded's recommendation for binary segmentation: an overlap metric and a
  boundary one) read each mask's boundary (the mask minus its 4-connected erosion, as MONAI) and the
  Euclidean distances from every boundary pixel of one mask to the other's nearest, in millimetres when the
  task states a pixel spacing (:class:`Geometry`), else in pixels:
  HD95 is the larger of the two directed 95th percentiles (MONAI and DeepMind style); MASD the mean of the
  two directed mean distances (Metrics Reloaded); NSD (normalized surface distance, surface Dice at
  tolerance tau) the share of both boundaries within tau of the other. Exactly one mask empty: HD95 and
  MASD the image diagonal (the worst possible), NSD 0; both empty: 0, 0 and 1.
* Boundary IoU (Cheng et al., CVPR 2021): the IoU of the two masks' inner bands of ``width`` pixels
  (pixels within that chessboard distance of the outside; default 2% of the image diagonal, their
  default); both empty 1, one empty 0.
* clDice (centreline Dice, for tubular structures) uses skeletons; both empty: 1.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Literal

import numpy as np
from scipy.spatial import cKDTree

from ..registry import Registry


@dataclass(frozen=True)
class Counts:
    """Confusion counts of one binary prediction against its reference."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def pred_px(self) -> int:
        return self.tp + self.fp

    @property
    def ref_px(self) -> int:
        return self.tp + self.fn


def _check(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None, dims: tuple[int, ...] = (2,)) -> None:
    if pred.shape != ref.shape or pred.ndim not in dims:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} must be equal "
                         f"{' or '.join(f'{d}-D' for d in dims)} shapes")
    if roi is not None and roi.shape != ref.shape:
        raise ValueError(f"region of interest {roi.shape} does not match the masks {ref.shape}")


def confusion(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None) -> Counts:
    """TP/FP/FN/TN of boolean masks, counted inside ``roi`` when given."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    _check(pred, ref, roi)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        pred = pred & roi
        ref = ref & roi
        total = int(np.count_nonzero(roi))
    else:
        total = pred.size
    tp = int(np.count_nonzero(pred & ref))
    p = int(np.count_nonzero(pred))
    r = int(np.count_nonzero(ref))
    fp, fn = p - tp, r - tp
    return Counts(tp=tp, fp=fp, fn=fn, tn=total - tp - fp - fn)


def _ratio(num: int, den: int, rest: int) -> float:
    """num/den; with den == 0 it is 1 when ``rest`` (the other error) is also 0, else 0."""
    if den == 0:
        return 1.0 if rest == 0 else 0.0
    return num / den


def dice(c: Counts) -> float:
    den = 2 * c.tp + c.fp + c.fn
    return 1.0 if den == 0 else 2 * c.tp / den


def iou(c: Counts) -> float:
    den = c.tp + c.fp + c.fn
    return 1.0 if den == 0 else c.tp / den


def precision(c: Counts) -> float:
    return _ratio(c.tp, c.tp + c.fp, c.fn)


def recall(c: Counts) -> float:
    return _ratio(c.tp, c.tp + c.fn, c.fp)


def specificity(c: Counts) -> float:
    return _ratio(c.tn, c.tn + c.fp, c.fn)


def _edge_points(mask: np.ndarray) -> np.ndarray:
    """(row, col) of boundary pixels: the mask minus its 4-connected erosion, outside as background.

    Same edges as ``scipy.ndimage.binary_erosion`` with a cross (what MONAI uses), computed with
    shifted views of a padded copy, in place, which is several times faster on 2-D masks.
    """
    h, w = mask.shape
    p = np.zeros((h + 2, w + 2), bool)
    p[1:-1, 1:-1] = mask
    edge = p[:-2, 1:-1] & p[2:, 1:-1]
    edge &= p[1:-1, :-2]
    edge &= p[1:-1, 2:]  # with the pixel itself: the interior
    np.greater(mask, edge, out=edge)  # mask and not interior
    return np.column_stack(np.divmod(np.flatnonzero(edge), w))


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (its default 'linear' method, the same arithmetic), without its overhead."""
    n = values.size
    k = (n - 1) * (q / 100)
    lo = int(k)  # k >= 0: the floor
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    a, b = float(part[lo]), float(part[hi])
    t = k - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # numpy's _lerp, exactly


def _masked(pred, ref, roi, dims: tuple[int, ...] = (2,)) -> tuple[np.ndarray, np.ndarray, int]:
    """Boolean masks restricted to the ROI, and how many of the two are non-empty (0, 1 or 2)."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    _check(pred, ref, roi, dims)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)  # a 0/4 region is a region, as in confusion (True & 4 would be 0)
        pred = pred & roi
        ref = ref & roi
    return pred, ref, int(pred.any()) + int(ref.any())


_TREE = dict(leafsize=32, balanced_tree=False, compact_nodes=False)


@dataclass(frozen=True)
class Geometry:
    """What the boundary metrics need beyond the masks: the pixel spacing and their tolerances."""

    spacing: tuple[float, float] | None = None  # (row, column) in mm per pixel; None: distances in pixels
    tolerance: float = 2.0  # NSD's tau, in the distances' unit (mm with a spacing, pixels without)
    width: int | None = None  # boundary IoU's band in pixels; None: 2% of the image diagonal (at least 1)

    @property
    def unit(self) -> str:
        return "mm" if self.spacing else "px"


PIXELS = Geometry()


def _diagonal(shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> float:
    return math.hypot(*(n * s for n, s in zip(shape, spacing or (1.0,) * len(shape))))


def _edge_points_nd(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a mask of any dimension: the mask minus its erosion by the cross (face neighbours), the
    outside counting as background, as MONAI's edges."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return np.argwhere(mask & ~inner)


def surface_distances(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None,
                      spacing: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray] | int:
    """Distances from each boundary pixel (voxel, for a volume) of ``pred`` to the nearest of ``ref`` and back (mm
    with ``spacing``, one value per axis in the arrays' axis order, else pixels); when either mask is empty, how
    many are non-empty (0 or 1) instead."""
    pred, ref, present = _masked(pred, ref, roi, dims=(2, 3))
    if present < 2:
        return present
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(f"a spacing of {len(spacing)} values for {pred.ndim}-D masks: give one per axis")
    # Only the bounding box of both masks matters: crop with a one-pixel margin
    # so the erosion sees background around the shapes, as MONAI does.
    both = pred | ref
    box = []
    for axis in range(both.ndim):
        hit = np.flatnonzero(both.any(axis=tuple(a for a in range(both.ndim) if a != axis)))
        box.append(slice(max(hit[0] - 1, 0), hit[-1] + 2))
    edges = _edge_points if pred.ndim == 2 else _edge_points_nd
    ep, er = edges(pred[tuple(box)]), edges(ref[tuple(box)])
    if spacing is not None:
        scale = np.asarray(spacing, float)
        ep, er = ep * scale, er * scale
    # Nearest-boundary queries on a k-d tree touch only boundary pixels, far fewer than the
    # distance transform of the whole crop. Sliding-midpoint trees with 32-point leaves build and
    # search faster on these small 2-D sets than the default median-balanced ones (same answers).
    d_pr = cKDTree(er, **_TREE).query(ep, k=1)[0]
    d_rp = cKDTree(ep, **_TREE).query(er, k=1)[0]
    return d_pr, d_rp


def _hd_of(d, shape, spacing, percentile: float) -> float:
    if isinstance(d, int):  # both empty: 0; exactly one empty: the worst possible, the diagonal
        return 0.0 if d == 0 else _diagonal(shape, spacing)
    return max(_percentile(d[0], percentile), _percentile(d[1], percentile))


def _nsd_of(d, tolerance: float) -> float:
    """The share of both boundaries' distances at most ``tolerance``; a distance equal to it in exact arithmetic
    (5 pixels of 0.7 mm against 3.5 mm) counts, whichever way its floating-point rounding fell."""
    if isinstance(d, int):
        return 1.0 if d == 0 else 0.0
    tau = tolerance * (1 + 1e-9)
    return float((np.count_nonzero(d[0] <= tau) + np.count_nonzero(d[1] <= tau)) / (d[0].size + d[1].size))


def _masd_of(d, shape, spacing) -> float:
    if isinstance(d, int):
        return 0.0 if d == 0 else _diagonal(shape, spacing)
    return float((d[0].mean() + d[1].mean()) / 2)


def hd95(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None, percentile: float = 95.0,
         spacing: tuple[float, float] | None = None) -> float:
    """Symmetric percentile Hausdorff distance, in pixels or with ``spacing`` in mm (see the module docstring)."""
    return _hd_of(surface_distances(pred, ref, roi, spacing), np.shape(pred), spacing, percentile)


def nsd(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None, tolerance: float = 2.0,
        spacing: tuple[float, float] | None = None) -> float:
    """Normalized surface distance: the share of both boundaries within ``tolerance`` of the other's."""
    return _nsd_of(surface_distances(pred, ref, roi, spacing), tolerance)


def masd(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None,
         spacing: tuple[float, float] | None = None) -> float:
    """Mean average surface distance: the mean of the two directed mean boundary distances."""
    return _masd_of(surface_distances(pred, ref, roi, spacing), np.shape(pred), spacing)


def band_width(shape: tuple[int, int], width: int | None = None) -> int:
    """Boundary IoU's band in pixels: ``width``, else Cheng et al.'s default, 2% of the image diagonal (>= 1)."""
    return width if width is not None else max(1, int(round(0.02 * math.hypot(*shape))))


def _band(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within chessboard distance ``width`` of the outside (what ``width`` erosions with a
    3 x 3 square remove), the image's outside counting as outside."""
    from scipy import ndimage

    inside = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="chessboard")[1:-1, 1:-1]
    return mask & (inside <= width)


def boundary_iou(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None, width: int | None = None) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021): the IoU of the masks' inner bands (see the module docstring)."""
    pred, ref, present = _masked(pred, ref, roi)
    if present < 2:
        return 1.0 if present == 0 else 0.0
    d = band_width(pred.shape, width)
    both = pred | ref  # only the masks' box (and a margin wider than the band) matters
    rows = np.flatnonzero(both.any(axis=1))
    cols = np.flatnonzero(both.any(axis=0))
    box = (slice(max(rows[0] - d - 1, 0), rows[-1] + d + 2), slice(max(cols[0] - d - 1, 0), cols[-1] + d + 2))
    bp, br = _band(pred[box], d), _band(ref[box], d)
    return float(np.count_nonzero(bp & br) / np.count_nonzero(bp | br))


#: per thread, the latest image's (counts, spacing, distances): score() gives every metric of one image the same
#: fresh Counts, so HD95, NSD and MASD read the boundaries once (held here, the Counts' id cannot be reused)
_last = threading.local()


def _distances(pred, ref, roi, counts: Counts, spacing):
    last = getattr(_last, "value", None)
    if last is None or last[0] is not counts or last[1] != spacing:
        last = _last.value = (counts, spacing, surface_distances(pred, ref, roi, spacing))
    return last[2]


def _hd95(p, r, roi, c, g: Geometry) -> float:
    return _hd_of(_distances(p, r, roi, c, g.spacing), np.shape(p), g.spacing, 95.0)


def _nsd(p, r, roi, c, g: Geometry) -> float:
    return _nsd_of(_distances(p, r, roi, c, g.spacing), g.tolerance)


def _masd(p, r, roi, c, g: Geometry) -> float:
    return _masd_of(_distances(p, r, roi, c, g.spacing), np.shape(p), g.spacing)


def cldice(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None) -> float:
    """Centreline Dice (Shit et al., CVPR 2021): harmonic mean of topology precision and sensitivity."""
    from skimage.morphology import skeletonize

    pred, ref, present = _masked(pred, ref, roi)
    if present < 2:
        return 1.0 if present == 0 else 0.0
    sp, sr = skeletonize(pred), skeletonize(ref)
    tprec = np.count_nonzero(sp & ref) / max(np.count_nonzero(sp), 1)
    tsens = np.count_nonzero(sr & pred) / max(np.count_nonzero(sr), 1)
    return 0.0 if tprec + tsens == 0 else 2 * tprec * tsens / (tprec + tsens)


#: what a metric's name may be (a store column)
NAME = r"[a-z][a-z0-9_]{0,40}"
#: Count columns of a score row; the metric columns follow (see :func:`active`).
COUNT_COLUMNS = ("tp", "fp", "fn", "tn", "pred_px", "ref_px")


@dataclass(frozen=True)
class Metric:
    """A per-image metric: one pure function and its place in the tables.

    ``fn(pred, ref, roi, counts) -> float``: boolean masks of one image, the region of interest (or
    None) and their :class:`Counts`. ``summary`` says how summary.csv aggregates it (``<name>_mean`` or
    ``<name>_median``); an ``opt_in`` metric is computed only for tasks that name it in
    ``metrics.include``. Registering one (a line in :data:`REGISTRY`, or an extension: omniseg.plugins)
    is all it takes: the store adds its column, per_image.csv and summary.csv carry it. A ``geometric`` metric
    also receives the task's :class:`Geometry` (pixel spacing, tolerances) as a fifth argument.
    """

    name: str
    fn: Callable[..., float]
    description: str
    summary: Literal["mean", "median"] = "mean"
    opt_in: bool = False
    geometric: bool = False

    def __post_init__(self):
        # the name becomes a store column and a CSV header: refused when the metric is defined, not when
        # the first score is written (after the predictions were paid for)
        if not isinstance(self.name, str) or not re.fullmatch(NAME, self.name):
            raise ValueError(f"metric name {self.name!r}: use lower-case letters, digits and '_', starting with a letter "
                             "(at most 41 characters): it becomes a column of the store")
        if self.name in COUNT_COLUMNS:
            raise ValueError(f"metric name {self.name!r} is one of the count columns {', '.join(COUNT_COLUMNS)}")
        if self.summary not in ("mean", "median"):
            raise ValueError(f"metric {self.name!r}: summary must be 'mean' or 'median', not {self.summary!r}")


DICE = Metric("dice", lambda p, r, roi, c: dice(c), "2TP / (2TP + FP + FN); both empty: 1")
IOU = Metric("iou", lambda p, r, roi, c: iou(c), "TP / (TP + FP + FN); both empty: 1")
PRECISION = Metric("precision", lambda p, r, roi, c: precision(c), "TP / (TP + FP)")
RECALL = Metric("recall", lambda p, r, roi, c: recall(c), "TP / (TP + FN), the sensitivity")
SPECIFICITY = Metric("specificity", lambda p, r, roi, c: specificity(c), "TN / (TN + FP)")
HD95 = Metric("hd95", _hd95, "95th-percentile Hausdorff distance (mm with a spacing, else pixels)", summary="median",
              geometric=True)
NSD = Metric("nsd", _nsd, "share of both boundaries within the tolerance tau of the other (surface Dice)",
             geometric=True)
MASD = Metric("masd", _masd, "mean of the two directed mean boundary distances (mm with a spacing, else pixels)",
              summary="median", geometric=True)
BOUNDARY_IOU = Metric("boundary_iou", lambda p, r, roi, c, g: boundary_iou(p, r, roi, g.width),
                      "IoU of the masks' inner boundary bands (Cheng et al. 2021)", geometric=True)
CLDICE = Metric("cldice", lambda p, r, roi, c: cldice(p, r, roi), "centreline Dice, for tubular structures",
                opt_in=True)

#: localisation metrics (omniseg.scoring.localisation): where the answer is, apart from its shape
LOCALISATION = ("box_iou", "pointing", "det_precision", "det_recall", "det_f1")
#: the boundary metrics Metrics Reloaded recommends beside an overlap metric
BOUNDARY = ("hd95", "nsd", "masd", "boundary_iou")
REGISTRY = Registry("metric", {
    **{m: f"omniseg.scoring.metrics:{m.upper()}" for m in
       ("dice", "iou", "precision", "recall", "specificity", *BOUNDARY, "cldice")},
    **{m: f"omniseg.scoring.localisation:{m.upper()}" for m in LOCALISATION}})

#: The columns a new store starts with (extensions' metrics add theirs when first recorded).
SCORE_COLUMNS = COUNT_COLUMNS + ("dice", "iou", "precision", "recall", "specificity", *BOUNDARY, "cldice") + LOCALISATION


def active(include: tuple[str, ...] | list[str] = ()) -> list[Metric]:
    """The metrics computed for a task: every registered one but the opt-in ones it does not include."""
    out = [REGISTRY.get(n) for n in REGISTRY.ordered()]
    return [m for m in out if not m.opt_in or m.name in include]


def score(pred: np.ndarray, ref: np.ndarray, roi: np.ndarray | None = None, *, with_cldice: bool = False,
          include: tuple[str, ...] | list[str] = (), geometry: Geometry = PIXELS) -> dict:
    """Counts and every active metric of one image, as a flat dict (docs/outputs.md); distances in ``geometry``'s
    unit."""
    c = confusion(pred, ref, roi)
    row: dict = asdict(c)
    row.update(pred_px=c.pred_px, ref_px=c.ref_px)
    wanted = tuple(include) + (("cldice",) if with_cldice else ())
    for m in active(wanted):
        row[m.name] = float(m.fn(pred, ref, roi, c, geometry) if m.geometric else m.fn(pred, ref, roi, c))
    if not with_cldice and "cldice" not in wanted:
        row["cldice"] = None  # the column exists in every store; NULL unless the task asks for it
    return row


def volume_scores(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float] | None = None,
                  tolerance: float = 2.0) -> dict:
    """The counts, the overlap metrics (Dice, IoU, precision, recall, specificity) over a whole volume (depth x height
    x width) and its boundary metrics in mm with the
    voxel ``spacing`` (per axis, in the array's order: anisotropic spacing scales each axis), else in voxels. The
    conventions are the images' (the module docstring); boundaries are the volume's surfaces, not per slice."""
    pred, ref, _ = _masked(pred, ref, None, dims=(3,))
    c = confusion(pred.reshape(pred.shape[0], -1), ref.reshape(ref.shape[0], -1))  # counting needs no geometry
    row: dict = asdict(c)
    row.update(pred_px=c.pred_px, ref_px=c.ref_px, dice=dice(c), iou=iou(c), precision=precision(c), recall=recall(c),
               specificity=specificity(c))
    d = surface_distances(pred, ref, None, spacing)
    row.update(hd95=_hd_of(d, pred.shape, spacing, 95.0), nsd=_nsd_of(d, tolerance), masd=_masd_of(d, pred.shape, spacing))
    return row

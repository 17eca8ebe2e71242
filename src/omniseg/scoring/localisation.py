"""Localisation: where a model put its answer, scored apart from the shape it drew.

A model that answers with boxes or points is judged by Dice for its format, not its perception (a filled box
against a round polyp cannot reach 1, a point reaches nearly 0). These metrics read the prediction and the
reference as objects (8-connected components, each with its bounding box in pixel-edge coordinates) and score
the places, as detection and pointing benchmarks do (lmms-eval and VLMEvalKit score boxes by IoU, pointing
benchmarks by a hit inside the target). Conventions (docs/metrics.md): counted inside the region of
interest; both masks empty is a perfect 1, exactly one empty a 0; a denominator of zero is 1 when the other
side is empty too, as for precision and recall.
"""

from __future__ import annotations

import threading

import numpy as np

from .metrics import Metric

#: a predicted object matches a reference object from this box IoU on (detection precision, recall, F1)
MATCH_IOU = 0.5


def objects(mask: np.ndarray, centres: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The 8-connected components of a mask: their boxes ``[x0, y0, x1, y1]`` (pixel edges: a one-pixel
    component at column c spans c..c+1) and, with ``centres``, the pixel holding each one's centroid
    ``[row, col]`` (else None: the reference's are never read)."""
    from scipy import ndimage

    rows_in, cols_in = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows_in.size == 0:
        return np.zeros((0, 4)), (np.zeros((0, 2), int) if centres else None)
    # labelled within the mask's bounding box (a lesion is a fraction of the image), then placed back
    top, left = int(rows_in[0]), int(cols_in[0])
    labels, n = ndimage.label(mask[top:rows_in[-1] + 1, left:cols_in[-1] + 1], structure=np.ones((3, 3), bool))
    slices = ndimage.find_objects(labels)
    boxes = np.array([[s[1].start + left, s[0].start + top, s[1].stop + left, s[0].stop + top] for s in slices], float)
    if not centres:
        return boxes, None
    rows, cols = np.nonzero(labels)  # the mean row and column of each object's pixels, by counting (ndimage's
    of = labels[rows, cols]  # center_of_mass gives the same, ten times slower)
    rows, cols = rows + top, cols + left
    size = np.bincount(of, minlength=n + 1)[1:]
    centre = np.column_stack([np.bincount(of, rows, n + 1)[1:] / size, np.bincount(of, cols, n + 1)[1:] / size])
    return boxes, np.floor(centre).astype(int)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (``[x0, y0, x1, y1]``), as torchvision's ``box_iou``."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def _matched(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """IoUs of the one-to-one pairing of predicted and reference boxes with the largest total IoU."""
    from scipy.optimize import linear_sum_assignment

    iou = box_iou(pred, ref)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return iou[rows, cols]


def _prepared(pred, ref, roi):
    return _read(pred, ref, roi)


def _read(pred, ref, roi):
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if roi is not None:  # a 0/4 region is a region, as in the pixel metrics
        roi = np.asarray(roi, bool)
        p, r = p & roi, r & roi
    return objects(p), objects(r, centres=False), r


def matched_box_iou(pred, ref, roi=None) -> float:
    """Mean box IoU of the best one-to-one pairing of predicted and reference objects, an unpaired object
    counting 0 (the sum over max(predicted, reference) objects). Both empty: 1; one empty: 0."""
    (pb, _), (rb, _), _ = _prepared(pred, ref, roi)
    n = max(len(pb), len(rb))
    if n == 0:
        return 1.0
    if min(len(pb), len(rb)) == 0:
        return 0.0
    return float(_matched(pb, rb).sum() / n)


def pointing(pred, ref, roi=None) -> float:
    """Share of predicted objects (a point, a box, a region) whose centroid's pixel lies inside the reference.
    Nothing predicted: 1 when the reference is empty too, else 0."""
    (pb, pc), _, r = _prepared(pred, ref, roi)
    if len(pc) == 0:
        return 1.0 if not r.any() else 0.0
    return float(r[pc[:, 0], pc[:, 1]].mean())


def detections(pred, ref, roi=None) -> tuple[int, int, int]:
    """(matched, predicted, reference) objects, a pair matching at box IoU of at least :data:`MATCH_IOU`."""
    (pb, _), (rb, _), _ = _prepared(pred, ref, roi)
    if min(len(pb), len(rb)) == 0:
        return 0, len(pb), len(rb)
    return int((_matched(pb, rb) >= MATCH_IOU).sum()), len(pb), len(rb)


def _share(num: int, den: int, other: int) -> float:
    return (1.0 if other == 0 else 0.0) if den == 0 else num / den


def det_precision(pred, ref, roi=None) -> float:
    tp, n_pred, n_ref = detections(pred, ref, roi)
    return _share(tp, n_pred, n_ref)


def det_recall(pred, ref, roi=None) -> float:
    tp, n_pred, n_ref = detections(pred, ref, roi)
    return _share(tp, n_ref, n_pred)


def det_f1(pred, ref, roi=None) -> float:
    tp, n_pred, n_ref = detections(pred, ref, roi)
    return 1.0 if n_pred + n_ref == 0 else 2 * tp / (n_pred + n_ref)


def scores(pred, ref, roi=None) -> dict[str, float]:
    """The five localisation metrics of one image from one reading of its objects."""
    (pb, pc), (rb, _), r = _read(pred, ref, roi)
    n_pred, n_ref = len(pb), len(rb)
    ious = _matched(pb, rb) if n_pred and n_ref else np.zeros(0)
    tp = int((ious >= MATCH_IOU).sum())
    return {"box_iou": 1.0 if max(n_pred, n_ref) == 0 else float(ious.sum() / max(n_pred, n_ref)),
            "pointing": (1.0 if not r.any() else 0.0) if n_pred == 0 else float(r[pc[:, 0], pc[:, 1]].mean()),
            "det_precision": _share(tp, n_pred, n_ref), "det_recall": _share(tp, n_ref, n_pred),
            "det_f1": 1.0 if n_pred + n_ref == 0 else 2 * tp / (n_pred + n_ref)}


#: per thread, the latest image's (counts, scores): score() passes each metric the same fresh Counts, so the five
#: metrics of one image read its objects once (held here, the Counts' id cannot be reused meanwhile)
_last = threading.local()


def _of(pred, ref, roi, counts, name: str) -> float:
    last = getattr(_last, "value", None)
    if last is None or last[0] is not counts:
        last = _last.value = (counts, scores(pred, ref, roi))
    return last[1][name]


BOX_IOU = Metric("box_iou", lambda p, r, roi, c: _of(p, r, roi, c, "box_iou"),
                 "mean box IoU of predicted and reference objects, paired one to one (unpaired: 0)")
POINTING = Metric("pointing", lambda p, r, roi, c: _of(p, r, roi, c, "pointing"),
                  "share of predicted objects whose centre lies inside the reference")
DET_PRECISION = Metric("det_precision", lambda p, r, roi, c: _of(p, r, roi, c, "det_precision"),
                       f"predicted objects matching a reference object at box IoU >= {MATCH_IOU}, per predicted one")
DET_RECALL = Metric("det_recall", lambda p, r, roi, c: _of(p, r, roi, c, "det_recall"),
                    f"reference objects matched at box IoU >= {MATCH_IOU}, per reference object")
DET_F1 = Metric("det_f1", lambda p, r, roi, c: _of(p, r, roi, c, "det_f1"),
                "2 x matched / (predicted + reference objects)")

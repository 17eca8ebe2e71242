"""Review items: the connected regions where a model's mask and the reference disagree, blinded.

A *model-only* region is marked by a model and not by the annotation (a false positive to the metrics, or a
finding the annotator missed: only an expert can say which); a *reference-only* region is marked by the
annotation and missed by a model. Regions smaller than ``min_area`` pixels are left out (a ragged edge is no
finding). The same region found by several models (same side, IoU at least :data:`SAME_REGION_IOU`) is one
item, their union, credited to each of them: a reviewer sees it once and never learns who marked it. An
item's id is a hash of its task, sample, side and pixels, so it names no model.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from typing import Iterable

import numpy as np

from ...errors import OmnisegError, unknown_name
from ...store import results, reviews as store_reviews, subsets as store_subsets
from ...store.database import Store
from ...store import runs as store_runs

SIDES = ("model-only", "reference-only")
DEFAULT_MIN_AREA = 64  # pixels
DEFAULT_MAX = 200
SAME_REGION_IOU = 0.5
#: the roles whose regions are reviewed by default (floors and privileged models are no contenders)
ROLES = ("specialist", "omnimodel", "foundation")


def regions(pred: np.ndarray, ref: np.ndarray, min_area: int = DEFAULT_MIN_AREA) -> list[tuple[str, np.ndarray]]:
    """(side, boolean region) for each 8-connected region of disagreement of at least ``min_area`` pixels."""
    from scipy import ndimage

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    out = []
    for side, diff in zip(SIDES, (pred & ~ref, ref & ~pred)):
        labels, n = ndimage.label(diff, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())
        for k in np.flatnonzero(areas[1:] >= max(1, min_area)) + 1:
            out.append((side, labels == k))
    return out


def merge_shared(found: dict[str, list[tuple[str, np.ndarray]]]) -> list[tuple[str, np.ndarray, set[str]]]:
    """One (side, region, models) per group of regions that several models share (same side, IoU at least
    :data:`SAME_REGION_IOU`, transitively): the group's union, credited to every model in it."""
    flat = [(model, side, mask) for model in sorted(found) for side, mask in found[model]]
    parent = list(range(len(flat)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            if flat[i][1] != flat[j][1]:
                continue
            a, b = flat[i][2], flat[j][2]
            inter = np.count_nonzero(a & b)
            if inter and inter / np.count_nonzero(a | b) >= SAME_REGION_IOU:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(flat)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        side = flat[members[0]][1]
        region = np.logical_or.reduce([flat[i][2] for i in members])
        out.append((side, region, {flat[i][0] for i in members}))
    return out


def item_id(task: str, sample_id: str, side: str, region: np.ndarray) -> str:
    h = hashlib.sha256("\x1f".join((task, sample_id, side, f"{region.shape}")).encode())
    h.update(np.packbits(region).tobytes())
    return h.hexdigest()[:16]


def png_bits(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def read_bits(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 0


def read_mask(store: Store, path: str | None, shape: tuple[int, int]) -> np.ndarray:
    """A stored prediction as a boolean mask of ``shape`` (a failed prediction without a file: empty)."""
    from PIL import Image

    if not isinstance(path, str) or not path:
        return np.zeros(shape, bool)
    img = Image.open(store.root / path).convert("L")
    if img.size != (shape[1], shape[0]):
        img = img.resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(img) > 127


def default_models(store: Store, task: str) -> list[str]:
    """The task's specialists, omnimodels and foundation models, privileged ones left out."""
    roles, privileged = store_runs.roles(store, task), store_runs.privileged(store, task)
    return [m for m in sorted(roles) if roles[m] in ROLES and m not in privileged]


def build(store: Store, task: str, *, models: Iterable[str] | None = None, subset: str | None = None,
          split: str = "test", max_items: int = DEFAULT_MAX, min_area: int = DEFAULT_MIN_AREA, seed: int = 0,
          rebuild: bool = False, data_root=None, progress: bool = False) -> dict:
    """Build (or find already built with the same options) the task's review items; returns counts.

    Items are drawn from the models' scored predictions on ``split`` (or the curated ``subset``); above
    ``max_items`` a random sample of them (``seed``) is kept, so a share measured on the sample estimates the
    share over all regions. Rebuilding with other options drops the answers given, so it needs ``rebuild``."""
    from ...progress import bar
    from ..recorded import recorded_samples

    from ... import datasets

    recorded = ((store_runs.last_config(store, task) or {}).get("dataset") or {}).get("name")
    if recorded in datasets.names() and datasets.get(recorded).volumetric:  # regions are drawn on images
        raise OmnisegError(f"task {task!r} reads volumes ({recorded}): the blinded review shows regions of images, and "
                           "a volume's are not drawn yet; review a 2-D task, or the report's montage of the slices")
    known = sorted(store_runs.roles(store, task))
    models = sorted(models) if models else default_models(store, task)
    for m in models:
        if m not in known:
            raise OmnisegError(f"--models: {unknown_name('model', m, known)} (task {task!r})")
    if not models:
        raise OmnisegError(f"task {task!r} has no specialist, omnimodel or foundation model to review; name them "
                           "with --models")
    options = {"models": models, "subset": subset, "split": split, "max": int(max_items), "min_area": int(min_area),
               "seed": int(seed)}
    if subset and not store_subsets.exists(store, task, subset):
        raise OmnisegError(f"task {task!r} has no subset {subset!r}: run `omniseg curate` first")
    rows = results.ok_masks(store, task, models, subset, split)
    # what the items were drawn from: predictions added (a merge) or redone (--force) since make them stale
    basis = hashlib.sha256(rows.to_json(orient="values", double_precision=15).encode()).hexdigest()[:16]
    have = store_reviews.built_options(store, task)
    built = json.loads(have) if have is not None else None
    same = built is not None and {k: v for k, v in built.items() if k != "basis"} == options
    fresh = same and built.get("basis", basis) == basis  # a store from before the basis was kept: taken as fresh
    if fresh and not rebuild:
        return counts(store, task)
    answers = store_reviews.answer_count(store, task)
    if built is not None and answers and not rebuild:
        why = ("the predictions the review items were drawn from changed since they were built (a merge or a "
               f"--force run; {len(rows)} now)" if same else "the review items were built with other options "
               f"({json.dumps({k: v for k, v in built.items() if k != 'basis'})})")
        raise OmnisegError(f"task {task!r}: {why}, and {answers} answers are recorded against them; "
                           "run with the same options, or pass --rebuild to build new items and drop those answers")
    if rows.empty:
        raise OmnisegError(f"task {task!r}: no scored predictions of {', '.join(models)} to review"
                           + (f" in subset {subset!r}" if subset else f" on split {split!r}"))
    loader = recorded_samples(store, task, data_root)
    if isinstance(loader, str):
        raise OmnisegError(f"task {task!r}: the reference masks are needed to find the regions: {loader} "
                           "(pass --data-root if the dataset moved)")
    items = []
    groups = list(rows.groupby("sample_id", sort=True))
    for sid, g in bar(groups, desc=f"{task}: regions", disable=not progress):
        sample = loader(sid)
        if sample is None:
            raise OmnisegError(f"task {task!r}: sample {sid!r} could not be read from the dataset")
        ref = np.asarray(sample.mask, bool)
        found = {m: regions(read_mask(store, p, ref.shape), ref, min_area) for m, p in zip(g["model"], g["mask_path"])}
        for side, region, credited in merge_shared(found):
            ys, xs = np.nonzero(region)
            items.append({"item_id": item_id(task, sid, side, region), "sample_id": sid, "side": side,
                          "area": int(region.sum()),
                          "bbox": (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1),
                          "height": ref.shape[0], "width": ref.shape[1], "region": png_bits(region), "models": credited})
    if len(items) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(items), size=max_items, replace=False))
        items = [items[i] for i in keep]
    store_reviews.set_review_items(store, task, {**options, "basis": basis}, items)
    return counts(store, task)


def counts(store: Store, task: str) -> dict:
    got = store_reviews.sides(store, task)
    return {"items": sum(got.values()), **{side: got.get(side, 0) for side in SIDES}}


def order(store: Store, task: str, reviewer: str, seed: int | None = None) -> tuple[int, list[str]]:
    """The reviewer's shuffled order of the items, made (from ``seed``, else a fresh random one) and recorded at
    their first start, and the same at every later one."""
    if not reviewer.strip():
        raise OmnisegError("--reviewer: give a name (it is stored with each answer)")
    ids = store_reviews.item_ids(store, task)
    if not ids:
        raise OmnisegError(f"task {task!r} has no review items: build them with `omniseg review --task {task}`")
    seed = secrets.randbits(31) if seed is None else int(seed)
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return store_reviews.review_order(store, task, reviewer, seed, shuffled)


def render(item: dict, image: np.ndarray, ref: np.ndarray, max_side: int = 1024) -> dict:
    """The pictures a reviewer sees for one item: the image (JPEG) and, at the same size, a transparent overlay
    (PNG) with the reference outline in green and the region outlined and tinted in yellow; the region's box
    scaled to that size. Nothing in them says which model marked the region."""
    from PIL import Image
    from scipy import ndimage

    region = read_bits(item["region"])
    h, w = region.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
    pic = Image.fromarray(img[..., :3].astype(np.uint8))
    if pic.size != (w, h):
        pic = pic.resize((w, h), Image.BILINEAR)
    pic = pic.resize(size, Image.BILINEAR)

    def small(mask):
        return np.asarray(Image.fromarray(np.asarray(mask, bool)).resize(size, Image.NEAREST))

    reg, truth = small(region), small(ref if ref.shape == region.shape else
                                      np.asarray(Image.fromarray(ref).resize((w, h), Image.NEAREST)))
    width = max(1, round(max(size) / 300))
    edge = lambda m: m & ~ndimage.binary_erosion(m, iterations=width, border_value=0)  # noqa: E731
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[reg] = (255, 221, 0, 70)
    rgba[edge(reg)] = (255, 221, 0, 255)
    rgba[edge(truth)] = (0, 230, 64, 255)
    buf_img, buf_ovl = io.BytesIO(), io.BytesIO()
    pic.save(buf_img, format="JPEG", quality=90)
    Image.fromarray(rgba, "RGBA").save(buf_ovl, format="PNG")
    y0, x0, y1, x1 = item["bbox"]
    return {"image": buf_img.getvalue(), "overlay": buf_ovl.getvalue(), "size": size,
            "box": [x0 * scale, y0 * scale, x1 * scale, y1 * scale]}


def load(store: Store, task: str) -> dict[str, dict]:
    """item id -> the item's row (region as PNG bytes, ``bbox``), with the models it is credited to."""
    rows, credits = store_reviews.items(store, task)
    return {r["item_id"]: {**dict(r), "bbox": (r["y0"], r["x0"], r["y1"], r["x1"]), "models": credits.get(r["item_id"], [])}
            for r in rows}

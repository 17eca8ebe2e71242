"""What the fake Gemini server answers: every answer form and failure seen from the live API.

Builders for each kind of answer (PNG crops, polygons, ``<seg_N>`` tokens, mask images, errors,
blocks) and behaviours that choose among them per request: :func:`live` (as the live service
answers today, per model name), :func:`chaos` (random faults), :func:`good_answer`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from typing import Any, Callable

import numpy as np
from PIL import Image

from .fake_http import Reply, Request


def field(d: dict, *names: str):
    for n in names:
        if n in d:
            return d[n]
    return None


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def usage(prompt: int = 300, output: int = 120, thoughts: int = 0) -> dict:
    return {"promptTokenCount": prompt, "candidatesTokenCount": output, "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + output + thoughts,
            "promptTokensDetails": [{"modality": "IMAGE", "tokenCount": 258}, {"modality": "TEXT", "tokenCount": prompt - 258}]}


def answer(parts: list[dict], finish: str = "STOP", model_version: str | None = None, **u) -> Reply:
    """A candidate with these parts; ``modelVersion`` is the model asked for unless given."""
    body = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage(**u), "responseId": hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16],
    }
    if model_version:
        body["modelVersion"] = model_version
    return Reply(200, body)


def text_answer(text: str, finish: str = "STOP", **kw) -> Reply:
    r = answer([{"text": text}], finish, **kw)
    r.kind = "text"
    return r


def box_and_crop(mask: np.ndarray) -> tuple[list[int], str] | None:
    """The documented native-segmentation entry of one mask: box_2d (0..1000) and a PNG crop."""
    if not mask.any():
        return None
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = [int(np.floor(y0 / h * 1000)), int(np.floor(x0 / w * 1000)), int(np.ceil(y1 / h * 1000)), int(np.ceil(x1 / w * 1000))]
    by0, bx0 = int(box[0] * h / 1000), int(box[1] * w / 1000)
    by1, bx1 = max(int(round(box[2] * h / 1000)), by0 + 1), max(int(round(box[3] * w / 1000)), bx0 + 1)
    crop = (mask[by0:by1, bx0:bx1] * 255).astype(np.uint8)
    # the model's PNG size is undocumented: send it at another size on purpose
    crop_img = Image.fromarray(crop).resize((max(crop.shape[1] // 2, 1), max(crop.shape[0] // 2, 1)), Image.BILINEAR)
    buf = io.BytesIO()
    crop_img.save(buf, format="PNG")
    return box, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def json_masks_text(masks: list[np.ndarray], label: str = "target", fence: bool = True) -> str:
    entries = []
    for m in masks:
        bc = box_and_crop(m)
        if bc:
            entries.append({"box_2d": bc[0], "mask": bc[1], "label": label})
    text = json.dumps(entries, indent=1)
    return f"```json\n{text}\n```" if fence else text


def polygons_text(mask: np.ndarray, wrap: bool = False, key: str = "points") -> str:
    """The mask's outline as polygons in 0..1000 [x, y] points, one entry per component (see polygon_entries)."""
    entries = polygon_entries(mask, key)
    payload: Any = {"boxes": entries} if wrap else entries
    return json.dumps(payload)


def polygon_entries(mask: np.ndarray, key: str = "points", tolerance: float = 1.0, max_objects: int = 10) -> list[dict]:
    """Entries ``{key: [[x, y], ...], "label": ...}`` tracing each component's outer boundary.

    Traced independently of omniseg's decoder (scikit-image contours at the 0.5 level, simplified
    like a model's coarse outline). A contour point at pixel-index coordinate i lies on the edge at
    i + 0.5, so it is sent as round((i + 0.5) / size * 1000), as integers, as Gemini does.
    """
    from scipy import ndimage
    from skimage import measure

    h, w = mask.shape
    labels, n = ndimage.label(ndimage.binary_fill_holes(mask))
    sizes = ndimage.sum(np.ones_like(labels), labels, index=range(1, n + 1)) if n else []
    entries = []
    for lab in [int(i) + 1 for i in np.argsort(sizes)[::-1][:max_objects]]:
        comp = np.pad(labels == lab, 1)
        contours = measure.find_contours(comp.astype(float), 0.5)
        if not contours:
            continue
        ring = simplify(max(contours, key=len), tolerance)[:-1]
        pts = [[round((c - 1 + 0.5) / w * 1000), round((r - 1 + 0.5) / h * 1000)] for r, c in ring]
        if len(pts) >= 3:
            entries.append({key: pts, "label": "target"})
    return entries


def simplify(coords: np.ndarray, tolerance: float) -> np.ndarray:
    """``skimage.measure.approximate_polygon`` (Douglas-Peucker) point for point, in plain Python: the same
    distances, split order and first-maximum ties, 5 to 7 times faster on the short contours of a fake answer,
    where NumPy's cost per call outweighs its work (it was most of what the fake servers spent per answer)."""
    pts = coords.tolist()
    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        start, end = stack.pop()
        r0, c0 = pts[start]
        r1, c1 = pts[end]
        dr, dc = r1 - r0, c1 - c0
        angle = -math.atan2(dr, dc)
        sin, cos = math.sin(angle), math.cos(angle)
        offset = c0 * sin + r0 * cos
        far, at = -1.0, -1
        for i in range(start + 1, end):
            r, c = pts[i]
            dr0, dc0, dr1, dc1 = r - r0, c - c0, r - r1, c - c1
            if dr0 * dr + dc0 * dc > 0 and -dr1 * dr - dc1 * dc > 0:  # beside the segment: distance to its line
                d = abs(r * cos + c * sin - offset)
            else:  # beyond an end: distance to the nearer end
                d = min(math.sqrt(dc0 ** 2 + dr0 ** 2), math.sqrt(dc1 ** 2 + dr1 ** 2))
            if d > far:
                far, at = d, i
        if far > tolerance:
            stack.append((at, end))
            stack.append((start, at))
            keep[at] = True
    return coords[keep]


def image_answer(mask: np.ndarray, size: tuple[int, int] = (1024, 1024), **kw) -> Reply:
    img = Image.fromarray((mask * 255).astype(np.uint8)).resize(size, Image.NEAREST).convert("RGB")
    data = base64.b64encode(png_bytes(np.asarray(img))).decode()
    r = answer([{"inlineData": {"mimeType": "image/png", "data": data}}], output=1290, **kw)
    r.kind = "image"
    return r


def error(code: int, status: str, message: str = "", retry_delay: str | None = None, per_day: bool = False) -> Reply:
    details: list[dict] = []
    if code == 429:
        quota = "GenerateRequestsPerDayPerProjectPerModel" if per_day else "GenerateRequestsPerMinutePerProjectPerModel"
        details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota}]})
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return Reply(code, {"error": {"code": code, "status": status, "message": message or status, "details": details}},
                 kind=f"http{code}")


def blocked(reason: str = "SAFETY") -> Reply:
    return Reply(200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": usage(output=0)}, kind="blocked")


def safety_candidate() -> Reply:
    return Reply(200, {"candidates": [{"finishReason": "SAFETY", "index": 0,
                                       "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]}],
                       "usageMetadata": usage(output=0)}, kind="safety")


def bright_truth(image: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for 'what the model sees': pixels brighter than mean + std."""
    grey = image.astype(np.float32).mean(axis=2)
    return grey > grey.mean() + grey.std()


#: output sizes an image model returns for each requested aspect ratio at 1K (Gemini's published table);
#: image_size 0.5K halves them, 2K doubles and 4K quadruples them
IMAGE_SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
               "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}


def image_size(req: Request) -> tuple[int, int]:
    cfg = req.generation.get("imageConfig") or req.generation.get("image_config") or {}
    ratio = cfg.get("aspectRatio") or cfg.get("aspect_ratio") or "1:1"
    scale = {"0.5K": 0.5, "1K": 1, "2K": 2, "4K": 4}.get(cfg.get("imageSize") or cfg.get("image_size") or "1K", 1)
    w, h = IMAGE_SIZES.get(ratio, (1024, 1024))
    return int(w * scale), int(h * scale)


def good_answer(req: Request, truth: Callable[[np.ndarray], np.ndarray] = bright_truth) -> Reply:
    """A well-formed answer in the format the request asks for."""
    m = truth(req.image)
    if req.wants_image:
        return image_answer(m, image_size(req))
    if "polygon" in req.prompt.lower():
        r = text_answer(polygons_text(m))
    else:
        r = text_answer(json_masks_text([m]))
    r.kind = "ok"
    return r


MALFORMED = {
    "prose": lambda req: text_answer("I can see a polyp in the lower left of the image, about 2 cm wide."),
    "truncated": lambda req: text_answer(json_masks_text([bright_truth(req.image)] * 2, fence=False)[:-60], finish="MAX_TOKENS"),
    "seg_tokens": lambda req: text_answer(json.dumps([{"box_2d": [100, 100, 500, 500], "mask": "<start_of_mask><seg_4><seg_77>", "label": "x"}])),
}


def chaos(p429: float = 0.1, p503: float = 0.05, p_malformed: float = 0.05, seed: int = 0,
          truth: Callable[[np.ndarray], np.ndarray] = bright_truth, delay: float = 0.0) -> Callable[[Request], Reply]:
    """Random (but reproducible per image and attempt) 429s, 503s and malformed answers."""

    def behave(req: Request) -> Reply:
        u = int(hashlib.sha256(f"{seed}:{req.image_sha}:{req.attempt}".encode()).hexdigest()[:8], 16) / 16**8
        bad = int(hashlib.sha256(f"{seed}:bad:{req.image_sha}".encode()).hexdigest()[:8], 16) / 16**8
        if u < p429:
            r = error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="0.05s")
        elif u < p429 + p503:
            r = error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        elif bad < p_malformed:  # the same images are malformed on every attempt
            kind = sorted(MALFORMED)[int(bad / p_malformed * len(MALFORMED)) % len(MALFORMED)]
            r = MALFORMED[kind](req)
            r.kind = kind
        else:
            r = good_answer(req, truth)
        r.delay = delay
        return r

    return behave


#: What the live service does per model name in late 2026 (../shared/notes/gemini.md, docs/omnimodels.md):
#: the answer form its segmentation prompt gets, and the day it was shut down (after which a request
#: is answered 404, or by the model Google routes it to).
LIVE_MODELS: dict[str, dict] = {
    "gemini-2.5-flash": {"answers": "png-crops", "shutdown": "2026-12-01", "routed_to": "gemini-3.5-flash-lite"},
    "gemini-2.5-flash-image": {"answers": "image", "shutdown": "2026-10-02"},
    "gemini-3.5-flash": {"answers": "polygon"},
    "gemini-3.5-flash-lite": {"answers": "polygon"},
    "gemini-robotics-er-2-preview": {"answers": "polygon"},
    "gemini-robotics-er-1.6-preview": {"answers": "polygon", "shutdown": "2026-08-31"},
    "gemini-3.1-flash-image": {"answers": "image"},
    "gemini-3-pro-image": {"answers": "image"},
}
TODAY = "2026-11-27"


def served_model(model: str, today: str = TODAY) -> str | None:
    """The model that answers a request for ``model`` on ``today`` (None: it is not served)."""
    m = LIVE_MODELS.get(model)
    if m is None:
        return None
    if m.get("shutdown") and today >= m["shutdown"]:
        return m.get("routed_to")
    return model


def not_found(req: Request) -> Reply:
    return error(404, "NOT_FOUND", f"models/{req.model} is not found for API version {req.version}, or is not "
                 "supported for generateContent. Call ListModels to see the list of available models and their "
                 "supported methods.")


def seg_tokens_text(mask: np.ndarray, seed: str = "") -> str:
    """What 2.5 Flash often answers today: a box with <seg_N> tokens instead of a PNG."""
    bc = box_and_crop(mask)
    box = bc[0] if bc else [0, 0, 1000, 1000]
    digest = hashlib.sha256(seed.encode()).digest()
    tokens = "".join(f"<seg_{b % 128}>" for b in digest[:16])
    return json.dumps([{"box_2d": box, "mask": f"<start_of_mask>{tokens}<end_of_mask>", "label": "target"}])


def _unit(*parts: object) -> float:
    """A reproducible number in [0, 1) from the parts."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 16**8


def live(truth: Callable[[np.ndarray], np.ndarray] = bright_truth, p_tokens: float = 0.5, p_wrap: float = 0.2,
         today: str = TODAY, seed: int = 0, delay: float = 0.0) -> Callable[[Request], Reply]:
    """Answers as the live service gives them today, chosen per model name and by probability.

    - 2.5 Flash: PNG crops, or ``<seg_N>`` tokens with probability ``p_tokens``; polygons under
      "points" when the prompt asks for that key. Shut down on 2026-12-01, after which Google routes
      its requests to 3.5 Flash-Lite (whose modelVersion the answer then reports).
    - 3.5 Flash, 3.5 Flash-Lite, Robotics-ER 2: polygons under "mask" for the documented segmentation
      prompt, under "points" when the prompt names that key; wrapped in ``{"boxes": [...]}`` with
      probability ``p_wrap``.
    - image models: a mask picture at the documented size for the requested aspect ratio and size.
    - shut-down or unknown models: 404 NOT_FOUND.
    Each choice is fixed per image (and seed), so a test knows which answer each image got.
    """

    def behave(req: Request) -> Reply:
        served = served_model(req.model, today)
        if served is None:
            return not_found(req)
        form = LIVE_MODELS[served]["answers"]
        mask = truth(req.image)
        wants_points = '"points"' in req.prompt
        if form == "image":
            r = image_answer(mask, image_size(req)) if req.wants_image else text_answer("I can only draw images.")
            r.kind = "image"
        elif form == "png-crops" and not wants_points:
            if _unit(seed, "tokens", req.image_sha) < p_tokens:
                r, kind = text_answer(seg_tokens_text(mask, req.image_sha)), "seg_tokens"
            else:
                r, kind = text_answer(json_masks_text([mask])), "png_crops"
            r.kind = kind
        else:
            key = "points" if wants_points else "mask"
            wrap = form == "polygon" and _unit(seed, "wrap", req.image_sha) < p_wrap
            r = text_answer(polygons_text(mask, wrap=wrap, key=key))
            r.kind = f"polygon_{key}" + ("_wrapped" if wrap else "")
        r.body["modelVersion"] = served
        r.delay = delay
        return r

    return behave



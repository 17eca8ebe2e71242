"""`omniseg probe` and `omniseg models`: ask the live API a few questions before paying for a dataset.

``probe`` sends ``n`` images of a task (spread evenly over the split) to one API model, fresh
(never from the archive), and reports per answer the model version the API says answered, the
answer form detected, the start of the raw text, the decoded mask's area and Dice against the
ground truth, tokens, latency and cost; it writes an image | reference | prediction strip per
answer. The answers are kept in the answer archive like any other, so the run that follows does
not pay for them again. Nothing is written to the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..scoring import metrics
from .. import models
from ..config import TaskConfig
from ..errors import OmnisegError
from ..models.api.remote import RemoteSegmenter
from ..store.schema import file_name
from .runner import open_dataset, run_context

PROBE_COLUMNS = ("sample_id", "status", "model_version", "form", "answer", "area", "dice", "tokens_in", "tokens_out",
                 "latency_s", "cost_usd", "strip")


def api_entry(cfg: TaskConfig, name: str | None):
    """The config's API model entry called ``name`` (default: the first one)."""
    remote = [m for m in cfg.models if issubclass(models.get(m.kind), RemoteSegmenter)]
    if name is not None:
        entry = cfg.model(name)
        if entry not in remote:
            raise OmnisegError(f"{cfg.source}: model {name!r} is of kind {entry.kind!r}, not an API model "
                               f"(API models: {', '.join(m.name for m in remote) or 'none'})")
        return entry
    if not remote:
        raise OmnisegError(f"{cfg.source}: no API model (kind gemini) among the models of task {cfg.task!r}")
    return remote[0]


def _strip(image: np.ndarray, truth: np.ndarray, pred: np.ndarray | None, height: int = 256) -> Image.Image:
    """image | reference | prediction, side by side (a failed prediction is a dark grey panel)."""
    h, w = truth.shape
    panels = [image, np.repeat((truth * 255).astype(np.uint8)[..., None], 3, axis=2),
              np.repeat((pred * 255).astype(np.uint8)[..., None], 3, axis=2) if pred is not None
              else np.full((h, w, 3), 40, np.uint8)]
    size = (max(1, round(w * height / h)), height)
    tiles = [Image.fromarray(p).resize(size, Image.NEAREST) for p in panels]
    strip = Image.new("RGB", (size[0] * 3 + 8, height), (255, 255, 255))
    for i, t in enumerate(tiles):
        strip.paste(t, (i * (size[0] + 4), 0))
    return strip


def probe(cfg: TaskConfig, *, model: str | None = None, n: int = 3, store_root: Path = Path("runs"),
          out: Path = Path("runs") / "probe", data_root: str | Path | None = None, split: str | None = None) -> list[dict]:
    entry = api_entry(cfg, model)
    ds = open_dataset(cfg, data_root)
    refs = ds.refs(split or cfg.split)
    if not refs:
        raise OmnisegError(f"{cfg.task}: no samples in split {split or cfg.split!r} under {ds.root}")
    picks = [refs[i] for i in sorted({int(k) for k in np.linspace(0, len(refs) - 1, min(n, len(refs)))})]
    samples = [ds.load(r) for r in picks]
    seg = models.build(entry)
    # a probe is a look, not a run: one retry at most, and always a fresh answer
    seg = type(seg)(entry.name, seg.options.model_copy(update={"max_retries": min(seg.options.max_retries, 1)}))
    seg.bind(run_context(store_root, refresh=True))
    try:
        preds = seg.predict_batch(samples)
    finally:
        seg.close()
    if all(p.status == "api_error" for p in preds):
        where = seg.options.base_url or "the provider's endpoint"
        raise OmnisegError(f"model {entry.name!r} ({seg.options.model}) got no answer from {where}: {preds[0].reason}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, p in zip(samples, preds):
        answered = [c for c in p.calls if c.get("outcome") == "answered"]
        call = answered[-1] if answered else {}
        dice = area = None
        if p.status == "ok":
            area = float(p.mask.mean())
            dice = metrics.score(p.mask, s.mask, s.roi)["dice"]
        path = out / f"{entry.name}_{file_name(s.id)}.png"  # any id: a name the file system takes
        _strip(s.image, s.mask, p.mask if p.status == "ok" else None).save(path)
        rows.append({"sample_id": s.id, "status": p.status, "model_version": p.meta.get("model_version"),
                     "form": p.meta.get("answer_form", ""), "answer": p.meta.get("answer_head", "") or p.reason[:60],
                     "area": area, "dice": dice, "tokens_in": call.get("prompt_tokens"),
                     "tokens_out": (call.get("output_tokens") or 0) + (call.get("thoughts_tokens") or 0) if call else None,
                     "latency_s": call.get("latency_s"), "cost_usd": call.get("cost_usd"), "strip": str(path)})
    return rows


def reachable_models(options) -> list[str]:
    """The model names the key can reach through ``client.models.list()`` (Gemini)."""
    from ..models.api.gemini.model import KEY_VARIABLES, GeminiApi
    from ..redaction import redact

    api = GeminiApi("models", options)
    key = api.api_key()
    if not key:
        raise OmnisegError(f"listing models needs an API key: set {' or '.join(KEY_VARIABLES)}")
    client = api.make_client(key)
    try:
        return sorted(m.name.removeprefix("models/") for m in client.models.list(config={"page_size": 50}))
    except Exception as e:  # no network, a refused key, a wrong base URL: one line
        where = options.base_url or "the Gemini API"
        raise OmnisegError(redact(f"cannot list models at {where}: {type(e).__name__}: {e}")) from None

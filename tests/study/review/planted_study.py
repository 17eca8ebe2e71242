"""A generated study with known truth for the expert review: every image has a lesion the annotation marks, and
some have a second, true lesion the annotation left out (a *planted finding*). Models are masks on disk:

* ``spec-unet`` (specialist): the annotated lesion, plus a false blob on every third image;
* ``omni-gemini`` (omnimodel): the annotated lesion plus, with ``omni="planted"``, the left-out lesion where there is one,
  or with ``omni="random"``, a blob at a random place with nothing there.

:func:`truth` is the scripted expert: a model-only region over a planted lesion is a real finding, any other
is the model's error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from omniseg import config
from omniseg.inference.runner import run
from omniseg.store.database import Store

SIZE = (96, 112)
SPEC, OMNI = "spec-unet", "omni-gemini"  # names no base64 picture can contain (a '-'), so a search for them means it


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def make(tmp: Path, n: int = 40, omni: str = "planted", seed: int = 0, planted_share: float = 0.6):
    """Dataset, prediction folders, config and a scored store; returns (store, planted masks by sample id)."""
    rng = np.random.default_rng(seed)
    root = tmp / "kvasir"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "spec").mkdir(exist_ok=True)
    (tmp / "omni").mkdir(exist_ok=True)
    planted = {}
    for i in range(n):
        sid = f"case{i:03d}"
        a = _ellipse(SIZE, rng.uniform(25, 40), rng.uniform(25, 45), rng.uniform(8, 14), rng.uniform(8, 14))
        b = _ellipse(SIZE, rng.uniform(62, 80), rng.uniform(65, 90), rng.uniform(6, 9), rng.uniform(6, 9))
        has_b = rng.random() < planted_share
        lesions = a | (b if has_b else False)
        img = np.where(lesions, 190, 100)[..., None] + rng.normal(0, 10, SIZE + (3,))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"{sid}.png")
        Image.fromarray((a * 255).astype(np.uint8)).save(root / "masks" / f"{sid}.png")
        if has_b:
            planted[sid] = b
        blob = _ellipse(SIZE, rng.uniform(70, 85), rng.uniform(8, 25), 7, 7)  # a corner where no lesion is
        spec = a | (blob if i % 3 == 0 else False)
        other = b if (omni == "planted" and has_b) else (blob if omni == "random" else np.zeros(SIZE, bool))
        Image.fromarray((spec * 255).astype(np.uint8)).save(tmp / "spec" / f"{sid}.png")
        Image.fromarray(((a | other) * 255).astype(np.uint8)).save(tmp / "omni" / f"{sid}.png")
    models = (f"  - name: {SPEC}\n    kind: masks\n    role: specialist\n    options: {{folder: '{tmp / 'spec'}'}}\n"
              f"  - name: {OMNI}\n    kind: masks\n    role: omnimodel\n    options: {{folder: '{tmp / 'omni'}'}}\n")
    path = tmp / "c.yaml"
    path.write_text(f"task: polyp\ndataset:\n  name: folder\n  root: {root}\n  options: {{split: test}}\nsplit: test\n"
                    f"models:\n{models}curation:\n  reference: {SPEC}\n")
    store = Store(tmp / "runs" / "s.sqlite")
    run(config.load(path), store, progress=False)
    return store, planted


def truth(item: dict, planted: dict) -> str:
    """The scripted expert's verdict on an item (a row of omniseg.study.review.items.load)."""
    from omniseg.study.review.items import read_bits

    if item["side"] == "reference-only":
        return "model_wrong"
    b = planted.get(item["sample_id"])
    return "finding" if b is not None and (read_bits(item["region"]) & b).sum() * 2 > b.sum() else "model_wrong"

"""`omniseg demo`: the whole job in a few minutes, without a download or an API key.

Data: the real Kvasir-SEG when it is on disk (``data/Kvasir-SEG``, or ``--data-root``), else a generated set
of polyp-like images in its layout (said so); with ``--volumes``, real volumes: the MNI152 template nilearn ships,
its white matter as the target, every 2-D model asked slice by slice. A small U-Net is trained for a couple of minutes, then the
specialist, two training-free floors and an omnimodel are run, curated and reported. The omnimodel is the
local stand-in (:mod:`omniseg.standins.fake_gemini`, in this process), whose answers trace a crude guess from
the image; with ``--live`` and a key it is the real Gemini, after the estimated cost is printed. The task is
marked ``demo: true``, so every heading of its report says "demo" and names the stand-in.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import OmnisegError

#: where `omniseg data fetch polyp` puts Kvasir-SEG, looked for before generating a dataset
KVASIR_HOME = Path("data") / "Kvasir-SEG"
#: the fewest images of each split a demo runs on: a training set to learn from, easiest and hardest cases to pick
MIN_TRAIN, MIN_TEST = 8, 4


@dataclass
class Demo:
    out: Path
    data: Path
    data_kind: str  # "real Kvasir-SEG" or "generated"
    omnimodel: str  # "stand-in (http://127.0.0.1:...)" or "Gemini"
    report: Path | None = None


def generate(root: Path, n: int = 160, seed: int = 0) -> Path:
    """Polyp-like images in Kvasir-SEG's layout: a brighter, textured blob on a vignetted mucosa-coloured field."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = 120, 144
    yy, xx = np.mgrid[:h, :w]
    vignette = 1 - 0.45 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 2
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        wobble = 1 + 0.15 * np.sin(3 * np.arctan2(v, u) + rng.uniform(0, 6))
        mask = (u / rx) ** 2 + (v / ry) ** 2 <= wobble
        base = np.stack([np.full((h, w), 150.0), np.full((h, w), 75.0), np.full((h, w), 70.0)], -1) * vignette[..., None]
        lesion = base * (1 + rng.uniform(0.04, 0.45))  # some stand out, some barely: easy and hard cases
        img = np.where(mask[..., None], lesion, base) + rng.normal(0, 16, (h, w, 3))
        for _ in range(int(rng.integers(0, 6))):  # specular highlights: bright, and not the lesion
            sy, sx = int(rng.integers(0, h)), int(rng.integers(0, w))
            img[max(sy - 2, 0):sy + 3, max(sx - 3, 0):sx + 4] = 250
        sid = f"demo{i:03d}"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"{sid}.jpg", quality=92)
        Image.fromarray((mask * 255).astype(np.uint8)).convert("RGB").save(root / "masks" / f"{sid}.jpg", quality=95)
    return root


def config_text(data: Path, checkpoint: Path, gemini: dict, minutes: float, test_limit: bool,
                volumes: bool = False) -> str:
    import json

    if volumes:
        about = "the MNI152 template's white matter, slab by slab (nilearn's wheel)"
        dataset = f"""dataset:
  name: nifti
  root: {json.dumps(str(data.resolve()))}
slices: {{axis: axial, percentiles: [0.5, 99.5]}}"""
    else:
        about = "Kvasir-SEG" if test_limit else "generated polyp-like images"
        dataset = f"""dataset:
  name: kvasir-seg
  root: {json.dumps(str(data.resolve()))}"""
    return f"""# written by `omniseg demo`: a demo task (every report heading says so)
task: demo
demo: true
description: omniseg demo on {about}
{dataset}
split: test
models:
  - name: unet
    kind: unet
    options: {{checkpoint: {json.dumps(str(checkpoint.resolve()))}, device: cpu, batch_size: 8}}
  - name: otsu
    kind: otsu
    options: {{foreground: bright}}
  - name: ellipse
    kind: ellipse
    options: {{radius: 0.28}}
  - name: gemini
    kind: gemini
    options: {json.dumps(gemini)}
curation: {{reference: unet, metric: dice, extremes: 10}}
train:
  net: {{arch: Unet, encoder: resnet18, input_size: 96}}
  epochs: 40
  batch_size: 8
  max_minutes: {minutes}
  augment: basic
"""


def run(out: Path, *, data_root: Path | None = None, live: bool = False, minutes: float = 2.0,
        say: Callable[[str], None] = print, progress: bool = True, images: int = 160, volumes: bool = False) -> Demo:
    """Train, run, curate and report the demo task under ``out``; returns where everything went. ``volumes``: the
    volume demo on the MNI152 template (omniseg.datasets.mni152), every 2-D model slice by slice."""
    import os

    from .. import config
    from . import report
    from .curate import curate
    from ..inference.runner import dry_run, open_dataset, run as run_task
    from ..store.database import Store
    from ..training.train import train

    if out.exists() and not out.is_dir():
        raise OmnisegError(f"--out {out} is a file; name a folder for the demo's data, store and report")
    if volumes and data_root is not None:
        raise OmnisegError("--volumes runs on the MNI152 template nilearn ships; --data-root is for Kvasir-SEG")
    real = None if volumes else data_root or (KVASIR_HOME if (KVASIR_HOME / "images").is_dir() else None)
    if real is not None and not (Path(real) / "images").is_dir():
        raise OmnisegError(f"--data-root {real}: no images/ folder (Kvasir-SEG's layout) there")
    if real is not None:  # before minutes of training: enough images to train on and to curate
        from ..datasets import open as open_data

        splits = [r.split for r in open_data("kvasir-seg", real).refs("all")]
        if splits.count("test") < MIN_TEST or splits.count("train") < MIN_TRAIN:
            raise OmnisegError(f"--data-root {real}: {splits.count('train')} training and {splits.count('test')} test "
                               f"images; the demo needs at least {MIN_TRAIN} and {MIN_TEST} (about "
                               f"{5 * MIN_TEST} images in all), or leave --data-root out to generate them")
    out.mkdir(parents=True, exist_ok=True)
    data = Path(real) if real else out / "data" / ("mni152-slabs" if volumes else "Kvasir-SEG-like")
    if volumes:
        from ..datasets import mni152

        if not (data / "labels").is_dir():
            mni152.write_slabs(data)
        say(f"data: the MNI152 2009a T1 template and its white-matter map (nilearn's wheel), cut into hemisphere slabs "
            f"of 6 axial slices at 3 x 2 x 2 mm, at {data}")
    elif real:
        say(f"data: the real Kvasir-SEG at {data} (the test split's first 60 images are run)")
    else:
        if not (data / "images").is_dir():
            generate(data, n=images)
        say(f"data: no Kvasir-SEG on disk, so {images} generated polyp-like images in its layout at {data} "
            "(`omniseg data fetch polyp` gets the real one)")
    gemini = {"model": "gemini-3.5-flash", "mode": "polygon", "target": "the white matter" if volumes else "the polyp",
              "max_side": 256,
              "max_in_flight": 8, "price": {"input_per_mtok": 1.50, "output_per_mtok": 9.00}}
    store_path, checkpoint = out / "runs" / "omniseg.sqlite", out / "runs" / "demo-unet.pt"
    with ExitStack() as stack:
        if live:
            if not (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")):
                raise OmnisegError("--live asks the real Gemini API: set GEMINI_API_KEY (or GOOGLE_API_KEY), or leave "
                                   "--live out to use the local stand-in")
            omni = "the real Gemini API (gemini-3.5-flash)"
        else:
            from ..standins import fake_gemini
            from ..standins import gemini_answers as ga

            stand_in = stack.enter_context(fake_gemini.FakeGemini(ga.good_answer))
            gemini["base_url"] = stand_in.url
            stack.enter_context(_env("GEMINI_API_KEY", os.environ.get("GEMINI_API_KEY") or "stand-in"))
            no_proxy = ",".join(p for p in (os.environ.get("NO_PROXY"), "127.0.0.1,localhost") if p)
            stack.enter_context(_env("NO_PROXY", no_proxy))  # a proxy of the user's must not see the stand-in's calls
            omni = f"the local stand-in at {stand_in.url} (omniseg.standins.fake_gemini: a crude guess, not Gemini)"
        say(f"omnimodel: {omni}")
        cfg_path = out / "demo.yaml"
        cfg_path.write_text(config_text(data, checkpoint, gemini, minutes, real is not None, volumes))
        cfg = config.load(cfg_path)
        limit = 60 if real else None
        if live:
            with Store(store_path) as st:
                est = dry_run(cfg, st, store_root=st.root, limit=limit, progress=False)
            say(f"estimated cost of the live calls: {sum(e['cost_usd'] for e in est.values()):.4f} USD")
        if not checkpoint.is_file():
            say(f"training the specialist for up to {minutes:g} minutes (a real one trains for an hour or on a GPU)")
            res = train(cfg, cfg.train, open_dataset(cfg), checkpoint, device="cpu", progress=progress)
            say(f"  {res.epochs} epochs, best validation Dice {res.best_val_dice:.3f}")
        with Store(store_path) as st:
            s = run_task(cfg, st, limit=limit, progress=progress, argv=["demo"])
            say(f"run: {s.pairs} pairs ({', '.join(f'{k} {v}' for k, v in sorted(s.statuses.items()))})")
            curate(st, "demo", 10)
        with Store(store_path, readonly=True) as st:
            paths = report.write(st, out / "report", split="test")
    kind = "the real MNI152 template" if volumes else "real Kvasir-SEG" if real else "generated"
    return Demo(out, data, kind, omni, paths.get("html"))


class _env:
    """Set an environment variable for the block, then put it back."""

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def __enter__(self):
        import os

        self.old = os.environ.get(self.name)
        os.environ[self.name] = self.value

    def __exit__(self, *exc):
        import os

        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old

"""SAM 3, a promptable segmentation foundation model, through transformers: the `sam3` model kind.

SAM 3 takes a text concept ("polyp") and returns every instance it finds, each with a score; omniseg keeps
the instances at or above ``score_threshold`` and unites them (or keeps the best one) into the sample's
mask. A model that finds nothing gives an empty mask (status ok). Its role is ``foundation``: a
general-purpose segmenter, the third contender beside specialists and omnimodels.

``mode: box-oracle`` prompts with the bounding box of the reference mask instead (and the text): it is
**privileged** (it is told where the lesion is), and every table marks it so; the Medical SAM3 paper
(arXiv 2601.10880) shows that vanilla SAM 3 looks competitive on medical images mostly when given such boxes.
Needs ``pip install 'omniseg[sam]'``; checkpoints: docs/specialists.md.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..datasets.base import Sample
from ..errors import OmnisegError
from ..options import Options
from .base import Prediction, Segmenter
from .device import PATTERN as DEVICE, pick as pick_device



class Sam3Options(Options):
    checkpoint: str = Field("facebook/sam3", description="a Hugging Face Hub id (facebook/sam3 is gated: accept its "
                                                         "licence, then `hf auth login`) or a local folder saved with "
                                                         "save_pretrained (model and processor)")
    target: str = Field("the object", description="what to segment, as in the task's other entries ('the polyp')")
    prompt: str | None = Field(None, description="the text concept sent (default: the target without a leading "
                                                 "'the', 'a' or 'an': 'the polyp' -> 'polyp')")
    mode: Literal["text", "box-oracle"] = Field(
        "text", description="text: the concept only; box-oracle: also the reference mask's bounding box (privileged: "
                            "marked in every table, never mixed with the text mode)")
    score_threshold: float = Field(0.5, ge=0, le=1, description="instances scoring at or above this are kept")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="an instance's mask probability at or above this is foreground")
    combine: Literal["union", "best"] = Field("union", description="union: every kept instance; best: the highest-scoring one")
    device: str = Field("auto", pattern=f"^({DEVICE})$", description="auto (CUDA when present), cpu, cuda, cuda:N, mps")
    batch_size: int = Field(4, ge=1, description="images per forward pass")
    precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights and inputs on the device; half precisions only where the device has them")


def concept(target: str) -> str:
    """The text prompt of a target: 'the polyp' -> 'polyp', 'a breast tumour' -> 'breast tumour'."""
    return re.sub(r"^(the|a|an)\s+", "", target.strip(), flags=re.IGNORECASE) or target.strip()


def reference_box(mask: np.ndarray) -> list[float] | None:
    """The bounding box (x0, y0, x1, y1, in pixels, x1 and y1 past the last pixel) of a mask; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _weights_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"):
            h.update(p.name.encode() + b"\0")
            with open(p, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


class Sam3(Segmenter):
    kind = "sam3"
    role = "foundation"
    version = "1"
    inert = ("device", "batch_size")  # where and how many at once do not change what it says
    Options = Sam3Options

    def __init__(self, name: str, options: Sam3Options | None = None):
        super().__init__(name, options)
        o = self.options
        try:
            import torch
            from transformers import Sam3Model, Sam3Processor
        except ImportError as e:
            raise OmnisegError(f"model {name!r} (kind sam3) needs transformers with SAM 3: "
                               f"pip install 'omniseg[sam]' ({e})") from None
        self.prompt = o.prompt or concept(o.target)
        self.device = pick_device(o.device, f"model {name!r} (kind sam3)")  # before minutes spent loading weights
        self.dtype = getattr(torch, o.precision)
        local = Path(o.checkpoint).expanduser()
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # omniseg's own bar tells the run's progress
        try:
            self.processor = Sam3Processor.from_pretrained(str(local) if local.is_dir() else o.checkpoint)
            self.net = Sam3Model.from_pretrained(str(local) if local.is_dir() else o.checkpoint)
        except Exception as e:  # not found, gated, offline, a damaged file: one message naming the checkpoint
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OmnisegError(
                f"model {name!r}: could not load the SAM 3 checkpoint {o.checkpoint!r}: {first[:300]}. A Hub id needs "
                "internet (and, for the gated facebook/sam3, its licence accepted and `hf auth login`); or set "
                "checkpoint to a local folder saved with save_pretrained") from None
        self.net = self.net.to(self.device, dtype=self.dtype).eval()
        self.weights = (_weights_hash(local) if local.is_dir()
                        else getattr(self.net.config, "_commit_hash", None) or o.checkpoint)

    @property
    def privileged(self) -> bool:
        return self.options.mode == "box-oracle"

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["options"]["checkpoint"] = self.weights if Path(self.options.checkpoint).expanduser().is_dir() \
            else self.options.checkpoint
        sig["weights"] = self.weights
        sig["prompt"] = self.prompt
        sig["privileged"] = self.privileged
        return sig

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        if not self.privileged:
            return self._predict(samples, None)
        boxes = [[box] if (box := reference_box(s.mask)) is not None else [] for s in samples]
        return self.segment_boxes(samples, boxes, nothing="empty reference: no box to prompt with")

    def segment_boxes(self, samples: list[Sample], boxes: list[list[list[float]]],
                      nothing: str = "no box to prompt with") -> list[Prediction]:
        """Each sample prompted with the text concept and its boxes ([x0, y0, x1, y1] in pixels, as positive
        exemplars): the promptable-segmenter contract a chain (omniseg.models.chain) draws through. A sample
        without a box gets an empty mask noting ``nothing``."""
        out: list[Prediction | None] = [None] * len(samples)
        groups: dict[int, list[int]] = {}
        for i, b in enumerate(boxes):  # one forward pass takes the same number of boxes for every image
            groups.setdefault(len(b), []).append(i)
        for n, idx in groups.items():
            if n == 0:
                for i in idx:
                    out[i] = Prediction(mask=np.zeros(samples[i].mask.shape, bool),
                                        meta={"prompt": self.prompt, "boxes": 0, "note": nothing})
                continue
            for i, p in zip(idx, self._predict([samples[i] for i in idx], [boxes[i] for i in idx])):
                out[i] = p
        return out  # type: ignore[return-value]

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]

    def _predict(self, samples: list[Sample], boxes: list[list[list[float]]] | None) -> list[Prediction]:
        out: list[Prediction] = []
        for i in range(0, len(samples), self.options.batch_size):
            chunk = samples[i:i + self.options.batch_size]
            some = None if boxes is None else boxes[i:i + self.options.batch_size]
            try:
                out.extend(self._chunk(chunk, some))
            except Exception as e:  # e.g. out of memory, or one image it cannot take: each sample alone
                if len(chunk) == 1:
                    out.append(Prediction.failed(f"{type(e).__name__}: {e}"))
                else:
                    out.extend(self._alone(s, None if some is None else some[j]) for j, s in enumerate(chunk))
        return out

    def _alone(self, sample: Sample, boxes: list[list[float]] | None) -> Prediction:
        """One sample of a batch that failed, predicted by itself: a failure of its own, or the batch's."""
        try:
            return self._chunk([sample], None if boxes is None else [boxes])[0]
        except Exception as e:
            return Prediction.failed(f"{type(e).__name__}: {e}")

    def _chunk(self, chunk: list[Sample], boxes: list[list[list[float]]] | None) -> list[Prediction]:
        import torch

        o = self.options
        kw = {"input_boxes": boxes, "input_boxes_labels": [[1] * len(b) for b in boxes]} if boxes is not None else {}
        inputs = self.processor(images=[np.array(s.image) for s in chunk], text=[self.prompt] * len(chunk),
                                return_tensors="pt", **kw)
        inputs = {k: (v.to(self.device, dtype=self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                  if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = self.net(**inputs)
        results = self.processor.post_process_instance_segmentation(
            outputs, threshold=o.score_threshold, mask_threshold=o.mask_threshold,
            target_sizes=[s.mask.shape for s in chunk])
        return [self._combine(s, r, None if boxes is None else len(boxes[j]))
                for j, (s, r) in enumerate(zip(chunk, results))]

    def _combine(self, sample: Sample, result: dict, boxes: int | None) -> Prediction:
        masks = result["masks"].detach().cpu().numpy().astype(bool)
        scores = result["scores"].detach().float().cpu().numpy()
        h, w = sample.mask.shape
        mask = np.zeros((h, w), bool)
        if len(scores):
            if self.options.combine == "best":
                mask = masks[int(np.argmax(scores))].copy()
            else:
                mask = masks.any(axis=0)
        if sample.roi is not None:
            mask &= sample.roi
        meta = {"prompt": self.prompt, "instances": int(len(scores)),
                "scores": [round(float(s), 4) for s in sorted(scores, reverse=True)[:10]]}
        if boxes is not None:
            meta["boxes"] = boxes
        if self.privileged:
            meta["privileged"] = "box-oracle: prompted with the reference's bounding box"
        return Prediction(mask=mask, meta=meta)

    def close(self) -> None:
        self.net = None

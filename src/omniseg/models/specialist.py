"""Specialist networks (segmentation-models-pytorch) as omniseg models, and their checkpoint files.

A checkpoint is one file holding the weights and everything needed to use them correctly:
architecture, encoder, input size and resize policy, normalization, threshold, the training
configuration, the split's fingerprint, the validation score and package versions. A plain smp
``state_dict`` also loads when the model options name the architecture.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from ..datasets.base import Sample
from ..errors import CheckpointError, CheckpointMissing
from ..options import Options
from .base import Prediction, Segmenter
from .device import PATTERN as DEVICE, pick as pick_device

FORMAT = "omniseg-specialist/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Resize = Literal["resize", "pad"]


class NetSpec(Options):
    """How to build the network and feed it: stored in every checkpoint."""

    arch: str = Field("Unet", description="smp architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, ...")
    encoder: str = Field("resnet18", description="smp encoder name")
    input_size: int = Field(256, ge=32, description="side of the square network input (resize policy)")
    resize: Resize = Field("resize", description="'resize' to input_size and back, or 'pad' to a multiple of 32 at full resolution")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = Field(0.5, gt=0, lt=1, description="probability above which a pixel is foreground")


def build_net(spec: NetSpec, encoder_weights: str | None = None):
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(spec.arch, encoder_name=spec.encoder, encoder_weights=encoder_weights,
                                in_channels=3, classes=1)
    except KeyError as e:
        raise CheckpointError(f"cannot build {spec.arch} with encoder {spec.encoder!r}: {e}") from None


def versions() -> dict[str, str]:
    import segmentation_models_pytorch as smp
    import torch

    from .. import __version__

    return {"omniseg": __version__, "torch": str(torch.__version__), "segmentation_models_pytorch": smp.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_checkpoint(path: Path, net, spec: NetSpec, **info: Any) -> None:
    """Write the checkpoint atomically (a killed save never leaves a half file under ``path``)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "net": spec.model_dump(mode="json"), "versions": versions(),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **info}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def annotate_checkpoint(path: Path, **info: Any) -> None:
    """Add ``info`` to a saved checkpoint (atomically): how its training ended, known only after the best epoch."""
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=False)
    blob.update(info)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | Path, fallback: NetSpec | None = None, device: str = "cpu"):
    """(net in eval mode, NetSpec, info dict). ``fallback`` describes a plain state_dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointMissing(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean "not a checkpoint"
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: {type(e).__name__}: {e}") from None
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        try:
            spec = NetSpec.model_validate(blob["net"])
        except Exception as e:
            raise CheckpointError(f"checkpoint {path}: its network description is invalid: {e}") from None
        state, info = blob["state_dict"], {k: v for k, v in blob.items() if k not in ("state_dict", "net")}
    elif isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        if fallback is None:
            raise CheckpointError(f"checkpoint {path} is a plain state_dict: name arch and encoder in the model options")
        spec, state, info = fallback, blob, {"format": "state_dict"}
    else:
        raise CheckpointError(f"checkpoint {path} is neither an omniseg checkpoint nor a state_dict")
    try:
        net = _with_weights(spec, state)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise CheckpointError(
            f"checkpoint {path} does not fit {spec.arch}/{spec.encoder}: " + " ".join(s.strip() for s in first)
        ) from None
    net.eval().to(device)
    info["sha256"] = file_sha256(path)
    return net, spec, info


def _with_weights(spec: NetSpec, state: dict):
    """The network holding ``state``. Built without weights (on the meta device) and given the checkpoint's tensors:
    drawing a random initialisation only to overwrite it cost 0.6-1 s a load (a ResNet-18/34 U-Net), most of a short
    run's start. Built for real when the checkpoint's tensors are of another dtype (a half-precision state_dict is
    cast, as loading always did) or an encoder keeps a buffer out of state_dict (some timm ones)."""
    import torch

    with torch.device("meta"):
        net = build_net(spec)
    own = net.state_dict()
    if all(k in state and state[k].dtype == t.dtype for k, t in own.items()):  # else cast, as a copy does
        net.load_state_dict(state, strict=True, assign=True)
        if not any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
            return net
    net = build_net(spec)
    net.load_state_dict(state, strict=True)
    return net


def resize_input(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 image at the network's square input size: PIL's bilinear (antialiased), as in training.

    Training (omniseg.training.train) resizes the same way, so the network sees at inference the pixels it
    learnt from; resizing the uint8 image first also spares a float copy of the full-size image (docs/scaling.md).
    """
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def preprocess(images: list[np.ndarray], spec: NetSpec):
    """uint8 HxWx3 images -> a normalized float batch at the network's input size."""
    import torch
    import torch.nn.functional as F

    if spec.resize == "resize":
        images = [resize_input(im, spec.input_size) for im in images]
    tensors = [torch.from_numpy(im if im.flags.writeable and im.flags.c_contiguous else im.copy())
               .permute(2, 0, 1).float().div_(255) for im in images]
    if spec.resize == "resize":
        x = torch.stack(tensors)
    else:
        h = max(t.shape[1] for t in tensors)
        w = max(t.shape[2] for t in tensors)
        H, W = -(-h // 32) * 32, -(-w // 32) * 32
        x = torch.stack([F.pad(t, (0, W - t.shape[2], 0, H - t.shape[1])) for t in tensors])
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def postprocess(probs, shapes: list[tuple[int, int]], spec: NetSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Network probability maps -> (map at the network's resolution, map at the image's own size)."""
    import torch.nn.functional as F

    out = []
    for p, (h, w) in zip(probs, shapes):
        if spec.resize == "resize":
            native = p
            full = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        else:
            native = full = p[:, :h, :w]
        out.append((native[0].float().cpu().numpy(), full[0].float().cpu().numpy()))
    return out


def confidence(prob: np.ndarray, floor: float = 0.1) -> float:
    """A specialist's confidence in one prediction: mean |2p - 1| over pixels with p > ``floor``.

    Pixels the network is sure are background do not dilute it; an image with no such pixels
    (nothing found at all) scores 0, since on lesion datasets an empty answer is the doubtful one.
    """
    p = np.asarray(prob, dtype=np.float32)
    region = p > floor
    if not region.any():
        return 0.0
    return float(np.abs(2 * p[region] - 1).mean())


class SpecialistOptions(NetSpec):
    checkpoint: Path = Field(description="checkpoint file (omniseg's, or a plain smp state_dict with arch/encoder set here)")
    device: str = Field("auto", pattern=f"^({DEVICE})$", description="auto (CUDA when present), cpu, cuda, cuda:N, mps")
    batch_size: int = Field(8, ge=1, description="images per forward pass")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    threshold: float | None = Field(None, gt=0, lt=1, description="override the checkpoint's threshold")  # type: ignore[assignment]


class Specialist(Segmenter):
    """A trained network: batched inference, resize or pad and back, probability map kept."""

    kind = "unet"
    role = "specialist"
    trainable = True
    version = "2"  # 2: inputs resized by PIL, as in training (1: torch's antialiased bilinear)
    Options = SpecialistOptions
    inert = ("device", "batch_size", "threads")  # where and how many at once do not change what it says
    unhashed = ("trained_on", "training")  # follow from the checkpoint, whose sha256 is hashed

    def __init__(self, name: str, options: SpecialistOptions | None = None):
        super().__init__(name, options)
        import torch

        o = self.options
        if o.threads:
            torch.set_num_threads(o.threads)
        self.device = pick_device(o.device, f"model {name!r} (kind {self.kind})")
        fallback = NetSpec(**{k: getattr(o, k) for k in NetSpec.model_fields if k != "threshold"})
        self.net, self.spec, self.info = load_checkpoint(o.checkpoint, fallback, self.device)
        self.threshold = o.threshold if o.threshold is not None else self.spec.threshold
        if self.device.startswith("cuda"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["checkpoint_sha256"] = self.info["sha256"]
        sig["threshold"] = self.threshold
        # what the network learnt from, for the manifest's cross-dataset note (None for a plain state_dict)
        sig["trained_on"] = ({k: self.info.get(k) for k in ("task", "dataset", "split_fingerprint")}
                             if self.info.get("split_fingerprint") else None)
        # how it was trained, for the manifest: epochs, minutes, validation Dice, where and how fast
        sig["training"] = {k: self.info[k] for k in ("epoch", "minutes", "val_dice", "fit_images", "val_images",
                                                     "device", "precision", "images_per_s", "trained_at",
                                                     "epochs_planned", "epochs_done", "stopped", "budget_minutes",
                                                     "minutes_total", "share_done")
                           if k in self.info} or None
        return sig

    def probabilities(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(network-resolution, full-resolution) probability maps of each image."""
        import torch

        out: list[tuple[np.ndarray, np.ndarray]] = []
        bs = self.options.batch_size
        with torch.inference_mode():
            for i in range(0, len(images), bs):
                chunk = images[i:i + bs]
                x = preprocess(chunk, self.spec).to(self.device)
                probs = torch.sigmoid(self.net(x))
                out.extend(postprocess(probs, [im.shape[:2] for im in chunk], self.spec))
        return out

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(samples):  # 'pad' batches only same-size images together
            key = s.image.shape if self.spec.resize == "pad" else ()
            groups.setdefault(key, []).append(i)
        out: list[Prediction | None] = [None] * len(samples)
        for idx in groups.values():
            try:
                probs = self.probabilities([samples[i].image for i in idx])
            except Exception as e:  # e.g. out of memory, or one image it cannot take: each sample alone
                if len(idx) > 1:
                    for i in idx:
                        out[i] = self.predict_batch([samples[i]])[0]
                else:
                    out[idx[0]] = Prediction.failed(f"{type(e).__name__}: {e}")
                continue
            for i, (native, full) in zip(idx, probs):
                mask = full > self.threshold
                if samples[i].roi is not None:
                    mask &= samples[i].roi
                # The stored map is the network's own output (at its resolution, before resizing back):
                # the mask above is that map resized to the image and thresholded.
                out[i] = Prediction(mask=mask, prob=native, meta={"confidence": confidence(native)})
        return out  # type: ignore[return-value]

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]

    def close(self) -> None:
        self.net = None

"""Which torch device a local model (or `omniseg train`) runs on: one rule and one message for every kind that
takes a ``device`` option, checked when the model is built, before any weight is moved."""

from __future__ import annotations

import re

from ..errors import OmnisegError

#: what a ``device`` option may say
PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def pick(device: str, who: str = "") -> str:
    """The torch device to use ('auto': CUDA when present, else the CPU); one message naming ``who`` for a misspelt
    device or a GPU that is not there."""
    import torch

    at = f"{who}: " if who else ""
    if not re.fullmatch(PATTERN, device):
        raise OmnisegError(f"{at}device {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OmnisegError(f"{at}device {device!r} asked for, but torch sees no CUDA device (use device: auto or cpu)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise OmnisegError(f"{at}device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise OmnisegError(f"{at}device 'mps' asked for, but torch sees no Apple GPU (use device: auto or cpu)")
    return device

"""The Segmenter contract, checked on every registered model kind (as smp and timm test every architecture).

Each kind is built from a tiny configuration (a random U-Net, a tiny SAM 3, prediction files, Gemini and an
OpenAI-compatible server faked on 127.0.0.1) and must: answer every sample with one prediction whose status is
a known one, an 'ok' mask of the image's size in booleans, whatever else is in the batch; turn its own failures
into statuses with reasons, never exceptions; carry a signature that changes with every option that changes what
it says (and with none that does not: ``Segmenter.inert``); and refuse a missing device or checkpoint with one
message. A kind added to the registry without a row in :data:`KINDS` fails here first.
"""

from __future__ import annotations

import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from omniseg import models
from omniseg.config import ModelConfig
from omniseg.datasets.base import Sample
from omniseg.errors import OmnisegError
from omniseg.models.api.decoders import STATUSES as DECODED
from omniseg.inference.runner import run_context
from omniseg.models.base import STATUSES, Prediction
from omniseg.models.specialist import NetSpec, build_net, save_checkpoint
from omniseg.standins import tiny_codebook, tiny_sam3
from omniseg.standins.fake_gemini import FakeGemini
from omniseg.standins.fake_openai import FakeOpenAI
from omniseg.standins.gemini_answers import error

from conftest import blob_mask, lesion_image

KNOWN = set(STATUSES) | set(DECODED)
SIZES = [(40, 52), (33, 70), (48, 48)]
#: samples no dataset should give, mixed into a batch of good ones: each must come back as its own row
ODD = [(0, 5), (1, 1), (2, 300)]


def samples(sizes, seed: int = 0, prefix: str = "s") -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        m = blob_mask(h, w, rng) if h > 8 and w > 8 else np.zeros((h, w), bool)
        out.append(Sample(f"{prefix}{i}", lesion_image(m, rng), m, extra={"human": m.copy()}))
    return out


@dataclass
class Env:
    """What the tiny configurations point at, made once for the module."""

    root: Path
    unet: list[Path] = field(default_factory=list)  # two checkpoints with other weights
    sam3: list[Path] = field(default_factory=list)
    masks: Path | None = None
    gemini: FakeGemini | None = None
    openai: FakeOpenAI | None = None


@dataclass
class With:
    """An option's other value that is valid only together with other options (each changes the signature)."""

    value: Any
    also: dict


@dataclass
class Kind:
    options: Callable[[Env], dict]
    #: option -> a value other than the base one, where the generic rule (below) cannot make one
    alternatives: dict[str, Callable[[Env], Any]] = field(default_factory=dict)
    #: makes the kind fail on the samples (a realistic fault of its own); None: its odd samples are the test
    fault: Callable[[Any, Env, Any], None] | None = None
    #: statuses its fault may give
    fault_statuses: tuple[str, ...] = ("error",)
    #: the other entries it works through (a chain's source), as ModelConfigs
    peers: Callable[[Env], list] | None = None


def _oom(m, env, monkeypatch):
    def forward(*a, **k):
        raise RuntimeError("CUDA out of memory (injected)")

    monkeypatch.setattr(m.net, "forward", forward)


def _broken_files(m, env, monkeypatch):
    for p in m.options.folder.iterdir():
        p.write_bytes(b"\x89PNG\r\n\x1a\n broken")


def _no_annotation(m, env, monkeypatch):
    m.options = m.options.model_copy(update={"annotation": "second_reader"})  # the samples carry none


def _server_refuses(server_attr: str):
    def fault(m, env, monkeypatch):
        server = getattr(env, server_attr)
        monkeypatch.setattr(server, "behaviour", lambda req: error(400, "INVALID_ARGUMENT", "Request contains an "
                                                                         "invalid argument."))
    return fault


def _api(url_of: Callable[[Env], str], **more) -> Callable[[Env], dict]:
    return lambda env: {"base_url": url_of(env), "target": "polyp", "backoff_s": 0.01, "max_retries": 1,
                        "max_side": 128, "prompts": {"mine": "Outline {target}."}, **more}


KINDS: dict[str, Kind] = {
    "otsu": Kind(lambda env: {}),
    "frangi": Kind(lambda env: {}),
    "ellipse": Kind(lambda env: {}),
    "human": Kind(lambda env: {"annotation": "human"}, alternatives={"annotation": lambda env: "second_reader"},
                  fault=_no_annotation, fault_statuses=("unavailable",)),
    "unet": Kind(lambda env: {"checkpoint": str(env.unet[0]), "device": "cpu"},
                 alternatives={"checkpoint": lambda env: str(env.unet[1]), "arch": lambda env: "FPN",
                               "encoder": lambda env: "resnet34"},
                 fault=_oom),
    "masks": Kind(lambda env: {"folder": str(env.masks)},
                  alternatives={"folder": lambda env: str(_copy(env.masks, env.root / "moved")),
                                "pattern": lambda env: "{id}_pred",
                                "labels": lambda env: [255], "id_map": lambda env: str(_id_map(env))},
                  fault=_broken_files),
    "sam3": Kind(lambda env: {"checkpoint": str(env.sam3[0]), "device": "cpu", "target": "the polyp"},
                 alternatives={"checkpoint": lambda env: str(env.sam3[1])}, fault=_oom),
    "gemini": Kind(_api(lambda env: env.gemini.url), alternatives={"prompts": lambda env: {"mine": "Mark {target}."},
                                                                   "prompt": lambda env: "mine",
                                                                   "model": lambda env: "gemini-2.5-pro",
                                                                   "project": lambda env: "p", "location": lambda env: "l",
                                                                   "temperature": lambda env: With(0.5, {"model": "gemini-2.5-flash"}),
                                                                   "thinking_budget": lambda env: With(128, {"model": "gemini-2.5-flash"}),
                                                                   "image_size": lambda env: With("2K", {"model": "gemini-3.1-flash-image"}),
                                                                   # Vertex AI's default api_version (v1) is hashed
                                                                   "vertexai": lambda env: With(True, {"api_version": "v1beta"}),
                                                                   "price": lambda env: {"input_per_mtok": 9, "output_per_mtok": 9},
                                                                   "cache": lambda env: str(env.root / "other.sqlite")},
                   fault=_server_refuses("gemini"), fault_statuses=("api_error",)),
    "openai": Kind(_api(lambda env: env.openai.url + "/v1", model="Qwen/Qwen2.5-VL-7B-Instruct", key_env="VLM_KEY"),
                   alternatives={"prompts": lambda env: {"mine": "Mark {target}."}, "prompt": lambda env: "mine",
                                 "key_env": lambda env: "OTHER_KEY", "resize_rule": lambda env: "ollama",
                                 "seg_codebook": lambda env: str(tiny_codebook.save(env.root / "vae-oid.npz")),
                                 "price": lambda env: {"input_per_mtok": 9, "output_per_mtok": 9},
                                 "cache": lambda env: str(env.root / "other.sqlite")},
                   fault=_server_refuses("openai"), fault_statuses=("api_error",)),
    "chain": Kind(lambda env: {"source": "the-openai-source", "segmenter": _sam3_stage(env, 0)},
                  alternatives={"source": lambda env: "the-gemini-source", "segmenter": lambda env: _sam3_stage(env, 1)},
                  peers=lambda env: [ModelConfig(name="the-openai-source", kind="openai", options=KINDS["openai"].options(env)),
                                     ModelConfig(name="the-gemini-source", kind="gemini", options=KINDS["gemini"].options(env))],
                  fault=_server_refuses("openai"), fault_statuses=("api_error",)),
}


def _sam3_stage(env: Env, which: int) -> dict:
    return {"kind": "sam3", "options": {"checkpoint": str(env.sam3[which]), "device": "cpu", "target": "the polyp"}}


def _copy(folder: Path, to: Path) -> Path:
    if not to.exists():
        shutil.copytree(folder, to)
    return to


def _id_map(env: Env) -> Path:
    path = env.root / "ids.tsv"
    path.write_text("case\tid\n" + "".join(f"s{i}\ts{(i + 1) % len(SIZES)}\n" for i in range(len(SIZES))))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("contract")
    e = Env(root)
    spec = NetSpec(encoder="resnet18", input_size=32)
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(root / f"unet{seed}.pt", build_net(spec).eval(), spec)
        e.unet.append(root / f"unet{seed}.pt")
        e.sam3.append(tiny_sam3.save(root / f"sam3-{seed}", seed=seed))
    e.masks = root / "masks"
    e.masks.mkdir()
    for s in samples(SIZES):
        Image.fromarray(s.mask.astype(np.uint8) * 255).save(e.masks / f"{s.id}.png")
    saved = {k: os.environ.get(k) for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "VLM_KEY", "OTHER_KEY", "NO_PROXY")}
    os.environ.update(GEMINI_API_KEY="contract-gemini-key", VLM_KEY="contract-vlm-key", OTHER_KEY="contract-other",
                      NO_PROXY="127.0.0.1,localhost")
    os.environ.pop("GOOGLE_API_KEY", None)
    with FakeGemini() as g, FakeOpenAI() as o:
        e.gemini, e.openai = g, o
        yield e
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def build(kind: str, env: Env, tmp_path: Path, **changed):
    m = models.build(ModelConfig(name=f"the-{kind}", kind=kind, options={**KINDS[kind].options(env), **changed}))
    if KINDS[kind].peers is not None:
        models.link([m], KINDS[kind].peers(env))
    m.bind(run_context(tmp_path))
    return m


def predict(m, batch: list[Sample]) -> list[Prediction]:
    try:
        return m.collect(m.submit(batch))
    finally:
        m.close()


def check_rows(batch: list[Sample], preds: list[Prediction]) -> None:
    assert len(preds) == len(batch)
    for s, p in zip(batch, preds):
        assert isinstance(p, Prediction) and p.status in KNOWN, (s.id, p.status)
        if p.status == "ok":
            assert isinstance(p.mask, np.ndarray) and p.mask.dtype == bool and p.mask.shape == s.mask.shape, s.id
        else:
            assert p.mask is None and p.reason, (s.id, p.status)


def test_every_registered_kind_has_a_row_in_the_contract():
    assert set(models.names()) == set(KINDS), "add a tiny configuration of the new kind to KINDS"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_row_per_sample_each_mask_the_size_of_its_image_whatever_else_is_in_the_batch(kind, env, tmp_path):
    good = samples(SIZES)
    batch = [good[0], *samples(ODD, prefix="odd"), good[1], good[2]]
    preds = predict(build(kind, env, tmp_path), batch)
    check_rows(batch, preds)
    by_id = dict(zip([s.id for s in batch], preds))
    assert all(by_id[s.id].status == "ok" for s in good), {s.id: by_id[s.id].reason for s in good}


@pytest.mark.parametrize("kind", sorted(k for k in KINDS if KINDS[k].fault))
def test_a_failure_is_a_status_with_a_reason_never_an_exception(kind, env, tmp_path, monkeypatch):
    if kind == "masks":
        env = Env(env.root, masks=_copy(env.masks, tmp_path / "broken"))
    m = build(kind, env, tmp_path / "store")
    KINDS[kind].fault(m, env, monkeypatch)
    batch = samples(SIZES)
    preds = predict(m, batch)
    check_rows(batch, preds)
    assert {p.status for p in preds} <= set(KINDS[kind].fault_statuses), [(p.status, p.reason) for p in preds]


def other_value(name: str, info, base: Any) -> Any:
    """A valid value other than ``base`` for an option, from its type and bounds (None: cannot tell)."""
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        ann = args[0]
    lo = hi = None
    for meta in info.metadata:
        lo = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else getattr(meta, "gt", lo)
        hi = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else getattr(meta, "lt", hi)
    if typing.get_origin(ann) is typing.Literal:
        choices = [c for c in typing.get_args(ann) if c != base]
        return choices[0] if choices else None
    if ann is bool:
        return not base
    if ann is int:
        v = (base if base is not None else (lo or 0)) + 1
        return v if hi is None or v <= hi else (base or 0) - 1
    if ann is float:
        start = base if base is not None else (lo or 0.0) + 0.1
        v = start * 0.9 if start else 0.05
        return v if lo is None or v > lo else (start + (hi if hi is not None else start + 1)) / 2
    if typing.get_origin(ann) is tuple:
        return tuple(x * 0.9 for x in base)
    if ann is str:
        return f"{base}-other" if base else "other"
    return None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_signature_changes_with_every_option_that_changes_the_output_and_no_other(kind, env, tmp_path):
    spec = KINDS[kind]
    cls = models.get(kind)
    base_opts = spec.options(env)
    base = build(kind, env, tmp_path)
    base_hash = base.signature_hash()
    base_values = base.options.model_dump()
    untried = []
    for name, info in cls.Options.model_fields.items():
        if name in spec.alternatives:
            value = spec.alternatives[name](env)
        else:
            value = other_value(name, info, base_values.get(name))
        changed = {name: value}
        if isinstance(value, With):
            changed = {name: value.value, **value.also}
            value = value.value
        if kind == "masks" and name in ("labels",):
            changed["values"] = "labels"
        if kind == "masks" and name == "values":
            changed = {"values": "labels", "labels": [255]}
        if kind == "masks" and name == "pattern":
            _copy(env.masks, tmp_path / "renamed")
            for p in (tmp_path / "renamed").iterdir():
                p.rename(p.with_name(p.stem + "_pred" + p.suffix))
            changed["folder"] = str(tmp_path / "renamed")
        if name in ("device",):
            continue  # the device check below: another device may not exist here
        if value is None:
            untried.append(name)
            continue
        try:
            other = build(kind, env, tmp_path, **changed)
        except (ValidationError, OmnisegError) as e:
            raise AssertionError(f"{kind}: option {name}={value!r} does not build ({e}); give KINDS[{kind!r}] "
                                 "an alternative for it") from None
        same = other.signature_hash() == base_hash
        if name in cls.inert:
            assert same, f"{kind}: option {name} is declared inert but changes the signature"
        else:
            assert not same, f"{kind}: option {name} ({base_opts.get(name)!r} -> {value!r}) leaves the signature as it was"
    assert not untried, f"{kind}: no other value known for {untried}: add them to KINDS[{kind!r}].alternatives"


@pytest.mark.parametrize("kind", sorted(k for k in KINDS if "device" in models.get(k).Options.model_fields))
@pytest.mark.parametrize("device", ["cuda:99", "mps"])
def test_a_device_that_is_not_there_is_one_message_naming_the_model(kind, device, env, tmp_path):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    with pytest.raises(OmnisegError, match=f"model 'the-{kind}'.*device {device!r}"):
        build(kind, env, tmp_path, device=device)


@pytest.mark.parametrize("kind", sorted(k for k in KINDS if "checkpoint" in models.get(k).Options.model_fields))
def test_a_missing_checkpoint_is_one_message_naming_it(kind, env, tmp_path):
    gone = tmp_path / "no" / "such.ckpt"
    with pytest.raises(OmnisegError, match=str(gone)):
        m = build(kind, env, tmp_path, checkpoint=str(gone))
        m.check_ready()

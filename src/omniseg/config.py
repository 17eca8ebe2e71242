"""Task configuration: ``configs/<task>.yaml`` validated into typed objects on load.

Every problem is reported as one :class:`~omniseg.errors.ConfigError` naming the file,
the key and what was expected. Model and dataset options are validated by the
``Options`` model of the registered kind, so a typo inside ``options`` is caught too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator

from .errors import ConfigError, unknown_name
from .models.specialist import NetSpec

Split = Literal["train", "test", "all"]


def safe_name(v: str) -> str:
    """Task and model names name folders and files: letters, digits, '-', '_', '.', not starting with '.'."""
    if not v or v[0] == "." or not all(ch.isalnum() or ch in "-_." for ch in v):
        raise ValueError("use letters, digits, '-', '_' or '.', not starting with '.' (it names folders and files)")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    name: str = Field(description="registered dataset adapter, e.g. kvasir-seg, drive, busi")
    root: Path = Field(description="dataset folder in the publisher's layout; relative paths are taken from the current directory")
    options: dict[str, Any] = Field(default_factory=dict, description="adapter options, validated by the adapter")
    max_pixels: int | None = Field(None, ge=1, description="largest image or mask read, in pixels (width x height); "
                                   "default 100 million: a larger file is a sample_error row naming it")


class ModelConfig(_Strict):
    name: str = Field(description="unique name of this model in the task; used in the store and reports")
    kind: str = Field(description="registered model kind, e.g. otsu, frangi, human, unet, gemini")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the kind, validated by it")
    default: bool = Field(True, description="run it when --models is not given (false: only when named)")
    role: Literal["specialist", "omnimodel", "foundation", "floor", "human"] | None = Field(
        None, description="what the model is in the comparison; default: its kind's (omniseg.models.base.ROLES)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return safe_name(v)


class CurationConfig(_Strict):
    reference: str | None = Field(None, description="model whose score ranks the cases; default: the first specialist")
    metric: Literal["dice", "iou"] = "dice"
    extremes: int = Field(50, ge=1, description="how many easiest and how many hardest cases")
    control: str | None = Field(None, description="a second specialist (another seed) that also picks easiest and "
                                                  "hardest cases: the selection-bias controls of docs/study.md")
    strata: bool = Field(False, description="also stratify by lesion size and contrast read from the images")


class MetricsConfig(_Strict):
    cldice: bool = Field(False, description="compute centreline Dice (for tubular structures such as vessels)")
    include: list[str] = Field(default_factory=list, description="opt-in metrics to compute as well (`omniseg list` names them)")
    spacing: tuple[PositiveFloat, PositiveFloat] | None = Field(
        None, description="the pixel spacing in mm, [row, column]: HD95, NSD and MASD are then in mm (else in pixels)")
    nsd_tolerance: PositiveFloat = Field(2.0, description="NSD's tolerance tau: mm with a spacing, pixels without")
    boundary_width: PositiveInt | None = Field(None, description="boundary IoU's band in pixels (default: 2% of the "
                                                                 "image diagonal, Cheng et al. 2021)")

    def geometry(self):
        """The :class:`omniseg.scoring.metrics.Geometry` these settings give."""
        from .scoring.metrics import Geometry

        return Geometry(spacing=self.spacing, tolerance=self.nsd_tolerance, width=self.boundary_width)


class TrainConfig(_Strict):
    """The `train:` block of a task configuration."""

    model: str = Field("unet", description="the models entry (of a trainable kind: unet) whose checkpoint this trains")
    net: NetSpec = NetSpec()
    encoder_weights: str | None = Field(None, description="None trains from scratch; 'imagenet' needs internet once")
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share of the training split held out for validation")
    seed: int = 0
    max_minutes: float | None = Field(None, gt=0, description="stop after this much training time; the schedule fits it")
    crop: int | None = Field(None, ge=32, description="random crop side for 'pad' (full-resolution) training")
    augment: Literal["none", "basic", "strong"] = Field(
        "basic", description="basic: flips, 90-degree turns, brightness/contrast; strong: also scale/rotation and hue")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32")
    channels_last: bool = Field(True, description="channels-last memory layout (faster convolutions on GPU and CPU)")
    compile: bool = Field(False, description="torch.compile the network (pays a compile first; for long GPU runs)")
    lr_reference_batch: int = Field(8, ge=1, description="lr is for this batch size; the lr used is lr x batch_size / this")
    cache: bool = Field(True, description="decode the training split once and keep it beside the checkpoint (resize policy)")



class SliceConfig(_Strict):
    """How a 2-D model sees a volume (docs/datasets.md, "Volumes"): one slice at a time along ``axis``, its intensities
    brought to 8 bits by a CT window or by percentiles of the volume, on the slices ``select`` picks."""

    axis: Literal["axial", "coronal", "sagittal"] = Field(
        "axial", description="slices across depth (axial), height (coronal) or width (sagittal) of the canonical volume")
    window: tuple[float, PositiveFloat] | None = Field(
        None, description="CT: [level, width] in the volume's units (e.g. [40, 400] soft tissue, [-600, 1500] lung); "
                          "values outside are clipped")
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="without a window (MRI): the volume's percentiles mapped to black and white")
    select: Literal["all", "reference", "every"] = Field(
        "all", description="all slices; 'reference': the slices with reference foreground plus `margin` (as the SAM 2 / "
                           "SAM 3 3-D comparisons do: the model is told where to look, and every table marks it); "
                           "'every': every `every`-th slice (the others predicted empty)")
    margin: int = Field(2, ge=0, description="select: reference: slices added on each side of the reference's extent")
    every: PositiveInt = Field(1, description="select: every: the step between asked slices")

    @model_validator(mode="after")
    def _ordered(self):
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles {list(self.percentiles)}: expected 0 <= low < high <= 100")
        return self


class TaskConfig(_Strict):
    task: str

    @field_validator("task")
    @classmethod
    def _safe_task(cls, v: str) -> str:
        return safe_name(v)
    description: str = ""
    dataset: DatasetConfig
    split: Split = "test"
    models: list[ModelConfig] = Field(min_length=1)
    metrics: MetricsConfig = MetricsConfig()
    curation: CurationConfig = CurationConfig()
    train: TrainConfig | None = Field(None, description="the specialist recipe for `omniseg train`")
    plugins: list[str] = Field(default_factory=list, description="extension modules (dataset kinds, model kinds, "
                                                                 "metrics), paths relative to this file (omniseg.plugins)")
    demo: bool = Field(False, description="a demo task (`omniseg demo`): every heading of its report says so")
    slices: SliceConfig | None = Field(None, description="volume datasets: how 2-D models see them (default: every "
                                                         "axial slice, percentile scaling)")

    # Filled by load(); not a YAML key.
    source: Path | None = Field(None, exclude=True)

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"{self.source}: " + unknown_name("model", name, [m.name for m in self.models]))

    @property
    def slicing(self) -> SliceConfig:
        """How 2-D models see this task's volumes: its `slices` section, or the defaults."""
        return self.slices or SliceConfig()

    @property
    def reference(self) -> str:
        """The curation reference: the configured one, else the first specialist, else the first model."""
        from .models import role_of

        if self.curation.reference:
            return self.curation.reference
        return next((m.name for m in self.models if role_of(m.kind, m.role) == "specialist"), self.models[0].name)

    def fingerprint(self) -> str:
        """sha256 of the validated configuration, recorded with every run."""
        doc = self.model_dump(mode="json")
        if doc.get("slices") is None:  # 2-D tasks keep the fingerprints they had before volumes existed
            doc.pop("slices", None)
        blob = json.dumps(doc, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def format_validation(path: Path, err: ValidationError, prefix: tuple = ()) -> str:
    lines = []
    for e in err.errors():
        key = _where(prefix + tuple(e["loc"]))
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: key '{key}': unknown key")
        elif e["type"] == "missing":
            lines.append(f"{path}: key '{key}': required key is missing")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"{path}: key '{key}': {e['msg']}{shown}")
    return "\n".join(lines)


def load(path: str | Path) -> TaskConfig:
    """Read and validate one task configuration file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          "save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    raw = _load_plugins(path, raw)
    try:
        cfg = TaskConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation(path, e)) from None
    names = [m.name for m in cfg.models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: key 'models': model names must be unique, repeated: {', '.join(dupes)}")
    for key in ("reference", "control"):
        value = getattr(cfg.curation, key)
        if value is not None and value not in names:
            raise ConfigError(f"{path}: key 'curation.{key}': " + unknown_name("model", value, names))
    _validate_plugins(path, cfg)
    if cfg.train is not None:
        from . import models

        kinds = {m.name: m.kind for m in cfg.models}
        if cfg.train.model not in kinds or not models.get(kinds[cfg.train.model]).trainable:
            raise ConfigError(f"{path}: key 'train.model': expected the name of a models entry of a trainable kind, "
                              f"got {cfg.train.model!r} (entries: {', '.join(f'{n} ({k})' for n, k in kinds.items())})")
    return cfg.model_copy(update={"source": path})


def _load_plugins(path: Path, raw: dict) -> dict:
    """Load the extension modules a configuration names (before its kinds are checked); store them absolute."""
    from . import plugins

    listed = raw.get("plugins") or []
    if not isinstance(listed, list):
        raise ConfigError(f"{path}: key 'plugins': expected a list of module paths")
    absolute = []
    for i, p in enumerate(listed):
        full = (path.parent / str(p)).resolve()
        try:
            plugins.load_path(full)
        except ValueError as e:
            raise ConfigError(f"{path}: key 'plugins.{i}': {e}") from None
        absolute.append(str(full))
    return {**raw, "plugins": absolute} if listed else raw


def _validate_plugins(path: Path, cfg: TaskConfig) -> None:
    """Check dataset and model names and their options against the registries."""
    from . import datasets, models
    from .scoring import metrics

    for i, name in enumerate(cfg.metrics.include):
        try:
            metrics.REGISTRY.get(name)
        except KeyError as e:
            raise ConfigError(f"{path}: key 'metrics.include.{i}': {e.args[0]}") from None

    try:
        ds_cls = datasets.get(cfg.dataset.name)
    except KeyError as e:
        raise ConfigError(f"{path}: key 'dataset.name': {e.args[0]}") from None
    try:
        ds_cls.Options.model_validate(cfg.dataset.options)
    except ValidationError as e:
        raise ConfigError(format_validation(path, e, ("dataset", "options"))) from None
    for i, m in enumerate(cfg.models):
        try:
            cls = models.get(m.kind)
        except KeyError as e:
            raise ConfigError(f"{path}: key 'models.{i}.kind': {e.args[0]}") from None
        try:
            cls.Options.model_validate(m.options)
        except ValidationError as e:
            raise ConfigError(format_validation(path, e, ("models", i, "options"))) from None


def builtin_dir() -> Path:
    """The task configurations that ship inside the package (polyp, breast, vessel)."""
    from importlib import resources

    return Path(str(resources.files("omniseg") / "configs"))


def task_files(config_dir: str | Path = "configs") -> dict[str, Path]:
    """Task name -> configuration file: the built-in ones, overridden by ``<config_dir>/*.yaml`` in the
    working directory (so `--task polyp` works from any folder, and a local copy wins)."""
    files = {p.stem: p for p in sorted(builtin_dir().glob("*.yaml"))}
    local = Path(config_dir)
    if local.is_dir():
        files.update({p.stem: p for p in sorted(local.glob("*.yaml"))})
    return files


def find(task: str | None, config: str | Path | None, config_dir: str | Path = "configs") -> TaskConfig:
    """Resolve ``--task``/``--config`` to a loaded configuration."""
    if config is not None:
        cfg = load(config)
        if task is not None and cfg.task != task:
            raise ConfigError(f"{config}: key 'task' is {cfg.task!r} but --task {task!r} was given")
        return cfg
    if task is None:
        raise ConfigError("name a task with --task (or a file with --config)")
    files = task_files(config_dir)
    if task not in files:
        raise ConfigError(unknown_name("task", task, list(files)) + f": no {Path(config_dir) / (task + '.yaml')} here "
                          "and no built-in task of that name (`omniseg init NAME` writes one for your own data)")
    return load(files[task])

"""Extensions from outside the package: dataset kinds, model kinds and metrics.

Two ways in, both registering everything a module defines, so an extension is a plain module:
every :class:`~omniseg.datasets.base.Dataset` subclass (by its ``name``), every
:class:`~omniseg.models.base.Segmenter` subclass (by its ``kind``) and every
:class:`~omniseg.scoring.metrics.Metric` (by its ``name``) defined in it.

* an installed package declares an entry point in the group ``omniseg.plugins`` whose value is the
  module (``[project.entry-points."omniseg.plugins"] mylab = "mylab.omniseg_ext"``); they are loaded
  the first time a registry is used;
* a module file named in a task configuration (``plugins: [path/to/ext.py]``, relative to the file)
  or on the command line (``omniseg --plugin path/to/ext.py ...``).

`omniseg list` shows where each entry came from. An extension that fails to import, or whose names
clash with others, is recorded with its origin and the error (shown by `omniseg list`, and as an
error when a configuration names it); the built-ins keep working.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

GROUP = "omniseg.plugins"

_state = {"entry_points": False}
#: (origin, error) of every extension that could not be loaded
FAILURES: list[tuple[str, str]] = []
_loaded_paths: dict[Path, str] = {}


def register_module(module: ModuleType, origin: str) -> list[str]:
    """Register what ``module`` defines; returns 'what name' strings. Raises ValueError on a clash."""
    from . import datasets, models
    from .scoring import metrics
    from .datasets.base import Dataset
    from .models.base import Segmenter

    added = []
    for obj in vars(module).values():
        if inspect.isclass(obj) and obj.__module__ == module.__name__:
            if issubclass(obj, Dataset) and getattr(obj, "name", None):
                datasets.REGISTRY.add(obj.name, obj, origin)
                added.append(f"dataset {obj.name}")
            elif issubclass(obj, Segmenter) and getattr(obj, "kind", None):
                models.REGISTRY.add(obj.kind, obj, origin)
                added.append(f"model kind {obj.kind}")
        elif isinstance(obj, metrics.Metric):
            if obj.name in metrics.REGISTRY.names() and metrics.REGISTRY.get(obj.name) is obj:
                continue  # one imported to reuse it (`from omniseg.scoring.metrics import DICE`), not a new one
            metrics.REGISTRY.add(obj.name, obj, origin)
            added.append(f"metric {obj.name}")
    return added


def load_entry_points() -> None:
    """Load the installed extensions once; failures are recorded, never raised."""
    if _state["entry_points"]:
        return
    _state["entry_points"] = True
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep.dist, "name", None) or "?"
        origin = f"entry point {ep.name} = {ep.value} (package {dist})"
        try:
            register_module(ep.load(), origin)
        except (Exception, SystemExit) as e:  # one broken extension (even one calling exit) must not take omniseg down
            FAILURES.append((origin, _describe(e)))


def load_path(path: str | Path) -> list[str]:
    """Import a module file and register what it defines (once per file). Raises ValueError with the origin."""
    path = Path(path).resolve()
    if path in _loaded_paths:
        return []
    origin = f"module {path}"
    if not path.is_file():
        raise ValueError(f"{origin}: no such file")
    name = f"omniseg_ext_{abs(hash(str(path))) % 10**8}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        added = register_module(module, origin)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        FAILURES.append((origin, _describe(e)))
        raise ValueError(f"{origin}: {_describe(e)}") from None
    _loaded_paths[path] = origin
    return added


def load_recorded(config: dict) -> None:
    """The extensions a recorded task configuration used (its paths are stored absolute)."""
    for p in config.get("plugins") or []:
        try:
            load_path(p)
        except ValueError:
            pass  # recorded in FAILURES; the names it would provide are reported unknown where used


def _describe(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it called exit({e.code!r}) while being imported"
    return f"{type(e).__name__}: {e}"

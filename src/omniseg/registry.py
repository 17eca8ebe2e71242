"""A small lazy registry: names map to ``"module:attr"`` so importing omniseg imports no plugin.

Built-in entries are listed where each registry is made; extensions add theirs (omniseg.plugins)
with the place they came from, which `omniseg list` shows. An extension may not replace a built-in.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import unknown_name

BUILT_IN = "built-in"


class Registry:
    def __init__(self, what: str, entries: dict[str, str]):
        self.what = what
        self._entries: dict[str, Any] = dict(entries)  # name -> "module:attr" or the object itself
        self._origins = {name: BUILT_IN for name in entries}

    def names(self) -> list[str]:
        _load_plugins()
        return sorted(self._entries)

    def ordered(self) -> list[str]:
        """Names in the order they were registered (built-ins first)."""
        _load_plugins()
        return list(self._entries)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def add(self, name: str, obj: Any, origin: str) -> None:
        """Register an extension's entry; a clash with another entry is refused with both origins."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.what} {name!r} from {origin} clashes with the one from {self._origins[name]}")
        self._entries[name] = obj
        self._origins[name] = origin

    def get(self, name: str):
        """The registered object; KeyError with a did-you-mean message for an unknown name."""
        _load_plugins()
        try:
            target = self._entries[name]
        except KeyError:
            raise KeyError(unknown_name(self.what, name, self.names())) from None
        if not isinstance(target, str):
            return target
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


def _load_plugins() -> None:
    from . import plugins

    plugins.load_entry_points()

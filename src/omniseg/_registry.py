"""A small lazy registry: names map to ``"module:attr"`` so importing omniseg imports no plugin."""

from __future__ import annotations

import importlib

from .errors import unknown_name


class Registry:
    def __init__(self, what: str, entries: dict[str, str]):
        self.what = what
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str):
        """The registered class; KeyError with a did-you-mean message for an unknown name."""
        try:
            target = self._entries[name]
        except KeyError:
            raise KeyError(unknown_name(self.what, name, self.names())) from None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

"""The options convention shared by dataset adapters and model kinds.

A kind's options are one pydantic model: subclass :class:`Options` (frozen, unknown keys refused) and
give each field a default and a description; a kind without options uses :class:`NoOptions`. The
configuration loader validates ``dataset.options`` and every ``models[i].options`` block against the
kind's ``Options`` and reports a problem with the file and the key path (omniseg.config).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Base of every adapter's and model kind's options: frozen, unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    """For kinds that take no options."""

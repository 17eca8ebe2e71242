"""User-facing errors: the CLI prints their message alone, without a traceback."""

from __future__ import annotations

import difflib


class OmnisegError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


class ConfigError(OmnisegError):
    """A configuration file is missing, malformed or invalid."""


class DataMissingError(OmnisegError):
    """A dataset root is absent or does not have the expected layout."""


class SampleError(OmnisegError):
    """One sample cannot be used (unreadable file, missing mask, size mismatch)."""


class EmptyShard(OmnisegError):
    """``--shard K/N`` with no sample in the K-th slice (more shards than samples): nothing to do, which is no
    failure (a job array's merge waits for every task to succeed)."""


class CheckpointError(OmnisegError):
    """A model checkpoint is missing, corrupt or does not fit its configuration."""


class CheckpointMissing(CheckpointError):
    """No file at a model's checkpoint path (the runner, which knows the task, says how to train it)."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"checkpoint {path} not found: train it with `omniseg train`, point options.checkpoint at "
                         "yours, or leave this model out with --models")

    def with_command(self, command: str, others: list[str]) -> "CheckpointMissing":
        """The same error, naming the training command of its task and the models to run without it."""
        self.args = (f"checkpoint {self.path} not found: train it with `{command}`, point options.checkpoint at yours, "
                     "or leave this model out" + (f" with --models {','.join(others)}" if others else ""),)
        return self


def unknown_name(what: str, name: str, known: list[str] | tuple[str, ...]) -> str:
    """'unknown X 'y'; known: a, b (did you mean 'a'?)' for registry look-ups."""
    msg = f"unknown {what} {name!r}; known: {', '.join(sorted(known)) or '(none)'}"
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg

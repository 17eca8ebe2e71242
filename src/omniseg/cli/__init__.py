"""The `omniseg` command line: the Typer app, which registers each command group's commands.

A command module (run, study, review, info, data, api, batch, train) holds plain functions; only this module knows the
app, so none imports it back. What the commands share (options, error handling, store helpers) is
:mod:`.common`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import api, batch, data, info, review, run, study, train

app = typer.Typer(
    help="Benchmark general-purpose omnimodels against specialist networks on medical image segmentation.\n\n"
    "Typical use: `omniseg run --task polyp`, then `omniseg curate --extremes 50`, then `omniseg report`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's lines join into paragraphs (no break in mid-phrase at any width)
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        from ..study.manifest import git_commit

        commit = git_commit()
        typer.echo(f"omniseg {__version__}" + (f" (git {commit})" if commit else ""))
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and the git commit of the source, then exit"),
         plugin: Optional[list[Path]] = typer.Option(None, "--plugin", help="an extension module to load (dataset kinds, model kinds, metrics); repeatable")) -> None:
    """Benchmark general-purpose omnimodels against specialist networks on medical image segmentation."""
    from .. import plugins

    for p in plugin or []:
        try:
            plugins.load_path(p)
        except ValueError as e:
            typer.secho(f"error: --plugin {e}", fg="red", err=True)
            raise typer.Exit(2) from None


app.command()(run.run)
app.command()(run.merge)
app.command()(study.curate)
app.command()(study.report)
app.command()(study.demo)
app.command()(review.review)
app.command("list")(info.list_plugins)
app.command()(data.init)
app.add_typer(data.data_app, name="data")
app.add_typer(data.export_app, name="export")
app.command()(api.redecode)
app.command()(api.probe)
app.command("models")(api.list_api_models)
app.add_typer(batch.batch_app, name="batch")
app.command()(train.train)


def _as_flag(opt):
    """The --help option shown as a flag: Typer prints ``<bool>`` after it, as if it took a value."""
    if opt is not None:
        opt.metavar = ""
    return opt


class _Command(typer.core.TyperCommand):
    def get_help_option(self, ctx):
        return _as_flag(super().get_help_option(ctx))


class _Group(typer.core.TyperGroup):
    def get_help_option(self, ctx):
        return _as_flag(super().get_help_option(ctx))


def _quiet_flags(a: typer.Typer) -> None:
    """Show on/off flags as flags: without a metavar Typer prints ``<bool>`` after ``--force`` (and ``--help``) in
    its column of types, as if they took a value."""
    import inspect

    from typer.models import OptionInfo

    a.info.cls = _Group  # no command group of omniseg's has a class of its own
    callbacks = []
    for c in a.registered_commands:
        c.cls = _Command
        callbacks.append(c.callback)
    if a.registered_callback is not None:
        callbacks.append(a.registered_callback.callback)
    for fn in callbacks:
        for p in inspect.signature(fn).parameters.values():
            kind = str(p.annotation).replace(" ", "")  # the annotations are strings (from __future__ import annotations)
            if isinstance(p.default, OptionInfo) and kind in ("bool", "Optional[bool]", "bool|None", "<class'bool'>") \
                    and p.default.metavar is None:
                p.default.metavar = ""
    for group in a.registered_groups:
        group.cls = _Group
        _quiet_flags(group.typer_instance)


_quiet_flags(app)

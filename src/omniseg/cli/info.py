"""`omniseg list`: the tasks, datasets, model kinds and metrics there are, and where each came from."""

from __future__ import annotations

import typer

from .common import friendly



@friendly
def list_plugins() -> None:
    """List the tasks (and which file configures each), the datasets, model kinds and metrics (and where each comes from)."""
    from .. import datasets, models
    from ..config import builtin_dir, task_files

    builtin = builtin_dir().resolve()
    typer.echo("tasks:")
    for name, path in task_files().items():
        where = "built-in" if path.resolve().parent == builtin else "this folder's configs/"
        typer.echo(f"  {name:12s} {path}  ({where})")
    from ..scoring import metrics
    from .. import plugins
    from ..models.base import ROLES

    for title, reg, describe in (("datasets", datasets.REGISTRY, lambda c: ""),
                                 ("model kinds", models.REGISTRY, lambda c: f"role {c.role}"),
                                 ("metrics", metrics.REGISTRY, lambda m: m.description + (" (opt-in)" if m.opt_in else ""))):
        typer.echo(f"{title}:")
        wide = max([12, *map(len, reg.names())])
        for name in reg.names():
            try:
                what = describe(reg.get(name))
            except Exception as e:  # a broken entry is shown, not fatal
                what = f"cannot load: {type(e).__name__}: {e}"
            typer.echo(f"  {name:{wide}s} {what:44s} {reg.origin(name)}")
    typer.echo("roles: " + "; ".join(f"{r}: {d}" for r, d in ROLES.items()))
    for origin, error in plugins.FAILURES:
        typer.secho(f"extension not loaded: {origin}: {error}", fg="yellow")

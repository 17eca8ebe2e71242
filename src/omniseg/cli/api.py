"""The commands for API models: `omniseg probe`, `omniseg models`, `omniseg redecode` (registered on the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import ConfigOpt, StoreOpt, TaskOpt, existing_store, friendly, store_path


@friendly
def redecode(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="only this task (default: every task in the store)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="only this API model (default: all of them)"),
    everything: bool = typer.Option(False, "--all", help="also rows already decoded by today's decoder version"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding the recorded root"),
    store: Optional[Path] = StoreOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Decode the kept raw API answers again with today's decoders and rescore them: no API call.

    Run it after upgrading omniseg when its decoders changed (rows record the decoder version that
    read them); it resumes where a killed redecode stopped."""
    from ..inference.redecode import redecode as redecode_rows

    with existing_store(store) as st:
        results = redecode_rows(st, task=task, model=model, data_root=data_root, everything=everything,
                                progress=not quiet)
    for r in results:
        moved = ", ".join(f"{a} -> {b}: {n}" for (a, b), n in sorted(r.transitions.items()) if a != b) or "no status changed"
        typer.echo(f"{r.task}/{r.model}: {r.rewritten} of {r.rows} rows decoded again ({moved}); "
                   f"{r.without_answer} without a kept answer; 0 API calls")
    if not results:
        typer.echo("no API model results in the store")


@friendly
def probe(
    task: Optional[str] = TaskOpt,
    config: Optional[Path] = ConfigOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="the API model entry to ask (default: the config's first)"),
    n: int = typer.Option(3, "-n", min=1, help="how many images to ask about"),
    out: Path = typer.Option(Path("runs") / "probe", "--out", "-o", help="folder for the image | reference | prediction strips"),
    split: Optional[str] = typer.Option(None, help="train, test or all (default: the config's split)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset folder, overriding dataset.root"),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Ask the live API about a few images and show what it answers today, before paying for a dataset.

    Per answer: the model version the API reports, the answer form detected, the start of the raw text,
    the mask's area and Dice against the reference, tokens, latency and cost. The answers are archived,
    so the following `omniseg run` does not pay for them again; nothing is written to the store."""
    from .. import config as config_mod
    from ..inference.probe import probe as probe_model

    cfg = config_mod.find(task, config)
    rows = probe_model(cfg, model=model, n=n, store_root=store_path(store).parent, out=out, data_root=data_root,
                       split=split)

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    typer.echo(f"{'sample':28s} {'status':18s} {'model version':24s} {'form':16s} {'area':>6s} {'Dice':>6s} "
               f"{'tok in':>7s} {'tok out':>7s} {'sec':>6s} {'USD':>8s}  answer")
    for r in rows:
        typer.echo(f"{r['sample_id'][:28]:28s} {r['status']:18s} {str(r['model_version'])[:24]:24s} {r['form'][:16]:16s} "
                   f"{f(r['area'], '6.3f')} {f(r['dice'], '6.3f')} {f(r['tokens_in'], '7d')} {f(r['tokens_out'], '7d')} "
                   f"{f(r['latency_s'], '6.2f')} {f(r['cost_usd'], '8.5f')}  {r['answer']}")
    typer.echo(f"strips: {out}/  (image | reference | prediction)")


@friendly
def list_api_models(
    config_dir: Path = typer.Option(Path("configs"), "--config-dir", help="configurations whose gemini models are marked"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="API endpoint (default: Google's)"),
    api_version: str = typer.Option("v1beta", "--api-version", help="REST API version"),
) -> None:
    """List the Gemini models your API key can reach; * marks those the configurations use."""
    import yaml

    from ..models.api.gemini.model import GeminiOptions
    from ..inference.probe import reachable_models

    used: dict[str, list[str]] = {}
    for path in sorted(config_dir.glob("*.yaml")) if config_dir.is_dir() else []:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for m in raw.get("models") or []:
            if isinstance(m, dict) and _is_gemini(m.get("kind")):
                name = (m.get("options") or {}).get("model", GeminiOptions.model_fields["model"].default)
                used.setdefault(name, []).append(f"{path.stem}:{m.get('name')}")
    names = reachable_models(GeminiOptions(base_url=base_url, api_version=api_version))
    for name in names:
        typer.echo(f"{'*' if name in used else ' '} {name:40s} {', '.join(used.get(name, []))}")
    for name in sorted(set(used) - set(names)):
        typer.secho(f"! {name:40s} {', '.join(used[name])}: used by a configuration but not reachable with this key",
                    fg="yellow")


def _is_gemini(kind) -> bool:
    from .. import models
    from ..models.api.gemini.model import Gemini

    try:
        return isinstance(kind, str) and issubclass(models.get(kind), Gemini)
    except KeyError:
        return False

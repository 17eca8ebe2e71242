"""What a report says before its numbers, so that it never says more than they allow.

* **where the answers came from**: an API model answered by another endpoint than its provider's (a local
  server, omniseg's stand-in, a proxy) is named, since its numbers are that server's;
* **a demo**: a task marked ``demo: true`` (`omniseg demo`) is labelled as such in every heading;
* **the floors**: a specialist or omnimodel whose mean Dice does not beat every floor (training-free
  references such as ``ellipse``) is flagged: its comparisons say little;
* **small samples**: below :data:`omniseg.study.stats.MIN_N` images an interval or a claim's verdict is not printed
  at all (a bootstrap interval of 2 images is not an interval); the report's tables and claims do that.
"""

from __future__ import annotations

import pandas as pd

from ..store import results, runs as store_runs
from ..store.database import Store



def is_demo(store: Store, task: str) -> bool:
    return bool((store_runs.last_config(store, task) or {}).get("demo"))


def demo_tag(store: Store, task: str) -> str:
    """What every heading of a demo task's report ends with: that it is a demo, and which model answered from a
    stand-in (an endpoint not its provider's); '' for a study."""
    if not is_demo(store, task):
        return ""
    stand_ins = sorted(endpoints(store, task))
    return " (demo" + (f"; {', '.join(f'`{m}`' for m in stand_ins)} answered by a local stand-in" if stand_ins else "") + ")"


def endpoints(store: Store, task: str) -> dict[str, list[str]]:
    """API model -> the endpoints its answers came from that are not its provider's default."""
    from .. import models

    kinds = store_runs.kinds(store, task)
    rows = results.endpoints(store, task)
    out: dict[str, list[str]] = {}
    for model, url in rows:
        try:
            default = getattr(getattr(models.get(kinds.get(model, "")), "Api", None), "default_endpoint", "")
        except KeyError:
            default = ""
        if url and url.rstrip("/") != default.rstrip("/"):
            out.setdefault(model, []).append(url)
    return out


def floor_failures(summary: pd.DataFrame, roles: dict[str, str],
                   privileged: set[str] = frozenset()) -> list[tuple[str, str, float, str, float]]:
    """(model, role, its Dice, the best floor, that floor's Dice) for every specialist or omnimodel whose mean
    Dice on the whole split is not above every floor's (a privileged model is no contender: left out)."""
    part = summary[summary["subset"] == "all"].set_index("model")["dice_mean"]
    floors = {m: v for m, v in part.items() if roles.get(m) == "floor" and pd.notna(v)}
    if not floors:
        return []
    best = max(floors, key=lambda m: (floors[m], m))
    return [(m, roles[m], float(v), best, float(floors[best])) for m, v in part.items()
            if roles.get(m) in ("specialist", "omnimodel", "foundation") and m not in privileged and pd.notna(v)
            and v <= floors[best]]


def lines(store: Store, task: str, summary: pd.DataFrame) -> list[str]:
    """The task's cautions for report.md (and report.html), most important first; empty when there are none."""
    out = []
    if is_demo(store, task):
        out.append(f"**Demo.** Task `{task}` is `omniseg demo`'s: a small dataset, a briefly trained specialist and "
                   "a stand-in for the omnimodel. Every number below shows what the tool does, not what any model can.")
    for model, urls in endpoints(store, task).items():
        out.append(f"**`{model}` did not answer from its provider's API** but from {', '.join(f'`{u}`' for u in urls)}: "
                   "its numbers are that server's (a local model, a proxy, or omniseg's stand-in), not the provider's.")
    for model, role, dice, floor, floor_dice in floor_failures(summary, store_runs.roles(store, task), store_runs.privileged(store, task)):
        out.append(f"**The {role} `{model}` does not beat the floor `{floor}`** (Dice {dice:.3f} against {floor_dice:.3f} "
                   "on the whole split): a training-free reference does as well, so its comparisons say little "
                   "(an undertrained specialist, a wrong prompt, a broken decoder?).")
    return out


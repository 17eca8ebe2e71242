"""Is the specialist one? Its training record and its test Dice beside published figures, stated first.

Every conclusion "the omnimodel beats the specialist" is worth only as much as the specialist: one stopped 80%
into its first epoch is no specialist. The report's first lines say when a specialist was cut short by its time
budget or scores below the published range for its dataset (docs/specialists.md has the table and its sources);
for other datasets only the training record can be judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..store.database import Store
from ..store import runs as store_runs
from .document import Block, Paragraph, table

#: dataset -> (U-Net test Dice published, its source); docs/specialists.md lists them
PUBLISHED = {
    "kvasir-seg": (0.824, "U-Net in MedSAM-3, arXiv 2511.19046"),
    "busi": (0.76, "U-Net on BUSI as cited in omniseg issue 39 (the paper you compare with may report another)"),
}
#: how far below the published figure a specialist may score and still count as trained (split and recipe vary)
MARGIN = 0.05


@dataclass
class Record:
    task: str
    model: str
    epochs_done: int | None
    epochs_planned: int | None
    stopped: str | None  # "epochs" (the plan ran to its end) or "time budget"
    val_dice: float | None
    minutes: float | None
    test_dice: float | None
    published: float | None
    source: str | None

    @property
    def cut_short(self) -> bool:
        return self.stopped == "time budget" and (self.epochs_planned is None or self.epochs_done is None
                                                  or self.epochs_done < self.epochs_planned)

    @property
    def below_published(self) -> bool:
        return self.published is not None and self.test_dice is not None and \
            self.test_dice < self.published - MARGIN

    @property
    def adequate(self) -> bool:
        return not (self.cut_short or self.below_published)

    def why(self) -> str:
        parts = []
        if self.cut_short:
            parts.append(f"its time budget stopped training after {self.epochs_done} of {self.epochs_planned} planned "
                         f"epochs (validation Dice {_f(self.val_dice)})")
        if self.below_published:
            parts.append(f"its test Dice {_f(self.test_dice)} is below the published {self.published:.3f} "
                         f"({self.source}; more than {MARGIN} below counts)")
        return " and ".join(parts)


def _f(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def records(store: Store, task: str, specialists: list[str], summary: pd.DataFrame) -> list[Record]:
    """The training record and test Dice of each specialist of the task."""
    sigs = store_runs.signatures(store, task)
    dataset = ((store_runs.last_config(store, task) or {}).get("dataset") or {}).get("name")
    published, source = PUBLISHED.get(dataset, (None, None))
    out = []
    for m in specialists:
        tr = (sigs.get(m) or {}).get("training") or {}
        row = summary[(summary["task"] == task) & (summary["subset"] == "all") & (summary["model"] == m)]
        test = float(row["dice_mean"].iloc[0]) if len(row) else None
        out.append(Record(task, m, tr.get("epochs_done", tr.get("epoch")), tr.get("epochs_planned"), tr.get("stopped"),
                          tr.get("val_dice"), tr.get("minutes_total", tr.get("minutes")), test, published, source))
    return out


def top_blocks(recs: list[Record]) -> list[Block]:
    """What the report's first blocks say: each undertrained specialist, then every specialist's record."""
    if not recs:
        return []
    out: list[Block] = [Paragraph(f"**Undertrained specialist**: `{r.model}` ({r.task}): {r.why()}. Every comparison "
                                  "against it says little about what a specialist can do; the Findings below are "
                                  "marked.") for r in recs if not r.adequate]
    rows = []
    for r in recs:
        done = "no training record" if r.epochs_done is None else f"{r.epochs_done} / {r.epochs_planned or '?'}"
        stop = {"epochs": "its plan", "time budget": "time budget"}.get(r.stopped or "", "–")
        pub = "–" if r.published is None else f"{r.published:.3f} ({r.source})"
        mins = "–" if r.minutes is None else f"{r.minutes:.1f}"
        rows.append([r.task, r.model, done, stop, _f(r.val_dice), mins, _f(r.test_dice), pub])
    return out + [table(["task", "specialist", "epochs (done / planned)", "stopped by", "validation Dice", "minutes",
                         "test Dice", "published U-Net Dice"], rows, "llllrrrl")]

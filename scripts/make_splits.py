"""Write the committed train/test lists in src/omniseg/splits/ from the split rule.

Run once per dataset release; the lists are what `omniseg` reads, and tests check that
they still agree with the rule in omniseg.datasets.base.rank_split.

    python scripts/make_splits.py --kvasir ../shared/data/kvasir-seg/Kvasir-SEG
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omniseg.datasets.base import rank_split

OUT = Path(__file__).resolve().parents[1] / "src" / "omniseg" / "splits"
# The full BUSI release names its cases "<class> (N)" with N = 1..count.
BUSI_COUNTS = {"benign": 437, "malignant": 210, "normal": 133}


def write(name: str, table: dict[str, str], how: str) -> None:
    lines = [f"# {name}: train/test split written by scripts/make_splits.py ({how})"]
    lines += [f"{sid}\t{split}" for sid, split in sorted(table.items())]
    (OUT / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    n_test = sum(v == "test" for v in table.values())
    print(f"{name}: {len(table) - n_test} train / {n_test} test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvasir", type=Path, required=True, help="Kvasir-SEG root (with images/)")
    args = ap.parse_args()
    ids = sorted(p.stem for p in (args.kvasir / "images").glob("*.jpg"))
    write("kvasir-seg", rank_split(ids), "lowest-hashing 20% of the 1000 ids")
    busi: dict[str, str] = {}
    for cls, n in BUSI_COUNTS.items():
        busi.update(rank_split([f"{cls} ({i})" for i in range(1, n + 1)], group=cls))
    write("busi", busi, "lowest-hashing 20% of each class of the full release")


if __name__ == "__main__":
    main()

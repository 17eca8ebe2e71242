"""The mutation score per module from `mutmut results --all true` on standard input (scripts/mutation.sh).

A mutant counts as killed when a test failed on it or it timed out; the equivalent mutants listed in
scripts/mutation_equivalent.txt (`name  reason`, one a line; docs/testing.md) leave the count, and so do those
found by reading the mutated source whose only change is the letter case of an SQL string. Prints one row
per module, the total, and the survivors still to look at; exit 1 when the total is under --goal (90%) or
when the run did not reach every mutant (the score then covers those it tested).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import Counter, defaultdict
from fnmatch import fnmatch
from pathlib import Path

EQUIVALENT = Path(__file__).with_name("mutation_equivalent.txt")
KILLED = {"killed", "timeout"}
NOT_RUN = "not checked"  # mutmut's word for a mutant the run did not reach (stopped early)


def equivalents() -> dict[str, str]:
    out = {}
    for line in EQUIVALENT.read_text().splitlines() if EQUIVALENT.is_file() else []:
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.strip().partition(" ")
            out[name] = reason.strip()
    return out


SQL = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|WITH|PRAGMA|REPLACE|ALTER|DROP|AND|OR|WHERE|ORDER|GROUP|JOIN|LEFT)\b",
                 re.I)  # a statement, or a clause added to one
_trees: dict[Path, dict[str, ast.FunctionDef]] = {}


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    if path not in _trees:
        tree = ast.parse(path.read_text()) if path.is_file() else ast.Module(body=[], type_ignores=[])
        _trees[path] = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return _trees[path]


def sql_case_only(mutant: str, mutants_dir: Path) -> bool:
    """True when the mutant differs from its original only in the letter case of one SQL string, outside its
    quoted values: SQLite reads keywords and names case-insensitively, so no test can tell them apart."""
    module = module_of(mutant)
    func = mutant[len(module) + 1:]
    funcs = _functions(mutants_dir / "src" / Path(*module.split(".")).with_suffix(".py"))
    mut, orig = funcs.get(func), funcs.get(re.sub(r"__mutmut_\d+$", "__mutmut_orig", func))
    if mut is None or orig is None:
        return False
    a, b = list(ast.walk(orig)), list(ast.walk(mut))
    if len(a) != len(b):
        return False
    changed = []
    for x, y in zip(a, b):
        if type(x) is not type(y):
            return False
        if isinstance(x, ast.Constant):
            if x.value != y.value:
                changed.append((x.value, y.value))
        elif x is not orig and any(getattr(x, f, None) != getattr(y, f, None) for f in ("id", "attr", "arg", "name")):
            return False
    if len(changed) != 1 or not all(isinstance(v, str) for v in changed[0]):
        return False
    before, after = changed[0]
    quoted = re.compile(r"'[^']*'")
    return bool(SQL.match(before)) and before.lower() == after.lower() and quoted.findall(before) == quoted.findall(after)


def module_of(mutant: str) -> str:
    """omniseg.scoring.metrics.x_dice__mutmut_3 -> omniseg.scoring.metrics (methods are x\u01c1Class\u01c1name__mutmut_N)."""
    return re.split(r"\.x[_\u01c1]", mutant, maxsplit=1)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=None, help="the run's time, for the printout")
    ap.add_argument("--goal", type=float, default=90.0)
    ap.add_argument("--mutants", type=Path, default=Path("mutants"),
                    help="mutmut's folder, read to find the mutants that only change the case of SQL")
    ap.add_argument("--module", action="append", default=[], metavar="GLOB",
                    help="only these modules (fnmatch patterns such as 'omniseg.store.merge' or 'omniseg.study.review.*'; "
                         "repeatable): the score of a run over part of the list")
    args = ap.parse_args(argv)

    def wanted(name: str) -> bool:
        return not args.module or any(fnmatch(module_of(name), g) for g in args.module)

    eq = equivalents()
    status: dict[str, str] = {}
    for line in sys.stdin:
        name, sep, st = line.strip().rpartition(": ")
        if sep and name.startswith("omniseg.") and wanted(name):
            status[name] = st.strip()
    if not status:
        print("no mutants in the input: run `mutmut run` first (scripts/mutation.sh)")
        return 1
    sql_case = {n for n, st in status.items() if st not in KILLED and n not in eq and sql_case_only(n, args.mutants)}
    per: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    moved = sorted(n for n in eq if status.get(n) in KILLED)  # a test kills it: the listing names another mutant now
    for name, st in sorted(status.items()):
        kind = "killed" if st in KILLED else "equivalent" if name in eq or name in sql_case else st
        per[module_of(name)][kind] += 1
        if kind not in ("killed", "equivalent", NOT_RUN):
            survivors.append((name, st))
    total = Counter()
    print(f"{'module':34s} {'mutants':>7s} {'equiv.':>6s} {'not run':>7s} {'killed':>6s} {'other':>6s} {'score':>7s}")
    for module, c in sorted(per.items()):
        total.update(c)
        counted = sum(c.values()) - c["equivalent"] - c[NOT_RUN]
        other = counted - c["killed"]
        print(f"{module:34s} {sum(c.values()):7d} {c['equivalent']:6d} {c[NOT_RUN]:7d} {c['killed']:6d} {other:6d} "
              + (f"{100 * c['killed'] / counted:6.1f}%" if counted else "      –"))
    counted = sum(total.values()) - total["equivalent"] - total[NOT_RUN]
    score = 100 * total["killed"] / max(counted, 1)
    stale = sorted(n for n in set(eq) - set(status) if wanted(n))
    print(f"{'all':34s} {sum(total.values()):7d} {total['equivalent']:6d} {total[NOT_RUN]:7d} {total['killed']:6d} "
          f"{counted - total['killed']:6d} {score:6.1f}%" + (f"  in {args.minutes:.1f} min" if args.minutes else ""))
    print(f"\nmutation score: {total['killed']}/{counted} = {score:.1f}% of non-equivalent mutants "
          f"({total['equivalent']} equivalent: {len(sql_case)} change only the case of SQL, the rest are listed in "
          f"{EQUIVALENT.name})")
    if survivors:
        print(f"\n{len(survivors)} not killed (`mutmut show NAME`):")
        for name, st in survivors:
            print(f"  {st:10s} {name}")
    if moved:
        print(f"\n{len(moved)} listed as equivalent but killed, counted as killed (mutmut numbers a function's mutants "
              f"in order, so a new mutant before them moves the names: list them again): {', '.join(moved[:10])}")
    if stale:
        print(f"\n{len(stale)} listed as equivalent but no longer generated (remove them): {', '.join(stale[:10])}")
    if total[NOT_RUN]:
        print(f"\nthe run did not finish: {total[NOT_RUN]} mutants not tested (`mutmut run` again goes on where it "
              "stopped); the score covers only those tested")
        return 1
    return 0 if score >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())

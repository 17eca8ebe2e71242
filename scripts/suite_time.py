"""Where the test suite's time goes: wall and CPU seconds per test, to tell work from waiting.

A pytest plugin and its report. Each test's wall time and the CPU time of its process (children it waited for
included) go to one JSON line per test; a test whose wall time far exceeds its CPU time is waiting (a poll
interval, a server's shutdown, a browser's retry), one whose CPU time is large is working. This is what found
the half-second waits at the end of every fake-server test and after each key of the browser tests
(docs/testing.md, "Where the suite's time goes").

    PYTHONPATH=scripts python -m pytest -q -n 2 -p suite_time     # writes .suite_time/*.jsonl
    python scripts/suite_time.py                                   # the summary: most waiting, most working
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import pytest

OUT = Path(os.environ.get("OMNISEG_SUITE_TIME", ".suite_time"))


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall, cpu = time.monotonic(), _cpu()
    yield
    OUT.mkdir(exist_ok=True)
    with open(OUT / f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps({"id": item.nodeid, "wall": time.monotonic() - wall, "cpu": _cpu() - cpu}) + "\n")


def main(folder: Path = OUT, top: int = 15) -> int:
    rows = [json.loads(line) for p in sorted(folder.glob("*.jsonl")) for line in p.read_text().splitlines()]
    if not rows:
        print(f"no timings under {folder}: run pytest with -p suite_time first", file=sys.stderr)
        return 1
    wall, cpu = sum(r["wall"] for r in rows), sum(r["cpu"] for r in rows)
    print(f"{len(rows)} tests: {wall:.0f} s wall, {cpu:.0f} s CPU in all ({cpu / 60:.1f} CPU minutes)")
    for title, key in (("waiting most (wall - CPU)", lambda r: r["wall"] - r["cpu"]), ("working most (CPU)", lambda r: r["cpu"])):
        print(f"\n{title}:")
        for r in sorted(rows, key=key, reverse=True)[:top]:
            print(f"  {r['wall']:7.1f} s wall {r['cpu']:7.1f} s CPU  {r['id']}")
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))

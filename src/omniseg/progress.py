"""Progress bars: tqdm's on a terminal; elsewhere (a file, a CI log) a short line every few seconds.

tqdm redraws its line with carriage returns, which a log file keeps as one line per refresh. When
stderr is not a terminal, :func:`bar` prints a whole line at most every :data:`LOG_INTERVAL_S`
seconds (and at the end) instead.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


class _LogLines(tqdm):
    """A tqdm that writes one complete line per refresh (never a carriage return)."""

    def display(self, msg=None, pos=None):
        line = (self.__str__() if msg is None else msg).strip()
        if line:
            self.fp.write(line + "\n")
            self.fp.flush()
        return True


def bar(iterable=None, *, disable: bool = False, **kw) -> tqdm:
    """A progress bar over ``iterable`` (or with ``total=``), fit for a terminal or a log file."""
    if disable:
        return tqdm(iterable, disable=True, **kw)
    if sys.stderr.isatty():
        return tqdm(iterable, dynamic_ncols=True, **kw)
    return _LogLines(iterable, mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ncols=100, ascii=True,
                     file=sys.stderr, **kw)

"""The report as a document: typed blocks (headings, paragraphs, bullet lists, tables, figures) that each renderer
draws in its own format. report.md and report.html are two renderings of one list of blocks; neither is made from
the other.

Text in a block may mark `code` and **bold**, the two inline styles the report uses; :func:`spans` splits them,
so a renderer escapes the text for its format and styles the pieces (no renderer parses Markdown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Union


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2  # 1: the report's title, 2: a task, 3: a part of a task
    kind: ClassVar[str] = "heading"


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: ClassVar[str] = "paragraph"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    kind: ClassVar[str] = "bullets"


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # per column: right-aligned figures
    kind: ClassVar[str] = "table"

    def __post_init__(self):
        if len(self.numeric) != len(self.header) or any(len(r) != len(self.header) for r in self.rows):
            raise ValueError(f"a table's rows and alignment must have its header's {len(self.header)} columns")


@dataclass(frozen=True)
class Figure:
    """A picture under the report's ``figures/`` folder; ``draw(path)`` makes it (run only when figures are
    written). Figures that follow one another form one gallery."""

    name: str
    alt: str
    draw: Callable[[Path], object] | None = field(default=None, compare=False, repr=False)
    kind: ClassVar[str] = "figure"


Block = Union[Heading, Paragraph, Bullets, Table, Figure]


def table(header: list[str], rows: list[list[str]], numeric: str) -> Table:
    """A table from its header, its rows and a string of 'l'/'r' per column (r: right-aligned figures)."""
    return Table(tuple(header), tuple(tuple(str(c) for c in r) for r in rows), tuple(c == "r" for c in numeric))


_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def spans(text: str) -> list[tuple[str, str]]:
    """``text`` as (style, piece) pairs in order: style '' (plain), 'code', 'bold' or 'bold code' (code inside
    bold). Code is literal: nothing inside backticks is styled."""
    out: list[tuple[str, str]] = []
    for style, piece in _split(_INLINE, text, lambda m: "code" if m.group(1) is not None else "bold"):
        if style == "bold":
            out += [("bold" if inner == "" else "bold code", part) for inner, part in _split(_CODE, piece, lambda m: "code")]
        else:
            out.append((style, piece))
    return out


def _split(pattern: re.Pattern, text: str, style_of) -> list[tuple[str, str]]:
    """``text`` cut at ``pattern``'s matches: the plain runs between them ('') and each match's first non-empty
    group, styled by ``style_of(match)``."""
    out, at = [], 0
    for m in pattern.finditer(text):
        if m.start() > at:
            out.append(("", text[at:m.start()]))
        out.append((style_of(m), next(g for g in m.groups() if g is not None)))
        at = m.end()
    if at < len(text):
        out.append(("", text[at:]))
    return out


def markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown: one blank line between blocks, figures of one gallery on consecutive lines."""
    lines: list[str] = []
    prev = None
    for b in blocks:
        if lines and not (isinstance(b, Figure) and isinstance(prev, Figure)):
            lines.append("")
        lines += _markdown(b)
        prev = b
    return "\n".join(lines) + "\n"


def _markdown(b: Block) -> list[str]:
    if isinstance(b, Heading):
        return ["#" * b.level + " " + b.text]
    if isinstance(b, Paragraph):
        return [b.text]
    if isinstance(b, Bullets):
        return [f"- {item}" for item in b.items]
    if isinstance(b, Table):
        return [_row(b.header), "|" + "".join("---:|" if n else "---|" for n in b.numeric), *map(_row, b.rows)]
    return [f"![{b.alt}](figures/{b.name})"]


def _row(cells) -> str:
    return "|" + "".join(f" {c} |" if c else " |" for c in cells)

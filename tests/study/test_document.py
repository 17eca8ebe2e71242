"""The report's document model: one list of typed blocks, rendered as report.md and as report.html (never one
from the other)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

from omniseg.cli import app
from omniseg.store.database import Store
from omniseg.study import document, report
from omniseg.study.document import Bullets, Figure, Heading, Paragraph, spans, table
from omniseg.study.report_html import inline

from conftest import make_kvasir, write_config


def test_spans_split_code_and_bold_and_keep_every_character():
    text = "**The omnimodel `omni` does not beat** the floor `a**b` and `<x>` **x**"
    got = spans(text)
    assert got == [("bold", "The omnimodel "), ("bold code", "omni"), ("bold", " does not beat"),
                   ("", " the floor "), ("code", "a**b"), ("", " and "), ("code", "<x>"), ("", " "), ("bold", "x")]
    assert spans("plain") == [("", "plain")] and spans("") == []


@given(st.text(alphabet="ab `*<&>", max_size=30))
def test_spans_lose_no_text_and_inline_html_escapes_all_of_it(text):
    pieces = spans(text)
    plain = "".join(p for _, p in pieces)
    markers = re.sub(r"`([^`]+)`|\*\*(.+?)\*\*", lambda m: m.group(1) or m.group(2), text)
    assert plain.replace("`", "") == markers.replace("`", "")  # only the markers go
    html = str(inline(text))
    assert "<" not in re.sub(r"</?(b|code)>", "", html)  # every < of the text escaped; only our tags
    assert html.count("<b>") == html.count("</b>") and html.count("<code>") == html.count("</code>")


def test_markdown_puts_one_blank_line_between_blocks_and_a_gallery_on_consecutive_lines():
    blocks = [Heading("polyp", 2), Paragraph("Read `this`."), Bullets(("one", "**two**")),
              table(["model", "n", "Dice"], [["a", 3, "0.500"], ["", 1, "–"]], "lrr"),
              Figure("a.png", "first"), Figure("b.png", "second"), Paragraph("(after)")]
    assert document.markdown(blocks) == (
        "## polyp\n\nRead `this`.\n\n- one\n- **two**\n\n| model | n | Dice |\n|---|---:|---:|\n| a | 3 | 0.500 |\n"
        "| | 1 | – |\n\n![first](figures/a.png)\n![second](figures/b.png)\n\n(after)\n")


def test_a_table_whose_rows_do_not_match_its_header_is_refused():
    with pytest.raises(ValueError, match="3 columns"):
        table(["a", "b", "c"], [["1", "2"]], "lrr")


class _Outline(HTMLParser):
    """Headings, paragraphs, list items and table rows of an HTML page, as the reader sees their text."""

    def __init__(self):
        super().__init__()
        self.items, self._tag, self._text, self.tables = [], None, "", 0

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3", "h4", "p", "li", "tr"):
            self._tag, self._text = tag, ""
        elif tag == "td" or tag == "th":
            self._text += "|"
        elif tag == "table":
            self.tables += 1
        elif tag == "img" and self._tag == "p":
            self._text += "img:" + dict(attrs)["src"]

    def handle_endtag(self, tag):
        if tag == self._tag:
            self.items.append((tag, self._text.strip()))
            self._tag = None

    def handle_data(self, data):
        if self._tag:
            self._text += data


def _expected(blocks) -> list[tuple[str, str]]:
    out = []
    plain = lambda text: "".join(p for _, p in spans(text))  # noqa: E731
    for b in blocks:
        if isinstance(b, Heading):
            out.append((f"h{min(b.level, 4)}", plain(b.text)))
        elif isinstance(b, Paragraph):
            out.append(("p", plain(b.text)))
        elif isinstance(b, Bullets):
            out += [("li", plain(i)) for i in b.items]
        elif isinstance(b, Figure):
            out.append(("p", f"img:figures/{b.name}"))
        else:
            out += [("tr", "".join("|" + plain(c) for c in row)) for row in (b.header, *b.rows)]
    return out


def test_report_html_draws_the_reports_blocks_in_order_with_every_table_cell(tmp_path):
    """report.html's task sections are the Report's blocks, each drawn from its type: the same headings,
    paragraphs, list items and table cells in the same order as the document report.md renders."""
    models = ("  - name: spec\n    kind: otsu\n    role: specialist\n    options: {foreground: bright}\n"
              "  - name: omni\n    kind: ellipse\n    role: omnimodel\n    options: {radius: 0.2}\n")
    root = make_kvasir(tmp_path / "k", n=14)
    cfg = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models, "curation:\n  reference: spec\n")
    store = tmp_path / "s.sqlite"
    for args in (["run", "--config", cfg, "--store", store, "-q"], ["curate", "--store", store, "-n", "3", "-q"]):
        assert CliRunner().invoke(app, [str(a) for a in args]).exit_code == 0
    with Store(store) as st_:
        rep = report.build_report(st_, report.ReportOptions(split="all", figures=False))
        paths = report.write(st_, tmp_path / "rep", split="all", figures=False)
    blocks = rep.sections["polyp"]
    assert any(isinstance(b, document.Table) for b in blocks) and any(isinstance(b, Bullets) for b in blocks)
    html = paths["html"].read_text()
    section = html[html.index('<section class="task"'):html.index("</section>")]
    outline = _Outline()
    outline.feed(section)
    assert outline.items == _expected(blocks)
    assert outline.tables == sum(isinstance(b, document.Table) for b in blocks)
    assert paths["markdown"].read_text() == document.markdown(rep.blocks())

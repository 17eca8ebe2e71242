"""The exported review page: opened from file:// with no server and no network, answered with the keyboard,
resumed after a reload (the browser keeps the answers), and its CSV imported back into the same rows; an import
is checked against the item list before anything is written."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import planted_study as ps
from omniseg.cli import app
from omniseg.errors import OmnisegError
from omniseg.store.database import Store
from omniseg.study.review import items, page

VERDICT = {"1": "finding", "2": "model_wrong", "3": "annotation_wrong", "4": "cannot_tell"}


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_exported_page_works_from_disk_and_its_csv_imports_back(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    st, planted = ps.make(tmp_path, n=20)
    store_path = st.path
    st.close()
    out = _cli("review", "--task", "polyp", "--max", "12", "--store", store_path, "-q")
    assert "polyp: 12 review items" in out and "--reviewer NAME" in out
    out = _cli("review", "--task", "polyp", "--max", "12", "--reviewer", "bob", "--order-seed", "5",
               "--export", tmp_path / "out", "--store", store_path, "-q")
    html_path = tmp_path / "out" / "review-polyp-bob.html"
    assert str(html_path) in out.replace("\n", "")
    html = html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # nothing to fetch from anywhere
    for name in (ps.SPEC, ps.OMNI, "masks", "specialist", "omnimodel"):
        assert name not in html
    with Store(store_path) as s:
        _, order = items.order(s, "polyp", "bob")
        kinds = {i: it["side"] for i, it in items.load(s, "polyp").items()}
    showing = lambda d: d.find_element("id", "viewer").get_attribute("data-item")  # noqa: E731

    browser.get(html_path.as_uri())
    WebDriverWait(browser, 30, poll_frequency=0.02).until(lambda d: showing(d) == order[0])
    pressed = {}
    keys = "1234"
    for k in range(12):
        if k == 7:  # the browser is closed and opened again: the page resumes where it was
            browser.get(html_path.as_uri())
            WebDriverWait(browser, 30, poll_frequency=0.02).until(lambda d: showing(d) == order[7])
            assert browser.find_element("id", "progress").text.startswith("item 8 of 12 · 7 answered")
        key = keys[k % 4] if kinds[order[k]] == "model-only" or keys[k % 4] != "1" else "2"
        pressed[order[k]] = VERDICT[key]
        ActionChains(browser).send_keys(key).perform()
        last = k == 11
        WebDriverWait(browser, 30, poll_frequency=0.02).until(
            lambda d, k=k: d.find_element("id", "done").is_displayed() if last else showing(d) == order[k + 1])
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith("data:") for u in resources)  # no request left the page
    assert browser.find_element("id", "download").is_displayed()
    csv_text = browser.execute_script("return omnisegCsv()")
    csv_path = tmp_path / "bob.csv"
    csv_path.write_text(csv_text, newline="")
    out = _cli("review", "--import", csv_path, "--store", store_path)
    assert "polyp: 12 answers imported" in out
    with Store(store_path) as s:
        rows = s.query("SELECT item_id, reviewer, verdict, source, seconds FROM reviews ORDER BY item_id")
        assert dict(zip(rows["item_id"], rows["verdict"])) == pressed
        assert set(rows["reviewer"]) == {"bob"} and set(rows["source"]) == {"import"} and (rows["seconds"] > 0).all()
        page.import_csv(s, csv_path)  # again: the same rows, nothing added
        again = s.query("SELECT item_id, reviewer, verdict, source, seconds FROM reviews ORDER BY item_id")
        assert again.equals(rows)


def test_an_import_is_checked_against_the_items_before_anything_is_written(tmp_path):
    st, _ = ps.make(tmp_path, n=12)
    items.build(st, "polyp")
    good = sorted(items.load(st, "polyp"))
    header = "task,item_id,reviewer,verdict,note,seconds,answered_at\n"
    bad = tmp_path / "bad.csv"
    bad.write_text(header + f"polyp,{good[0]},bob,finding,,1.5,1700000000\n"
                   f"polyp,0123456789abcdef,bob,finding,,1.5,1700000000\n"
                   f"polyp,{good[1]},bob,maybe,,1.5,1700000000\n")
    with pytest.raises(OmnisegError) as e:
        page.import_csv(st, bad)
    msg = str(e.value)
    assert "line 3: item '0123456789abcdef' is not a review item" in msg and "line 4: verdict 'maybe'" in msg
    assert len(st.query("SELECT * FROM reviews")) == 0  # not even the good first line
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(OmnisegError, match="not a review CSV"):
        page.import_csv(st, other)


def _answers(tmp_path, *rows: tuple[int, str, str, str]):
    """A store with review items, and a CSV of (item index, verdict, seconds, answered_at) rows by bob."""
    st, _ = ps.make(tmp_path, n=12)
    items.build(st, "polyp")
    good = sorted(items.load(st, "polyp"))
    path = tmp_path / "a.csv"
    path.write_text("task,item_id,reviewer,verdict,note,seconds,answered_at\n"
                    + "".join(f"polyp,{good[k]},bob,{v},,{sec},{at}\n" for k, v, sec, at in rows))
    return st, path


@pytest.mark.parametrize("column, value", [("answered_at", "nan"), ("answered_at", "inf"), ("seconds", "-inf"),
                                           ("seconds", "-3"), ("answered_at", "1e999")])
def test_an_import_with_a_number_that_is_no_time_writes_nothing(tmp_path, column, value):
    row = {"seconds": "1.5", "answered_at": "1700000000", column: value}
    st, csv_path = _answers(tmp_path, (0, "finding", "1.5", "1700000000"), (1, "model_wrong", "1.5", "1700000001"),
                            (2, "model_wrong", row["seconds"], row["answered_at"]))
    with pytest.raises(OmnisegError, match=f"line 4: {column} {value!r}"):
        page.import_csv(st, csv_path)
    assert len(st.query("SELECT * FROM reviews")) == 0


def test_two_different_answers_of_one_reviewer_on_one_item_are_reported_not_reduced(tmp_path):
    st, csv_path = _answers(tmp_path, (0, "model_wrong", "1.5", "1700000000"), (1, "model_wrong", "1.5", "1700000001"),
                            (0, "cannot_tell", "2.5", "1700000002"))
    with pytest.raises(OmnisegError, match=r"lines 2 and 4: two answers of 'bob' on item"):
        page.import_csv(st, csv_path)
    assert len(st.query("SELECT * FROM reviews")) == 0
    same = tmp_path / "same.csv"  # the same answer twice (a CSV concatenated with itself) is one answer
    lines = csv_path.read_text().splitlines()
    same.write_text("\n".join(lines[:3] + lines[1:3]) + "\n")
    assert page.import_csv(st, same) == {"polyp": 2}
    assert len(st.query("SELECT * FROM reviews")) == 2


def test_export_to_a_file_is_one_message_and_records_no_order(tmp_path):
    st, _ = ps.make(tmp_path, n=8)
    st.close()
    (tmp_path / "page").write_text("x")
    r = CliRunner().invoke(app, ["review", "--task", "polyp", "--reviewer", "ann", "--export", str(tmp_path / "page"),
                                 "--store", str(tmp_path / "runs" / "s.sqlite"), "-q"])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output, r.output
    with Store(tmp_path / "runs" / "s.sqlite") as st:
        assert len(st.query("SELECT * FROM review_orders")) == 0


def test_export_embeds_the_recorded_order_and_seed_reads_moved_data_and_reports_progress_only_when_asked(tmp_path,
                                                                                                      capsys):
    import json
    import shutil

    st, _ = ps.make(tmp_path, n=12)
    store_path = st.path
    st.close()
    _cli("review", "--task", "polyp", "--max", "6", "--store", store_path, "-q")
    shutil.move(tmp_path / "kvasir", tmp_path / "moved")  # the data moved since the run: data_root says where
    with Store(store_path) as s:
        capsys.readouterr()
        import locale

        was = locale.setlocale(locale.LC_CTYPE)
        locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: the page is UTF-8 whatever the machine's
        try:
            first = page.export(s, "polyp", "zoë", tmp_path / "a" / "b", seed=7, data_root=tmp_path / "moved")
        finally:
            locale.setlocale(locale.LC_CTYPE, was)
        assert capsys.readouterr().err == ""  # progress is off unless asked
        again = page.export(s, "polyp", "zoë", tmp_path / "a" / "b", data_root=tmp_path / "moved", progress=True)
        assert "polyp: pictures" in capsys.readouterr().err
        seed, order = items.order(s, "polyp", "zoë")
    assert first == again == tmp_path / "a" / "b" / "review-polyp-zoë.html"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left
    text = first.read_text(encoding="utf-8")
    assert "<title>omniseg review: polyp (zoë)</title>" in text
    embedded = json.loads(re.search(r'<script type="application/json" id="embedded">(.*?)</script>', text, re.S)[1])
    assert (embedded["task"], embedded["reviewer"], embedded["seed"]) == ("polyp", "zoë", 7) and seed == 7
    assert [i["item"] for i in embedded["items"]] == order and len(order) == 6
    assert all(i["image"].startswith("data:image/jpeg;base64,") for i in embedded["items"])


def test_the_page_escapes_the_names_it_shows_and_ends_with_a_newline():
    text = page.html("polyp<i>", "<script>alert(1)</script>", {"items": []})
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "polyp<i>" not in text and "polyp&lt;i&gt;" in text
    assert text.endswith("</html>\n")


def _csv(path, rows, bom=True):
    import csv as _csv_mod

    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = _csv_mod.writer(f)
        w.writerow(page.CSV_COLUMNS)
        w.writerows(rows)
    return path


def test_import_reads_a_bom_quoted_newlines_notes_and_times_and_checks_every_rule(tmp_path):
    st, _ = ps.make(tmp_path, n=12)
    items.build(st, "polyp")
    _, order = items.order(st, "polyp", "ann", 1)
    st.db.execute("UPDATE review_items SET side = 'reference-only' WHERE item_id = ?", (order[1],))
    mo, ro = order[0], order[1]  # a model-only item, a reference-only one
    good = _csv(tmp_path / "good.csv", [
        ["polyp", mo, "zoë", "finding", "two lines\r\nof a note, with ümlauts", "0", "1700000000.5"],
        ["polyp", ro, "zoë", "model_wrong", "", "", ""],  # no note, no times: kept as none
        ["polyp", mo, "zoë", "finding", "two lines\r\nof a note, with ümlauts", "0", "1700000000.5"],  # the same again
    ])
    assert page.import_csv(st, good, task="polyp") == {"polyp": 2}
    rows = {r[0]: tuple(r[1:]) for r in st.db.execute(
        "SELECT item_id, reviewer, verdict, note, seconds, answered_at, source FROM reviews")}
    assert rows[mo] == ("zoë", "finding", "two lines\r\nof a note, with ümlauts", 0.0, 1700000000.5, "import")
    assert rows[ro][:4] == ("zoë", "model_wrong", "", None) and rows[ro][4] > 0  # answered now

    def refused(rows, task=None):
        with pytest.raises(OmnisegError) as e:
            page.import_csv(st, _csv(tmp_path / "bad.csv", rows), task=task)
        return str(e.value).split("\n  ")[1:]

    assert refused([["polyp", ro, "bob", "finding", "", "", ""]]) == [
        "line 2: 'finding' on a region the annotation marks (reference-only)"]
    assert refused([["polyp", mo, "", "finding", "", "", ""]]) == ["line 2: no reviewer"]
    assert refused([["polyp", mo, "bob", "", "", "", ""]]) == [
        "line 2: verdict ''; expected one of finding, model_wrong, annotation_wrong, cannot_tell"]
    assert refused([["", mo, "bob", "finding", "", "", ""]]) == [
        f"line 2: item {mo!r} is not a review item of task '' in {st.path}"]
    assert refused([["polyp", mo, "bob", "finding", "", "", ""]], task="other") == [
        "line 2: task 'polyp', expected 'other'"]
    assert refused([["polyp", mo, "bob", "finding", "a", "", ""], ["polyp", mo, "bob", "model_wrong", "b", "", ""]]) == [
        f"lines 2 and 3: two answers of 'bob' on item {mo!r} (finding and model_wrong); keep one"]
    for n, suffix in ((10, ""), (11, " (and 1 more)"), (12, " (and 2 more)")):
        got = refused([["polyp", mo, "", "finding", "", "", ""]] * n)
        assert len(got) == 10 and got[-1] == "line 11: no reviewer" + suffix
    assert len(st.db.execute("SELECT * FROM reviews").fetchall()) == 2  # nothing refused was written

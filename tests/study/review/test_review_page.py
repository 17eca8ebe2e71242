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

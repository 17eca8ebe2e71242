"""The review page served by `omniseg review --reviewer`, answered with the keyboard in headless Chromium: every
answer lands in the store at once, a killed server resumes at the next item, nothing names a model, and the
server answers only requests with its token, on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import planted_study as ps

KEYS = "2413"  # the answer keys pressed in turn: 2 model wrong, 4 cannot tell, 1 finding, 3 annotation wrong
VERDICT = {"1": "finding", "2": "model_wrong", "3": "annotation_wrong", "4": "cannot_tell"}
NAMES = (ps.SPEC, ps.OMNI, "masks", "specialist", "omnimodel")  # the models' names, kind and roles


def _serve(store_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "omniseg", "review", "--task", "polyp", "--max", "30", "--reviewer",
                             "ann", "--order-seed", "3", "--store", str(store_path), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        m = re.search(r"open (http://127\.0\.0\.1:(\d+)/\?token=(\S+))", line)
        if m:
            return proc, m.group(1), int(m.group(2)), m.group(3)
    raise AssertionError("the server printed no URL:\n" + "".join(seen))


def _rows(store_path):
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT item_id, verdict, seconds FROM reviews WHERE reviewer='ann' ORDER BY answered_at").fetchall()
    finally:
        db.close()


def _order(store_path):
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        return json.loads(db.execute("SELECT items FROM review_orders WHERE reviewer='ann'").fetchone()[0])
    finally:
        db.close()


def _press(browser, key, wait_for):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    ActionChains(browser).send_keys(key).perform()
    # selenium looks every 0.5 s by default: half a second idle after each of the 31 keys
    WebDriverWait(browser, 30, poll_frequency=0.02).until(lambda d: wait_for(d))


def _showing(browser):
    return browser.find_element("id", "viewer").get_attribute("data-item")


def _progress(browser):
    return browser.find_element("id", "progress").text


def test_a_reviewer_answers_30_items_with_the_keyboard_across_a_killed_server(tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    st, _ = ps.make(tmp_path, n=40)
    store_path = st.path
    st.close()
    proc, url, port, token = _serve(store_path)
    pressed = {}
    try:
        order = _order(store_path)
        assert len(order) == 30
        browser.get(url)
        WebDriverWait(browser, 30, poll_frequency=0.02).until(lambda d: _showing(d) == order[0])
        assert _progress(browser).startswith("item 1 of 30")
        for k in range(20):
            key = KEYS[k % 4]
            pressed[order[k]] = VERDICT[key]
            _press(browser, key, lambda d, k=k: _showing(d) == order[k + 1])
            assert len(_rows(store_path)) == k + 1  # in the store before the next item shows
        # blinded: neither the page nor anything it requested names a model, its kind or role
        source = browser.page_source
        urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any("/api/item/" in u for u in urls) and all(f"token={token}" in u for u in urls)
        gets = [u for u in urls if "/api/item/" in u or "/api/state" in u] + [url]
        bodies = [urllib.request.urlopen(u, timeout=30).read().decode() for u in gets]
        for text in [source, *urls, *bodies]:
            for name in NAMES:
                assert name not in text, name
        # only with the token, only on 127.0.0.1
        base = f"http://127.0.0.1:{port}"
        wrong = token[:-1] + ("y" if token.endswith("x") else "x")  # one character off (a token may end in x)
        for bad in (base + "/", base + "/api/state", base + "/api/item/1", base + "/?token=" + wrong):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(bad, timeout=30)
            assert e.value.code == 403
        req = urllib.request.Request(base + "/api/answer", data=b'{"item": "x", "verdict": "finding"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 403 and len(_rows(store_path)) == 20
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        proc.kill()  # SIGKILL: no chance to tidy up
        proc.wait()
    assert len(_rows(store_path)) == 20

    proc, url, port, token = _serve(store_path)
    try:
        browser.get(url)
        WebDriverWait(browser, 30, poll_frequency=0.02).until(lambda d: _showing(d) == order[20])
        assert _progress(browser).startswith("item 21 of 30 · 20 answered")
        for k in range(20, 30):
            key = KEYS[k % 4]
            pressed[order[k]] = VERDICT[key]
            done = (lambda d: d.find_element("id", "done").is_displayed()) if k == 29 else \
                (lambda d, k=k: _showing(d) == order[k + 1])
            _press(browser, key, done)
        rows = _rows(store_path)
        assert len(rows) == 30 and {i: v for i, v, _ in rows} == pressed
        assert all(s is not None and s > 0 for _, _, s in rows)
        # undo takes back the last answer and shows its item again; answering it again restores the row
        _press(browser, "u", lambda d: _showing(d) == order[29] and not d.find_element("id", "done").is_displayed())
        assert len(_rows(store_path)) == 29
        _press(browser, "4", lambda d: d.find_element("id", "done").is_displayed())
        assert dict((i, v) for i, v, _ in _rows(store_path))[order[29]] == "cannot_tell"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("body", [
    {"item": ["x"], "verdict": "finding"}, {"item": "ITEM", "verdict": ["finding"]}, {"item": {"a": 1}, "verdict": 2},
    {"item": "ITEM", "verdict": "model_wrong", "seconds": [1]}, {"item": "ITEM", "verdict": "model_wrong", "note": {}},
    ["ITEM", "model_wrong"], "ITEM", None, 12,
])
def test_an_answer_of_the_wrong_shape_is_a_400_never_a_500(tmp_path, body):
    from starlette.testclient import TestClient

    from omniseg.study.review import items, server

    st, _ = ps.make(tmp_path, n=8)
    items.build(st, "polyp")
    _, order = items.order(st, "polyp", "ann", 1)
    client = TestClient(server.app(st, "polyp", "ann", order, "tok"))  # raises what the server raises
    body = json.loads(json.dumps(body).replace("ITEM", order[0]))
    r = client.post("/api/answer?token=tok", json=body)
    if isinstance(body, dict) and isinstance(body.get("item"), str) and body.get("verdict") == "model_wrong":
        assert r.status_code == 200  # a wrong-typed extra field is left out, not a failure
        row = st.db.execute("SELECT seconds, note FROM reviews").fetchone()
        assert row[0] is None and row[1] == ""
    else:
        assert r.status_code == 400 and "expected" in r.json()["error"]
        assert st.db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0


def test_the_api_in_process_token_state_items_answers_and_undo(tmp_path):
    """The same server app, in this process (so that every handler's line is attributed to a test): the token
    guards every route; state counts and points at the first unanswered item; items are 1..n in the reviewer's
    order and name no model; an answer is committed before the reply; 'finding' is refused on a reference-only
    region; undo takes back the latest answer and says which item it was."""
    from starlette.testclient import TestClient

    from omniseg.study.review import items, server

    st, _ = ps.make(tmp_path, n=12)
    items.build(st, "polyp")
    _, order = items.order(st, "polyp", "ann", 5)
    st.db.execute("UPDATE review_items SET side = 'reference-only' WHERE item_id = ?", (order[3],))  # one of each
    loaded = items.load(st, "polyp")
    client = TestClient(server.app(st, "polyp", "ann", order, "tok-123"))
    for path in ("/", "/api/state", "/api/item/1", "/?token=tok-12", "/api/state?token=TOK-123"):
        r = client.get(path)
        assert r.status_code == 403 and "token" in r.text
    assert client.post("/api/answer", json={"item": order[0], "verdict": "model_wrong"}).status_code == 403
    page = client.get("/?token=tok-123")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store" and "<html" in page.text.lower()
    n = len(order)
    assert client.get("/api/state?token=tok-123").json() == {"n": n, "answered": 0, "next": 1}
    for k in (0, n + 1):
        r = client.get(f"/api/item/{k}?token=tok-123")
        assert r.status_code == 404 and f"there are {n}" in r.json()["error"]
    first = client.get("/api/item/1?token=tok-123")
    body = first.json()
    assert first.headers["cache-control"] == "no-store"
    assert body["item"] == order[0] and body["k"] == 1 and body["n"] == n and body["answer"] is None
    assert body["side"] == loaded[order[0]]["side"] and body["image"].startswith("data:image/jpeg;base64,")
    assert body["overlay"].startswith("data:image/png;base64,") and len(body["box"]) == 4
    assert not {ps.SPEC, ps.OMNI} & set(first.text.split('"'))
    ref_only = next(i for i in order if loaded[i]["side"] == "reference-only")
    r = client.post("/api/answer?token=tok-123", json={"item": ref_only, "verdict": "finding"})
    assert r.status_code == 400 and "annotation marks" in r.json()["error"]
    r = client.post("/api/answer?token=tok-123", json={"item": order[0], "verdict": "cannot_tell", "note": "blurry",
                                                       "seconds": 2.5})
    assert r.status_code == 200 and r.json() == {"n": n, "answered": 1, "next": 2}
    row = st.db.execute("SELECT item_id, verdict, note, seconds, source FROM reviews").fetchall()
    assert [tuple(x) for x in row] == [(order[0], "cannot_tell", "blurry", 2.5, "page")]
    assert client.get("/api/item/1?token=tok-123").json()["answer"] == {"verdict": "cannot_tell", "note": "blurry"}
    client.post("/api/answer?token=tok-123", json={"item": order[2], "verdict": "model_wrong", "note": "x" * 20_000})
    assert len(st.db.execute("SELECT note FROM reviews WHERE item_id = ?", (order[2],)).fetchone()[0]) == 10_000
    assert client.get("/api/state?token=tok-123").json() == {"n": n, "answered": 2, "next": 2}
    undone = client.post("/api/undo?token=tok-123").json()
    assert undone == {"n": n, "answered": 1, "next": 2, "undone": 3}
    undone = client.post("/api/undo?token=tok-123").json()
    assert undone["undone"] == 1 and undone["answered"] == 0
    assert client.post("/api/undo?token=tok-123").json()["undone"] is None  # nothing left to take back
    r = client.post("/api/answer?token=tok-123", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]


def test_the_api_reads_moved_data_answers_every_item_to_the_last_and_keeps_only_numeric_seconds(tmp_path):
    import shutil

    from starlette.testclient import TestClient

    from omniseg.study.review import items, server

    st, _ = ps.make(tmp_path, n=8)
    items.build(st, "polyp")
    _, order = items.order(st, "polyp", "zoë", 2)
    st.db.execute("UPDATE review_items SET side = 'reference-only' WHERE item_id = ?", (order[1],))  # one of each
    loaded = items.load(st, "polyp")
    shutil.move(tmp_path / "kvasir", tmp_path / "moved")  # the data moved since the run: data_root says where
    client = TestClient(server.app(st, "polyp", "zoë", order, "t", data_root=tmp_path / "moved"))
    r = client.get("/")
    assert r.status_code == 403 and r.text == "forbidden: open the URL `omniseg review` printed (it carries the token)"
    assert "<title>omniseg review: polyp (zoë)</title>" in client.get("/?token=t").text
    n = len(order)
    assert client.get(f"/api/item/{n}?token=t").json()["item"] == order[-1]  # the last item is item n
    r = client.post("/api/answer?token=t", json={"item": "no such item", "verdict": "finding"})
    assert r.json()["error"] == ("expected a JSON object {item, verdict} with a known item and one of "
                                 "finding, model_wrong, annotation_wrong, cannot_tell")
    ref_only = [i for i in order if loaded[i]["side"] == "reference-only"]
    r = client.post("/api/answer?token=t", json={"item": ref_only[0], "verdict": "finding"})
    assert r.json()["error"] == "'finding' is not an answer for a region the annotation marks"
    for k, item in enumerate(order):
        verdict = "finding" if loaded[item]["side"] == "model-only" else "model_wrong"
        seconds = [True, "5", 3, 1.5][k % 4]
        r = client.post("/api/answer?token=t", json={"item": item, "verdict": verdict, "seconds": seconds})
        assert r.status_code == 200, r.text
    assert r.json() == {"n": n, "answered": n, "next": None}  # every item answered: there is no next one
    got = dict(st.db.execute("SELECT item_id, seconds FROM reviews").fetchall())
    assert [got[i] for i in order] == [[None, None, 3, 1.5][k % 4] for k in range(n)]  # booleans, text: no seconds
    assert {v for (v,) in st.db.execute("SELECT verdict FROM reviews")} == {"finding", "model_wrong"}

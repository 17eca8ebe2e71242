"""report.html: the per-case page, opened from disk in headless Chromium (Debian's chromium + chromedriver,
driven by selenium); thumbnails made once and reused; failures shown with their status and reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import CHROMEDRIVER, CHROMIUM, KVASIR_REAL, OTSU, make_kvasir, why_no_browser, write_config
from omniseg import config
from omniseg.study import report
from omniseg.study.curate import curate
from omniseg.inference.runner import run
from omniseg.store.database import Store
from omniseg.standins.fake_gemini import FakeGemini
from omniseg.standins.gemini_answers import error, good_answer

def _fails_for_some(req):
    if req.image_sha[0] in "01":
        return error(400, "INVALID_ARGUMENT", "Unable to process input image.")
    return good_answer(req)


def _three_model_report(tmp_path: Path, root: Path, split: str):
    """otsu, a centred ellipse and the fake Gemini (failing on ~1/8 of the images), curated by otsu."""
    with FakeGemini(_fails_for_some) as srv:
        models = (OTSU + "  - name: ellipse\n    kind: ellipse\n"
                  f"  - name: gem\n    kind: gemini\n    options: {{base_url: '{srv.url}', target: polyp, max_retries: 0,"
                  " max_side: 256, max_in_flight: 8}\n")
        path = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models, "curation:\n  reference: otsu\n")
        path.write_text(path.read_text().replace("split: all", f"split: {split}"))
        cfg = config.load(path)
        store = Store(tmp_path / "runs" / "s.sqlite")
        run(cfg, store, progress=False)
    curate(store, "polyp", 20)
    return store


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def test_report_html_opens_sorts_and_shows_cases_in_chromium(tmp_path, browser, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "omniseg-test-key-not-real-0123456789abcd")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    real = KVASIR_REAL.is_dir()
    root, split = (KVASIR_REAL, "test") if real else (make_kvasir(tmp_path / "K", n=200, size=(240, 300)), "all")
    with _three_model_report(tmp_path, root, split) as st:
        paths = report.write(st, tmp_path / "rep", split=split)
    size = _folder_mb(tmp_path / "rep")
    print(f"\nreport folder for 200 {'real Kvasir-SEG test' if real else 'generated'} images x 3 models: {size:.1f} MB")
    assert size < 30
    per_image = pd.read_csv(paths["per_image"])
    assert len(per_image) == 600
    failed = per_image[per_image["status"] != "ok"]
    assert len(failed) > 0

    from selenium.webdriver.common.by import By

    browser.get(paths["html"].resolve().as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
    assert len(rows) == 600
    first = lambda: browser.find_element(By.CSS_SELECTOR, "#cases tbody tr").find_elements(By.TAG_NAME, "td")  # noqa: E731
    browser.find_element(By.CSS_SELECTOR, 'button[data-key="dice"]').click()  # the page's own control: best first
    cells = first()
    best = per_image.sort_values(["dice", "sample_id"], ascending=[False, True], kind="stable").iloc[0]
    assert float(cells[5].text) == pytest.approx(best["dice"], abs=5e-4)
    browser.find_element(By.CSS_SELECTOR, 'button[data-key="dice"]').click()  # again: worst first
    assert float(first()[5].text) == pytest.approx(per_image["dice"].min(), abs=5e-4)
    browser.find_element(By.CSS_SELECTOR, 'button[data-key="sample"]').click()
    assert first()[1].text == per_image["sample_id"].min()
    # a failed prediction shows its status and reason instead of a mask
    bad = failed.iloc[0]
    browser.execute_script("document.getElementById('f-status').value = 'failed';"
                           "document.getElementById('f-status').dispatchEvent(new Event('input'));")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")) == len(failed)
    for tr in browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr"):
        if tr.find_elements(By.TAG_NAME, "td")[1].text == bad["sample_id"]:
            tr.click()
            break
    case = browser.find_element(By.ID, "case").text
    assert bad["status"] in case and "Unable to process input image" in case
    assert len(browser.find_elements(By.CSS_SELECTOR, "#case img")) >= 2  # reference and the models that answered
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50  # not blank
    # "A beats B by more than x": only images where gem's Dice exceeds otsu's by 0.2
    browser.execute_script("""
        const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('input')); };
        set('f-status', ''); set('f-a', 'gem'); set('f-b', 'otsu'); set('f-x', '0.2');""")
    wide = per_image.pivot(index="sample_id", columns="model", values="dice")
    expected = int(((wide["gem"] - wide["otsu"]) > 0.2).sum()) * 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")) == expected


def test_thumbnails_are_made_once_and_reused(tmp_path, monkeypatch):
    root = make_kvasir(tmp_path / "K", n=6)
    cfg = config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root,
                                   OTSU + "  - name: ellipse\n    kind: ellipse\n"))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, progress=False)
        report.write(st, tmp_path / "rep", split="all", figures=False)
        thumbs = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rep" / "thumbs").iterdir()}
        assert len(thumbs) == 6 * 3  # per image: the reference, and each model's mask
        from omniseg.datasets.kvasir import KvasirSeg

        loads = []
        real_load = KvasirSeg.load
        monkeypatch.setattr(KvasirSeg, "load", lambda self, ref: loads.append(ref.id) or real_load(self, ref))
        report.write(st, tmp_path / "rep", split="all", figures=False)
        assert loads == []  # no image read again
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rep" / "thumbs").iterdir()} == thumbs
        report.write(st, tmp_path / "rep", split="all", figures=False, task="polyp")
    html = (tmp_path / "rep" / "report.html").read_text()
    data = json.loads(html.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert len(data["rows"]) == 12 and all(len(v) == 3 for v in data["pictures"].values())


def test_one_model_and_one_image_still_render(tmp_path, monkeypatch):
    root = make_kvasir(tmp_path / "K", n=1)
    cfg = config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, OTSU))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, progress=False)
        paths = report.write(st, tmp_path / "rep", split="all")
    html = paths["html"].read_text()
    data = json.loads(html.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert len(data["rows"]) == 1 and data["models"] == {"polyp": ["otsu"]}
    if why_no_browser() is None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            driver.get(paths["html"].resolve().as_uri())
            assert len(driver.find_elements(By.CSS_SELECTOR, "#cases tbody tr")) == 1
            driver.find_element(By.CSS_SELECTOR, "#cases tbody tr").click()
            assert len(driver.find_elements(By.CSS_SELECTOR, "#case img")) == 2
        finally:
            driver.quit()


HOSTILE_IDS = ["a<!--<script>", "b<script>window.__omniseg_pwned=3<!--", "c\"'&amp;<img src=x onerror=window.__omniseg_pwned=2>",
               "d\u2028line\u2029para", "e plain"]


def test_hostile_text_in_every_field_renders_as_text_in_chromium(tmp_path, browser, monkeypatch):
    """Defect 5: `<!--<script>` in a sample id (a file name) or in an answer's first characters made the
    embedded data block swallow the page's own script: 0 rows rendered. Every field that reaches the page
    (ids, reasons, answer text) carries such text here; every row renders, as text, and no script runs."""
    from selenium.webdriver.common.by import By

    from omniseg.standins import hostile

    monkeypatch.setenv("GEMINI_API_KEY", "omniseg-test-key-not-real-0123456789abcd")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    rng = np.random.default_rng(0)
    from conftest import blob_mask, lesion_image

    for sid in HOSTILE_IDS:
        m = blob_mask(48, 64, rng)
        (tmp_path / "d" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(lesion_image(m, rng)).save(tmp_path / "d" / "images" / f"{sid}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "d" / "masks" / f"{sid}.png")
    page_breaker = hostile.gemini(kinds=("page_breaker",))

    def behave(req):  # answers whose text breaks pages, and failures whose reason does
        if req.image_sha[0] in "0123":
            return error(400, "INVALID_ARGUMENT", f"bad image {hostile.PAGE_BREAKER}")
        return page_breaker(req)

    with FakeGemini(behave) as srv:
        models = (OTSU + f"  - name: gem\n    kind: gemini\n    options: {{base_url: '{srv.url}', target: polyp,"
                  " max_retries: 0, max_side: 256}\n")
        path = tmp_path / "c.yaml"
        path.write_text(f"task: hostile\ndataset:\n  name: folder\n  root: {tmp_path / 'd'}\n  options: {{split: test}}\n"
                        f"split: test\nmodels:\n{models}")
        with Store(tmp_path / "runs" / "s.sqlite") as st:
            run(config.load(path), st, progress=False)
            curate(st, "hostile", 2)
            paths = report.write(st, tmp_path / "rep", split="test")
    per_image = pd.read_csv(paths["per_image"], keep_default_na=False)
    assert sorted(per_image["sample_id"].unique()) == sorted(HOSTILE_IDS) and len(per_image) == 10
    assert hostile.PAGE_BREAKER not in paths["html"].read_text()  # nothing hostile raw in the page
    browser.get(paths["html"].resolve().as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
    assert len(rows) == 10
    shown = {tr.find_elements(By.TAG_NAME, "td")[1].text for tr in rows}
    assert len(shown) == len(HOSTILE_IDS) and {"a<!--<script>", "e plain"} <= shown, shown
    browser.find_element(By.CSS_SELECTOR, "#cases tbody tr").click()  # a real click opens a case
    assert "Dice" in browser.find_element(By.ID, "case").text
    assert browser.execute_script("return window.__omniseg_pwned === undefined")
    case_texts = []
    for i in range(10):  # every case view, with its answer text and reasons
        browser.execute_script(f"show({i})")
        case_texts.append(browser.find_element(By.ID, "case").text)
    joined = "\n".join(case_texts)
    assert "</script><!--<script>" in joined  # shown as text: in the answers and the reasons
    assert browser.execute_script("return window.__omniseg_pwned === undefined")


def test_the_page_shows_findings_and_figures_finds_a_sample_and_keeps_the_case_in_view(tmp_path, browser, monkeypatch):
    """report.html had only the summary and the case table; the last model's panel fell below the fold at 1400x1000."""
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("GEMINI_API_KEY", "omniseg-test-key-not-real-0123456789abcd")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = make_kvasir(tmp_path / "K", n=40, size=(120, 150))
    with _three_model_report(tmp_path, root, "all") as st:
        paths = report.write(st, tmp_path / "rep", split="all")
    browser.set_window_size(1400, 1000)
    browser.get(paths["html"].resolve().as_uri())
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Findings" in text and "Paired comparisons" in text and "Read this first" in text  # the stand-in is named
    assert "The specialist wins on the easiest cases" in text
    figures = browser.find_elements(By.CSS_SELECTOR, "img.figure")
    assert len(figures) >= 3
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", f) for f in figures)
    target = "case017"
    box = browser.find_element(By.ID, "f-search")
    box.send_keys(target)
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases tbody tr")
    assert len(rows) == 3 and {r.find_elements(By.TAG_NAME, "td")[1].text for r in rows} == {target}
    browser.execute_script("arguments[0].scrollIntoView()", rows[0])
    rows[0].click()
    panels = browser.find_elements(By.CSS_SELECTOR, "#case .panel")
    assert len(panels) == 4  # the reference and the three models
    height = browser.execute_script("return window.innerHeight")
    bottoms = [browser.execute_script("return arguments[0].getBoundingClientRect().bottom", p) for p in panels]
    tops = [browser.execute_script("return arguments[0].getBoundingClientRect().top", p) for p in panels]
    assert all(0 <= t and b <= height for t, b in zip(tops, bottoms)), (tops, bottoms, height)

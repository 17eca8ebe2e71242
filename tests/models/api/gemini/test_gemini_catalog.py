"""docs/omnimodels.md, the catalogue in code and the shipped configs say the same thing."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from omniseg import config, models
from omniseg.datasets.base import Sample
from omniseg.errors import ConfigError
from omniseg.models.api.gemini import catalog as cat

REPO = Path(__file__).resolve().parents[4]
DAY = dt.date(2026, 12, 1)  # the check day: no config may name a model shut down by then


def docs_table() -> dict[str, dict[str, str]]:
    lines = (REPO / "docs" / "omnimodels.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| model |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def config_gemini_entries():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        for m in yaml.safe_load(path.read_text())["models"]:
            if m["kind"] == "gemini":
                yield path.name, m


def test_docs_table_and_catalogue_agree():
    table = docs_table()
    assert set(table) == set(cat.CATALOG)
    for name, e in cat.CATALOG.items():
        row = table[name]
        assert row["answer form"] == e.answer and row["mode"] == e.mode, name
        assert [s.strip() for s in row["settings it takes"].split(",") if s.strip()] == list(e.settings), name
        if e.input_per_mtok is None:
            assert row["price in / out (USD per 1M tokens)"] == "not published here"
        else:
            assert row["price in / out (USD per 1M tokens)"] == f"{e.input_per_mtok:.2f} / {e.output_per_mtok:.2f}", name
        state = e.state_on(DAY)
        assert row["status on 2026-12-01"] == ("served" if state == "served" else f"{state} on {e.date}"), name
        assert re.fullmatch(r"(\[\d\] ?)+", row["sources"]), name


def test_every_config_model_is_in_the_table_and_served_unless_it_is_the_marked_seed_entry():
    table = docs_table()
    seen = set()
    for path, m in config_gemini_entries():
        name = m["options"]["model"]
        seen.add(name)
        assert name in table, f"{path}: {name} is not in docs/omnimodels.md"
        if table[name]["status on 2026-12-01"] != "served":
            assert "seed" in m["name"] and m.get("default") is False, f"{path}: {m['name']} uses {name}"
    kinds = {table[n]["answer form"] for n in seen}
    assert {"polygon/mask", "image"} <= kinds and "gemini-2.5-flash" in seen


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_configs_send_only_settings_their_models_take(path, recwarn):
    cfg = config.load(path)
    sample = Sample("x", np.zeros((30, 40, 3), np.uint8), np.zeros((30, 40), bool), None, {})
    for entry in cfg.models:
        if entry.kind != "gemini":
            continue
        seg = models.build(entry)
        takes = set(cat.lookup(seg.options.model).settings)
        sent = set(seg.provider.generation(sample)) - {"max_output_tokens", "seed", "response_modalities", "aspect_ratio"}
        assert sent <= takes, (entry.name, sent - takes)


def test_a_setting_the_model_does_not_take_is_refused_with_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: polyp\ndataset: {name: kvasir-seg, root: x}\nmodels:\n"
                    "  - {name: g, kind: gemini, options: {model: gemini-3.5-flash, temperature: 0.5}}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'models.0.options'.*gemini-3.5-flash does not take temperature"):
        config.load(path)


def test_mode_and_price_default_to_the_catalogue():
    from omniseg.models.api.gemini.model import GeminiOptions

    o = GeminiOptions(model="gemini-3.1-flash-image")
    assert o.mode == "image-mask" and o.price.output_per_mtok == 60.0
    assert GeminiOptions().model == "gemini-3.5-flash" and GeminiOptions().mode == "polygon"
    assert GeminiOptions(model="my-own-model").mode == "json-mask"


@pytest.mark.parametrize("name", sorted(n for n, e in cat.CATALOG.items() if e.date), ids=str)
def test_both_sides_of_every_date_in_the_catalogue_and_the_fake(name, monkeypatch):
    """No verdict depends on the day the test runs: the day is injected, and each date is checked on the
    day before it and on the day itself, in the catalogue, the warning a model gives and the fake's routing."""
    from omniseg.standins import gemini_answers as ga

    e = cat.CATALOG[name]
    day = dt.date.fromisoformat(e.date)
    before, on = day - dt.timedelta(days=1), day
    assert e.state_on(before) == "retiring" and e.state_on(on) == "retired"
    assert cat.status_note(name, before).startswith(f"{name} retires on {e.date}")
    assert cat.status_note(name, on).startswith(f"{name} was shut down on {e.date}")
    assert ga.served_model(name, before.isoformat()) == name
    assert ga.served_model(name, on.isoformat()) == ga.LIVE_MODELS[name].get("routed_to")
    for when, words in ((before, "retires on"), (on, "was shut down on")):
        monkeypatch.setenv("OMNISEG_TODAY", when.isoformat())
        with pytest.warns(UserWarning, match=f"{name} {words} {e.date}"):
            models.build(config.ModelConfig(name="g", kind="gemini", options={"model": name, "mode": e.mode}))


def test_a_malformed_pinned_day_is_one_message(monkeypatch):
    from omniseg import clock
    from omniseg.errors import OmnisegError

    monkeypatch.setenv("OMNISEG_TODAY", "1st of December")
    with pytest.raises(OmnisegError, match="OMNISEG_TODAY='1st of December': expected a date as YYYY-MM-DD"):
        clock.today()
    monkeypatch.setenv("OMNISEG_TODAY", "2031-02-03")
    assert clock.today() == dt.date(2031, 2, 3)

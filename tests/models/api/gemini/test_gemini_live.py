"""Answers as the live API gives them today (ga.live): each form detected, per model name.

The fake chooses each answer per model name and by probability, fixed per image, so every test
knows which form each image got. Its polygons trace the ground truth independently of omniseg.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import DOCUMENTED, KVASIR_REAL, api_rows, gemini_yaml, make_kvasir
from PIL import Image
from typer.testing import CliRunner

from omniseg import config, models
from omniseg.models.api.types import png_bytes
from omniseg.cli import app
from omniseg.inference.runner import open_dataset, run
from omniseg.store.database import Store
from omniseg.standins import fake_gemini as fg
from omniseg.standins import gemini_answers as ga


@pytest.fixture(autouse=True)
def _key(api_key):
    return api_key


def data_200(tmp_path: Path) -> tuple[Path, str]:
    """The 200 real Kvasir-SEG test images when present, else 200 generated ones."""
    if KVASIR_REAL.is_dir():
        return KVASIR_REAL, "test"
    return make_kvasir(tmp_path / "k", n=200, size=(96, 128), seed=5), "all"


def truth_of_sent_pixels(cfg: config.TaskConfig, name: str = "gem"):
    """The fake's truth: each sent image's ground truth at the sent size, found by its pixels;
    and image_sha (what the fake logs) -> sample id."""
    seg = models.build(cfg.model(name))
    ds = open_dataset(cfg)
    truths, ids = {}, {}
    for ref in ds.refs(cfg.split):
        s = ds.load(ref)
        px = seg.request(s, seg.prompt())[0]
        truths[hashlib.sha256(px.tobytes()).hexdigest()] = np.asarray(
            Image.fromarray(s.mask).resize((px.shape[1], px.shape[0]), Image.NEAREST))
        ids[hashlib.sha256(png_bytes(px)).hexdigest()] = s.id
    return (lambda img: truths[hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()]), ids


def test_polygons_under_mask_over_200_images_score_as_their_truth(tmp_path):
    root, split = data_200(tmp_path)
    cfg = config.load(gemini_yaml(tmp_path, root, "http://unused", split, model="gemini-3.5-flash",
                               prompts={"documented": DOCUMENTED}, prompt="documented"))
    truth, _ = truth_of_sent_pixels(cfg)
    with fg.FakeGemini(ga.live(truth=truth, p_wrap=0.2)) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url, split, model="gemini-3.5-flash",
                                   prompts={"documented": DOCUMENTED}, prompt="documented"))
        with Store(tmp_path / "s.sqlite") as st:
            s = run(cfg, st, progress=False)
            df = api_rows(st)
    kinds = srv.kinds()
    print(f"\n{len(df)} images ({'real Kvasir-SEG test split' if split == 'test' else 'generated'}); fake answers "
          f"{kinds}; mean Dice {df['dice'].mean():.4f}, min {df['dice'].min():.4f}")
    assert len(df) == 200 and s.statuses == {"ok": 200}
    assert kinds.get("polygon_mask", 0) > 100 and kinds.get("polygon_mask_wrapped", 0) > 10
    assert df["meta"].map(lambda m: m["answer_form"] == "polygon/mask" and m["point_order"] == "xy").all()
    assert df["dice"].mean() >= 0.85


def test_half_of_gemini_2_5_answers_are_tokens_and_exactly_those_rows_are_unsupported(tmp_path, monkeypatch):
    root, split = data_200(tmp_path)
    monkeypatch.setenv("OMNISEG_TODAY", "2026-11-30")  # the day before it retires, for the fake and omniseg alike
    with fg.FakeGemini(ga.live(p_tokens=0.5, seed=3, today="2026-11-30")) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url, split, model="gemini-2.5-flash", mode="json-mask",
                                   temperature=0.5, thinking_budget=0))
        with pytest.warns(UserWarning, match="retires on 2026-12-01"), Store(tmp_path / "s.sqlite") as st:
            _, ids = truth_of_sent_pixels(cfg)
            run(cfg, st, progress=False)
            df = api_rows(st)
    tokens = {ids[e["image_sha"]] for e in srv.log if e["kind"] == "seg_tokens"}
    print(f"\n{len(tokens)} of 200 answers were <seg_N> tokens")
    assert 70 <= len(tokens) <= 130
    assert set(df.loc[df["status"] == "unsupported_format", "sample_id"]) == tokens
    assert set(df.loc[df["status"] == "ok", "sample_id"]) == set(df["sample_id"]) - tokens
    assert df.loc[df["status"] == "ok", "meta"].map(lambda m: m["answer_form"] == "png-crops").all()
    assert df.loc[df["status"] == "unsupported_format", "reason"].str.contains("<seg_").all()


def test_a_retired_model_is_answered_by_its_successor_and_the_run_says_so(tmp_path, monkeypatch):
    root = make_kvasir(tmp_path / "k", n=6)
    monkeypatch.setenv("OMNISEG_TODAY", "2026-12-02")
    with fg.FakeGemini(ga.live(today="2026-12-02")) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, model="gemini-2.5-flash", mode="json-mask", temperature=0.5)
        r = CliRunner().invoke(app, ["run", "--config", str(path), "--store", str(tmp_path / "s.sqlite"), "-q"])
        assert r.exit_code == 0, r.output
        assert "asked for gemini-2.5-flash but 6 answer(s) came from gemini-3.5-flash-lite" in r.output
        assert "gemini-2.5-flash was shut down on 2026-12-01" in r.output and "retires on" not in r.output
        with Store(tmp_path / "s.sqlite") as st:
            df = api_rows(st)
            versions = set(st.query("SELECT model_version FROM api_calls")["model_version"])
    assert (df["status"] == "ok").all()  # the successor's polygons are read, not rejected
    assert df["meta"].map(lambda m: m["answer_form"] == "polygon/mask").all()
    assert versions == {"gemini-3.5-flash-lite"}


def test_a_shut_down_model_answers_404_once_per_image(tmp_path):
    root = make_kvasir(tmp_path / "k", n=3)
    with fg.FakeGemini(ga.live()) as srv:
        path = gemini_yaml(tmp_path, root, srv.url, model="gemini-2.5-flash-image", mode="image-mask")
        with pytest.warns(UserWarning, match="shut down on 2026-10-02"):
            cfg = config.load(path)
            with Store(tmp_path / "s.sqlite") as st:
                run(cfg, st, progress=False)
                df = api_rows(st)
    assert len(srv.log) == 3 and (df["status"] == "api_error").all()
    assert df["reason"].str.contains("404 NOT_FOUND").all()


@pytest.mark.parametrize("size, expected", [("1K", "1184x864"), ("2K", "2368x1728")])
def test_image_models_answer_at_the_documented_sizes(tmp_path, size, expected):
    root = make_kvasir(tmp_path / "k", n=4, size=(96, 128))  # 4:3
    with fg.FakeGemini(ga.live()) as srv:
        cfg = config.load(gemini_yaml(tmp_path, root, srv.url, model="gemini-3.1-flash-image", image_size=size))
        with Store(tmp_path / "s.sqlite") as st:
            run(cfg, st, progress=False)
            df = api_rows(st)
    assert (df["status"] == "ok").all()
    assert df["meta"].map(lambda m: m["answer_form"] == "image" and f"resized from {expected}" in m["notes"]).all()



"""The `chain` kind: an omnimodel's boxes (from the answer archive) prompt SAM 3, both stages recorded per row."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import openai_yaml
from omniseg.cli import app
from omniseg.models.base import Prediction
from omniseg.models.chain import prompts, regions
from omniseg.standins import fake_openai as fo
from omniseg.standins import tiny_sam3


def test_regions_are_the_bounding_boxes_of_each_connected_part():
    m = np.zeros((20, 30), bool)
    m[2:5, 3:9] = True
    m[10:18, 20:21] = True
    m[5, 9] = True  # touches the first part diagonally: 8-connected, one region
    assert sorted(regions(m)) == [[3.0, 2.0, 10.0, 6.0], [20.0, 10.0, 21.0, 18.0]]
    assert regions(np.zeros((4, 4), bool)) == []


def test_prompts_come_from_the_boxes_answered_then_from_the_regions_drawn_largest_first():
    drawn = np.zeros((20, 20), bool)
    drawn[1:3, 1:3] = drawn[10:19, 10:19] = True
    answered = Prediction(drawn, meta={"located": {"boxes": [[0, 0, 2, 2], [5, 5, 15, 15]]}})
    assert prompts(answered, 10) == ([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 2.0, 2.0]], "boxes answered")
    assert prompts(answered, 1) == ([[5.0, 5.0, 15.0, 15.0]], "boxes answered")
    polygon = Prediction(drawn, meta={"answer_form": "polygon/points"})
    assert prompts(polygon, 10) == ([[10.0, 10.0, 19.0, 19.0], [1.0, 1.0, 3.0, 3.0]], "regions drawn")
    pointed = Prediction(drawn, meta={"located": {"points": [[3.0, 4.0]]}})
    assert prompts(pointed, 10) == ([], "points only")
    assert prompts(Prediction(np.zeros((5, 5), bool)), 10) == ([], "")


@pytest.fixture
def polyps(sent_polyps):
    return sent_polyps


def _config(tmp_path, root, url, ckpt, name="c"):
    cfg = openai_yaml(tmp_path, root, url, mode="box", name=name)
    sam = f"{{checkpoint: {ckpt}, target: the polyp, score_threshold: 0.0}}"
    cfg.write_text(cfg.read_text() + f"""  - name: vlm-sam3
    kind: chain
    options: {{source: {name}, segmenter: {{kind: sam3, options: {sam}}}}}
  - name: sam
    kind: sam3
    options: {sam}
  - name: sam-box
    kind: sam3
    options: {{checkpoint: {ckpt}, target: the polyp, score_threshold: 0.0, mode: box-oracle}}
  - name: spec
    kind: ellipse
    role: specialist
""")
    return cfg


def _cli(*args):
    r = CliRunner().invoke(app, [*args])
    assert r.exit_code == 0, (args, r.output)
    return r


def _rows(store, model):
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT sample_id, status, reason, meta FROM predictions WHERE model = ?", (model,)).fetchall()
    return {r[0]: (r[1], r[2], json.loads(r[3] or "{}")) for r in rows}


def test_a_chain_draws_the_omnimodels_boxes_records_both_stages_pays_once_and_splits_the_gap(tmp_path, polyps):
    root, masks, shas = polyps
    ckpt = tiny_sam3.save(tmp_path / "sam3")
    seen_boxes = []
    from transformers import Sam3Processor

    real_call = Sam3Processor.__call__

    def spy(self, *a, **k):  # what SAM 3 is prompted with, per image
        seen_boxes.extend(k.get("input_boxes") or [])
        return real_call(self, *a, **k)

    with fo.FakeOpenAI(lambda req: fo.completion(fo.boxes(masks[shas[req.image_sha]]))) as srv:
        cfg = _config(tmp_path, root, srv.url, ckpt, name="vlm")
        store = tmp_path / "runs" / "s.sqlite"
        Sam3Processor.__call__ = spy
        try:
            _cli("run", "--config", str(cfg), "--store", str(store), "--models", "vlm-sam3", "-q")
        finally:
            Sam3Processor.__call__ = real_call
        asked = len(srv.log)
        assert asked == len(masks)  # the chain's source had answered nothing yet: asked once per image
        chain = _rows(store, "vlm-sam3")
        assert set(chain) == set(masks) and {s for s, _, _ in chain.values()} == {"ok"}
        for sid, (_, _, meta) in chain.items():
            first, second = meta["first_stage"], meta["second_stage"]
            assert first["model"] == "vlm" and first["answer_form"] == "box" and len(first["cache_key"]) >= 16
            ys, xs = np.nonzero(masks[sid])
            truth = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert first["prompted_with"] == "boxes answered"
            assert np.abs(np.array(first["boxes"][0]) - truth).max() <= 1  # the answer's box, in the image's pixels
            assert second["kind"] == "sam3" and second["checkpoint"] == str(ckpt) and len(second["weights"]) == 64
            assert second["boxes"] == 1 and second["settings"]["score_threshold"] == 0.0
        assert sorted(map(tuple, (b for boxes in seen_boxes for b in boxes))) == \
            sorted(tuple(m["first_stage"]["boxes"][0]) for _, _, m in chain.values())

        # the source itself, then every model: answered from the archive, nothing asked again
        _cli("run", "--config", str(cfg), "--store", str(store), "-q")
        _cli("run", "--config", str(cfg), "--store", str(store), "--models", "vlm-sam3", "--force", "-q")
        assert len(srv.log) == asked
        with sqlite3.connect(store) as db:
            answered = db.execute("SELECT COUNT(*), COUNT(DISTINCT cache_key) FROM api_calls WHERE outcome = 'answered'"
                                  ).fetchone()
        assert answered == (len(masks), len(masks))  # each answer booked once, on the row that paid for it
        _cli("curate", "--store", str(store), "-n", "3", "-q")
        out = tmp_path / "rep"
        _cli("report", "--store", str(store), "--out", str(out), "--split", "all", "--no-figures", "--no-html")
    md = (out / "report.md").read_text()
    table = md.split("Where against what shape (`vlm-sam3`")[1].split("\n\n")[1]
    stages = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert [(s.strip(), m.strip()) for s, m in stages] == [
        ("omnimodel alone", "vlm"), ("omnimodel → sam3", "vlm-sam3"), ("sam3 from text", "sam"),
        ("sam3 from the reference's box (privileged)", "sam-box"), ("specialist", "spec")]
    split = pd.read_csv(out / "decomposition.csv")
    per_image = pd.read_csv(out / "per_image.csv")
    for r in split.itertuples():
        assert r.n == len(masks) and r.dice_mean == pytest.approx(per_image.loc[per_image.model == r.model, "dice"].mean(), abs=1e-6)
    d = split.set_index("stage")["dice_mean"]
    assert f"where (the reference's box against the omnimodel's boxes, same segmenter): " \
           f"{d['sam3 from the reference' + chr(39) + 's box (privileged)'] - d['omnimodel → sam3']:+.3f}" in md
    summary = pd.read_csv(out / "summary.csv")
    assert not summary.loc[summary.model == "vlm-sam3", "privileged"].any()


def test_source_and_chain_in_one_run_ask_each_answer_once(tmp_path, polyps):
    root, masks, shas = polyps
    ckpt = tiny_sam3.save(tmp_path / "sam3")
    with fo.FakeOpenAI(lambda req: fo.completion(fo.boxes(masks[shas[req.image_sha]]))) as srv:
        cfg = _config(tmp_path, root, srv.url, ckpt, name="vlm")
        store = tmp_path / "runs" / "s.sqlite"
        _cli("run", "--config", str(cfg), "--store", str(store), "--models", "vlm-sam3,vlm", "-q")
        assert len(srv.log) == len(masks)
    assert {s for s, _, _ in _rows(store, "vlm-sam3").values()} == {"ok"}
    assert {s for s, _, _ in _rows(store, "vlm").values()} == {"ok"}


def test_a_first_stage_failure_is_a_row_of_the_chain_with_its_reason(tmp_path, polyps):
    root, masks, shas = polyps
    ckpt = tiny_sam3.save(tmp_path / "sam3")
    ids = sorted(masks)
    refuse, prose, point, nothing = ids[:4]

    def behave(req):
        sid = shas[req.image_sha]
        if sid == refuse:
            return fo.error(400, "Invalid image")
        if sid == prose:
            return fo.completion("I see a pinkish polyp near the centre.")
        if sid == point:
            return fo.completion('[{"point_2d": [500, 500], "label": "polyp"}]')
        if sid == nothing:
            return fo.completion("[]")
        return fo.completion(fo.boxes(masks[sid]))

    with fo.FakeOpenAI(behave) as srv:
        cfg = _config(tmp_path, root, srv.url, ckpt, name="vlm")
        store = tmp_path / "runs" / "s.sqlite"
        _cli("run", "--config", str(cfg), "--store", str(store), "--models", "vlm-sam3,spec", "-q")
    rows = _rows(store, "vlm-sam3")
    assert set(rows) == set(masks)
    assert rows[refuse][0] == "api_error" and rows[refuse][1].startswith("first stage (vlm): ")
    assert "Invalid image" in rows[refuse][1]
    assert rows[prose][0] == "unparseable" and rows[prose][1].startswith("first stage (vlm): ")
    assert rows[point][0] == "unsupported_format" and "points only" in rows[point][1]
    assert rows[nothing][0] == "ok" and rows[nothing][2]["second_stage"]["note"] == "the first stage located nothing"
    assert all(rows[s][0] == "ok" for s in ids[4:])
    for sid in (refuse, prose, point):
        assert rows[sid][2]["first_stage"]["model"] == "vlm"


def test_a_chain_names_what_is_wrong_with_its_entry(tmp_path):
    from omniseg import models
    from omniseg.config import ModelConfig
    from omniseg.errors import OmnisegError

    with pytest.raises(OmnisegError, match=r"'segmenter.kind': 'ellipse' cannot be prompted with boxes; expected one "
                                           r"of: sam3"):
        models.build(ModelConfig(name="c", kind="chain", options={"source": "x", "segmenter": {"kind": "ellipse"}}))
    ckpt = tiny_sam3.save(tmp_path / "sam3")
    c = models.build(ModelConfig(name="c", kind="chain", options={"source": "nope", "segmenter": {
        "kind": "sam3", "options": {"checkpoint": str(ckpt)}}}))
    with pytest.raises(OmnisegError, match="model 'c': unknown model 'nope'"):
        models.link([c], [ModelConfig(name="ellipse", kind="ellipse")])
    with pytest.raises(OmnisegError, match=r"'segmenter.options.mode'"):
        models.build(ModelConfig(name="c", kind="chain", options={"source": "x", "segmenter": {
            "kind": "sam3", "options": {"checkpoint": str(ckpt), "mode": "telepathy"}}}))


def test_omniseg_list_shows_the_chain_kind_and_every_metric_name_whole():
    out = CliRunner().invoke(app, ["list"]).output
    kinds = out.split("model kinds:")[1].split("metrics:")[0]
    assert any(line.split()[:3] == ["chain", "role", "omnimodel"] for line in kinds.splitlines() if line.strip())
    metrics = [line for line in out.split("metrics:")[1].split("roles:")[0].splitlines() if line.strip()]
    assert len({line.index(line.split()[1]) for line in metrics}) == 1  # descriptions start in one column

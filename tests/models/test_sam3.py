"""The `sam3` kind on a tiny randomly initialised SAM 3 (no download): batching, sizes, thresholds, the union
rule, box prompts in the image's pixel coordinates, and rows for failures. Its masks mean nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from omniseg import config, datasets, models
from omniseg.cli import app
from omniseg.config import ModelConfig
from omniseg.datasets.base import Sample
from omniseg.errors import OmnisegError
from omniseg.inference.runner import run
from omniseg.models.sam3 import concept, reference_box
from omniseg.store.database import Store
from omniseg.standins import tiny_sam3

from conftest import KVASIR_REAL, make_kvasir, write_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_sam3.save(tmp_path_factory.mktemp("sam3") / "tiny")


def build(checkpoint, **options):
    return models.build(ModelConfig(name="sam", kind="sam3", options={"checkpoint": str(checkpoint),
                                                                      "target": "the polyp", **options}))


def samples(n: int = 3) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        h, w = 40 + 7 * i, 61 - 5 * i  # every image another size, none the model's 56 x 56
        mask = np.zeros((h, w), bool)
        mask[5 + i:20 + i, 8:30 - i] = True
        out.append(Sample(f"c{i}", (rng.random((h, w, 3)) * 255).astype(np.uint8), mask))
    return out


def expected(m, chunk: list[Sample], boxes=None) -> list[dict]:
    """What SAM 3's own processor makes of the model's output for the chunk (the reference for omniseg's rule)."""
    kw = {"input_boxes": boxes, "input_boxes_labels": [[1] for _ in chunk]} if boxes else {}
    inputs = m.processor(images=[s.image for s in chunk], text=["polyp"] * len(chunk), return_tensors="pt", **kw)
    with torch.inference_mode():
        out = m.net(**inputs)
    return m.processor.post_process_instance_segmentation(out, threshold=m.options.score_threshold,
                                                          mask_threshold=m.options.mask_threshold,
                                                          target_sizes=[s.mask.shape for s in chunk])


def test_the_prompt_comes_from_the_target():
    assert concept("the polyp") == "polyp" and concept("A breast tumour") == "breast tumour"
    assert concept("an optic disc ") == "optic disc" and concept("vessels") == "vessels"


def test_batches_come_back_at_each_images_size_united_above_the_score_threshold(checkpoint):
    s = samples(3)
    m = build(checkpoint, score_threshold=0.0, batch_size=2)  # 3 images: a batch of 2, then 1
    assert m.prompt == "polyp" and m.role == "foundation" and not m.privileged
    preds = m.predict_batch(s)
    want = expected(m, s[:2]) + expected(m, s[2:])
    for p, sample, w in zip(preds, s, want):
        assert p.status == "ok" and p.mask.shape == sample.mask.shape
        assert p.meta["instances"] == len(w["scores"]) == tiny_sam3.QUERIES  # threshold 0 keeps every query
        assert (p.mask == w["masks"].numpy().astype(bool).any(axis=0)).all()
    best = build(checkpoint, score_threshold=0.0, combine="best").predict_batch(s[:1])[0]
    w = want[0]
    assert (best.mask == w["masks"][int(w["scores"].argmax())].numpy().astype(bool)).all()
    assert (best.mask <= preds[0].mask).all() and best.mask.sum() < preds[0].mask.sum()


def test_nothing_above_the_threshold_is_an_empty_mask_not_a_failure(checkpoint):
    preds = build(checkpoint, score_threshold=1.0).predict_batch(samples(2))
    assert [p.status for p in preds] == ["ok", "ok"] and not any(p.mask.any() for p in preds)
    assert [p.meta["instances"] for p in preds] == [0, 0]


def test_the_box_oracle_prompts_with_the_reference_box_in_pixels_and_is_privileged(checkpoint, monkeypatch):
    m = build(checkpoint, mode="box-oracle", score_threshold=0.0)
    assert m.privileged and m.signature()["privileged"] is True
    assert build(checkpoint).signature_hash() != m.signature_hash()
    s = samples(2)
    s.append(Sample("empty", s[0].image, np.zeros_like(s[0].mask)))
    seen = []
    real = m.processor.__call__

    def spy(*a, **kw):
        seen.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(type(m.processor), "__call__", lambda self, *a, **kw: spy(*a, **kw))
    preds = m.predict_batch(s)
    boxes = [[reference_box(x.mask)] for x in s[:2]]
    assert boxes[0] == [[8.0, 5.0, 30.0, 20.0]]  # x0, y0, x1, y1 of mask[5:20, 8:30], in the image's own pixels
    assert seen[0]["input_boxes"] == boxes and len(seen[0]["images"]) == 2  # the empty reference is not sent
    inputs = real(images=[x.image for x in s[:2]], text=["polyp"] * 2, input_boxes=boxes,
                  input_boxes_labels=[[1], [1]], return_tensors="pt")
    h, w = s[0].mask.shape  # the processor normalises them to the image: centre x, centre y, width, height
    assert inputs["input_boxes"][0, 0].tolist() == pytest.approx([19 / w, 12.5 / h, 22 / w, 15 / h], abs=1e-6)
    for p, want in zip(preds[:2], expected(m, s[:2], boxes)):
        assert (p.mask == want["masks"].numpy().astype(bool).any(axis=0)).all()
        assert "box-oracle" in p.meta["privileged"]
    assert preds[2].status == "ok" and not preds[2].mask.any() and "no box" in preds[2].meta["note"]


def test_a_batch_whose_forward_pass_fails_is_tried_image_by_image(checkpoint, monkeypatch):
    """Out of memory on a batch of two: each image alone succeeds; a forward pass that always fails gives every
    sample its own error row, never an exception."""
    m = build(checkpoint, batch_size=2)
    calls = {"n": 0, "fail": {1}}
    real = m.net.forward

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] in calls["fail"]:
            raise RuntimeError("CUDA out of memory (injected)")
        return real(*a, **kw)

    monkeypatch.setattr(m.net, "forward", flaky)
    preds = m.predict_batch(samples(3))
    assert [p.status for p in preds] == ["ok", "ok", "ok"] and calls["n"] == 4  # batch, 2 alone, last batch
    calls.update(n=0, fail=set(range(1, 100)))
    preds = m.predict_batch(samples(3))
    assert [p.status for p in preds] == ["error", "error", "error"] and calls["n"] == 4
    assert all("out of memory" in p.reason for p in preds)


def test_a_checkpoint_that_does_not_load_is_one_message_naming_it(tmp_path):
    with pytest.raises(OmnisegError, match="could not load the SAM 3 checkpoint") as e:
        build(tmp_path / "no-such-folder")
    assert "no-such-folder" in str(e.value)
    root = make_kvasir(tmp_path / "k", n=2)
    entry = f"  - name: sam\n    kind: sam3\n    options: {{checkpoint: {tmp_path / 'no-such-folder'}}}\n"
    r = CliRunner().invoke(app, ["run", "--config", str(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg",
                                                                      root, entry)),
                                 "--store", str(tmp_path / "s.sqlite"), "-q"])
    assert r.exit_code == 2 and "no-such-folder" in r.output and "Traceback" not in r.output, r.output


def test_a_full_kvasir_seg_test_split_run_writes_200_rows(tmp_path, checkpoint):
    if not KVASIR_REAL.is_dir():
        pytest.skip("the real Kvasir-SEG is not in ../shared/data")
    entry = f"  - name: sam\n    kind: sam3\n    options: {{checkpoint: {checkpoint}, target: the polyp, batch_size: 8}}\n"
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", KVASIR_REAL, entry))
    with Store(tmp_path / "s.sqlite") as st:
        s = run(cfg, st, split="test", progress=False)
        df = st.query("SELECT p.status, c.dice FROM predictions p JOIN scores c USING (task, sample_id, model)")
    assert len(df) == 200 == len(datasets.open("kvasir-seg", KVASIR_REAL).refs("test"))
    assert (df.status == "ok").all() and df.dice.between(0, 1).all() and s.statuses == {"ok": 200}

"""PaliGemma's <seg> tokens drawn with its mask codebook: the decoder against a NumPy one written from the
definitions of convolution and big_vision's architecture, and answers in the documented token grammar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omniseg.errors import OmnisegError
from omniseg.models.api import paligemma_masks
from omniseg.models.api.forms import decode_answer
from omniseg.standins import tiny_codebook


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """out[o, i, j] = b[o] + sum over c, u, v of w[o, c, u, v] * x_padded[c, i + u, j + v]."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h, wd = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    out = np.zeros((w.shape[0], h, wd), np.float64) + b[:, None, None]
    for u in range(k):
        for v in range(k):
            out += np.einsum("oc,chw->ohw", w[:, :, u, v], xp[:, u:u + h, v:v + wd])
    return out


def conv_transposed(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 2, pad: int = 1) -> np.ndarray:
    """Each input pixel spreads w[c, o] into the output at stride; the borders (pad) are cut off."""
    c, h, wd = x.shape
    k = w.shape[2]
    full = np.zeros((w.shape[1], (h - 1) * stride + k, (wd - 1) * stride + k), np.float64)
    for i in range(h):
        for j in range(wd):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("c,couv->ouv", x[:, i, j], w)
    return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad] + b[:, None, None]


def reference(path, indices: list[int]) -> np.ndarray:
    """big_vision's decoder, step by step in NumPy: 16 embeddings as 4 x 4, 1 x 1 conv + ReLU, two residual blocks,
    four transposed convolutions + ReLU, a 1 x 1 conv."""
    with np.load(path) as f:
        p = {k: f[k].astype(np.float64) for k in f.files}
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    x = p["_vq_vae._embedding"][indices].reshape(4, 4, -1).transpose(2, 0, 1)
    x = relu(conv(x, p["decoder.0.weight"], p["decoder.0.bias"], 0))
    for blk in (2, 3):
        n = f"decoder.{blk}.net."
        y = relu(conv(x, p[n + "0.weight"], p[n + "0.bias"], 1))
        y = relu(conv(y, p[n + "2.weight"], p[n + "2.bias"], 1))
        x = x + conv(y, p[n + "4.weight"], p[n + "4.bias"], 0)
    for layer in (4, 6, 8, 10):
        x = relu(conv_transposed(x, p[f"decoder.{layer}.weight"], p[f"decoder.{layer}.bias"]))
    return conv(x, p["decoder.12.weight"], p["decoder.12.bias"], 0)[0]


def test_the_decoder_is_big_vision_s_architecture_on_the_file_s_weights(tmp_path):
    path = tiny_codebook.save(tmp_path / "vae.npz", seed=3)
    rng = np.random.default_rng(0)
    idx = [rng.integers(0, 128, 16).tolist() for _ in range(3)]
    got = paligemma_masks.decode(path, idx)
    assert got.shape == (3, 64, 64)
    for i in range(3):
        want = reference(path, idx[i])
        assert np.abs(got[i] - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(got[0] - got[1]).max() > 1e-3  # the indices matter


def _answer(seg: list[int], label: str = "polyp") -> str:
    # big_vision's PaliGemma README: "segment polyp" -> four <loc> (y0 x0 y1 x1 on 0..1023), 16 <seg>, the label
    return "<loc0256><loc0128><loc0768><loc0640>" + "".join(f"<seg{i:03d}>" for i in seg) + f" {label}"


def test_a_segmentation_answer_fills_the_decoded_mask_inside_its_box(tmp_path):
    full = tiny_codebook.save(tmp_path / "full.npz", constant=1.0)  # a decoder that answers +1 everywhere
    d = decode_answer(_answer(list(range(16))), None, 200, 100, seg_codebook=str(full))
    assert d.status == "ok" and d.form == "paligemma/seg"
    want = np.zeros((200, 100), bool)
    want[round(256 / 1024 * 200):round(768 / 1024 * 200), round(128 / 1024 * 100):round(640 / 1024 * 100)] = True
    assert np.array_equal(d.mask, want)
    assert d.located == {"boxes": [[12, 50, 62, 150]]}
    empty = tiny_codebook.save(tmp_path / "empty.npz", constant=-1.0)
    assert not decode_answer(_answer([5] * 16), None, 200, 100, seg_codebook=str(empty)).mask.any()


def test_a_random_codebook_draws_what_the_reference_decoder_draws_resized_as_the_demo_does(tmp_path):
    path = tiny_codebook.save(tmp_path / "vae.npz", seed=1)
    idx = list(range(40, 56))
    d = decode_answer(_answer(idx), None, 200, 100, seg_codebook=str(path))
    box = d.mask[50:150, 12:62]
    assert np.array_equal(box, paligemma_masks.in_box(reference(path, idx), 100, 50))
    assert not d.mask[:50].any() and not d.mask[150:].any()


def test_without_the_codebook_or_with_a_bad_index_the_row_says_why(tmp_path):
    d = decode_answer(_answer(list(range(16))), None, 64, 64)
    assert d.status == "unsupported_format" and "seg_codebook" in d.reason
    path = tiny_codebook.save(tmp_path / "vae.npz", entries=32)
    d = decode_answer(_answer([40] + [0] * 15), None, 64, 64, seg_codebook=str(path))
    assert d.status == "invalid_answer" and any("past the codebook's 32 entries" in n for n in d.notes)
    partial = decode_answer("<loc0000><loc0000><loc0512><loc0512><seg001><seg002> polyp", None, 64, 64)
    assert partial.status == "ok" and partial.form == "paligemma/loc" and partial.mask[:32, :32].all()
    assert any("2 <seg> tokens, not 16" in n for n in partial.notes)


def test_a_file_that_is_not_the_codebook_is_one_message_naming_it(tmp_path):
    from omniseg import models
    from omniseg.config import ModelConfig

    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    for path, says in ((bad, "not PaliGemma's mask codebook"), (tmp_path / "none.npz", "no such file")):
        with pytest.raises(OmnisegError, match=f"model 'pg': option seg_codebook: {path}.*{says}"):
            models.build(ModelConfig(name="pg", kind="openai", options={"model": "google/paligemma2-3b-mix-448",
                                                                         "seg_codebook": str(path)}))


def test_the_openai_kind_draws_seg_tokens_with_its_codebook_and_signs_the_file_s_content(tmp_path):
    from omniseg import models
    from omniseg.config import ModelConfig
    from omniseg.datasets.base import Sample

    a = tiny_codebook.save(tmp_path / "a.npz", constant=1.0)
    opts = {"model": "google/paligemma2-3b-mix-448", "key_env": None, "seg_codebook": str(a)}
    m = models.build(ModelConfig(name="pg", kind="openai", options=opts))
    body = json.dumps({"id": "x", "object": "chat.completion", "model": "pg", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": _answer(list(range(16)))}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
    s = Sample("s", np.zeros((200, 100, 3), np.uint8), np.zeros((200, 100), bool))
    p = m.redecode(body, s)
    assert p.status == "ok" and p.mask[50:150, 12:62].all() and p.mask.sum() == 100 * 50
    copy = tmp_path / "elsewhere" / "a.npz"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    other = tiny_codebook.save(tmp_path / "b.npz", constant=-1.0)
    sig = lambda path: models.build(ModelConfig(name="pg", kind="openai", options={**opts, "seg_codebook": str(path)})
                                    ).signature_hash()  # noqa: E731
    assert sig(copy) == m.signature_hash() != sig(other)

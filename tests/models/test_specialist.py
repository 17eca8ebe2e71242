"""The specialist model: reload gives identical predictions, plain state_dicts, bad checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import segmentation_models_pytorch  # noqa: F401  (a hard dependency: a broken install fails here, never skips)
import torch
from PIL import Image

from omniseg import models
from omniseg.config import ModelConfig
from omniseg.datasets.base import Sample
from omniseg.errors import CheckpointError
from omniseg.models.specialist import NetSpec, build_net, save_checkpoint

from conftest import blob_mask, lesion_image

SPEC = NetSpec(encoder="resnet18", input_size=64)


def samples(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate([(60, 70), (64, 64), (50, 90)][:n]):
        m = blob_mask(h, w, rng)
        out.append(Sample(f"s{i}", lesion_image(m, rng), m))
    return out


def unet(path, **options):
    return models.build(ModelConfig(name="unet", kind="unet", options={"checkpoint": str(path), "device": "cpu", **options}))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_net(SPEC).eval()


def test_saved_checkpoint_reloads_with_identical_predictions(tmp_path, net):
    save_checkpoint(tmp_path / "a.pt", net, SPEC, val_dice=0.5)
    first = unet(tmp_path / "a.pt").predict_batch(samples())
    second = unet(tmp_path / "a.pt", batch_size=1).predict_batch(samples())
    for a, b, s in zip(first, second, samples()):
        assert a.status == "ok" and a.mask.shape == s.mask.shape and a.prob.shape == (64, 64)
        assert np.array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-5)
    # the probability map is the network's own output, resized back
    from omniseg.models.specialist import postprocess, preprocess

    with torch.inference_mode():
        native, full = postprocess(torch.sigmoid(net(preprocess([samples()[0].image], SPEC))), [(60, 70)], SPEC)[0]
    np.testing.assert_allclose(first[0].prob, native, atol=1e-5)
    assert np.array_equal(first[0].mask, full > 0.5)


def test_inference_feeds_the_network_the_pixels_training_fed_it():
    from omniseg.models.specialist import preprocess
    from omniseg.training.train import _prepare

    for s in samples():  # 60x70, 64x64 (no resize) and 50x90 against a 64-pixel input
        trained, _ = _prepare(s, SPEC)
        expected = preprocess([trained], SPEC.model_copy(update={"resize": "pad"}))  # what a training batch is
        assert torch.equal(preprocess([s.image], SPEC), expected), s.id
    wide = np.random.default_rng(3).integers(0, 256, (120, 300, 3), dtype=np.uint8)
    by_pil = np.asarray(Image.fromarray(wide).resize((64, 64), Image.BILINEAR))
    x = preprocess([wide], SPEC)
    mean, std = torch.tensor(SPEC.mean).view(3, 1, 1), torch.tensor(SPEC.std).view(3, 1, 1)
    assert torch.allclose(x[0] * std + mean, torch.from_numpy(by_pil).permute(2, 0, 1).float() / 255, atol=1e-6)


def test_plain_state_dict_loads_with_arch_from_options(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    m = unet(tmp_path / "plain.pt", encoder="resnet18", input_size=64)
    assert m.info["format"] == "state_dict" and m.predict(samples(1)[0]).status == "ok"
    save_checkpoint(tmp_path / "full.pt", net, SPEC)
    full = unet(tmp_path / "full.pt").predict(samples(1)[0])
    assert np.array_equal(full.mask, m.predict(samples(1)[0]).mask)


def test_a_half_precision_state_dict_is_cast_as_a_copy_casts_and_a_checkpoint_is_loaded_as_saved(tmp_path, net):
    """Networks are built without weights and given the checkpoint's tensors; one of another dtype is cast to the
    network's, as loading into initialised weights always did, and nothing is left unloaded."""
    from omniseg.models.specialist import load_checkpoint

    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, tmp_path / "h.pt")
    half, _, _ = load_checkpoint(tmp_path / "h.pt", fallback=SPEC)
    assert {t.dtype for t in half.parameters()} == {torch.float32}
    assert all(torch.equal(t, net.state_dict()[k].half().to(t.dtype)) for k, t in half.state_dict().items())
    save_checkpoint(tmp_path / "a.pt", net, SPEC)
    loaded, _, _ = load_checkpoint(tmp_path / "a.pt")
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert all(torch.equal(t, net.state_dict()[k]) for k, t in loaded.state_dict().items())
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), net(x))


def test_bad_checkpoints_are_one_clear_message(tmp_path, net):
    with pytest.raises(CheckpointError, match="not found: train it with `omniseg train"):
        unet(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        unet(tmp_path / "junk.pt")
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match="does not fit Unet/resnet34"):
        unet(tmp_path / "r18.pt", encoder="resnet34")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="neither an omniseg checkpoint nor a state_dict"):
        unet(tmp_path / "odd.pt")


def test_signature_follows_the_checkpoint_not_the_device(tmp_path, net):
    save_checkpoint(tmp_path / "a.pt", net, SPEC)
    a = unet(tmp_path / "a.pt")
    b = unet(tmp_path / "a.pt", batch_size=2)
    assert a.signature_hash() == b.signature_hash()
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "b.pt", build_net(SPEC), SPEC)
    assert unet(tmp_path / "b.pt").signature_hash() != a.signature_hash()


def test_roi_zeroes_predictions_outside_it(tmp_path, net):
    save_checkpoint(tmp_path / "a.pt", net, SPEC.model_copy(update={"threshold": 0.01}))
    s = samples(1)[0]
    roi = np.zeros(s.mask.shape, bool)
    roi[10:30, 10:30] = True
    p = unet(tmp_path / "a.pt").predict(Sample("r", s.image, s.mask, roi=roi))
    assert p.mask.any() and not (p.mask & ~roi).any()


def test_pad_policy_predicts_at_full_resolution_inside_the_fov(tmp_path):
    from conftest import make_drive
    from omniseg import datasets

    torch.manual_seed(0)
    spec = NetSpec(encoder="resnet18", input_size=64, resize="pad", threshold=0.3)
    save_checkpoint(tmp_path / "v.pt", build_net(spec), spec)
    ds = datasets.get("drive")(make_drive(tmp_path / "DRIVE", size=(70, 90)))
    s = ds.load(ds.refs("test")[0])
    p = unet(tmp_path / "v.pt").predict(s)
    assert p.status == "ok" and p.mask.shape == (70, 90) and p.prob.shape == (70, 90)  # padded to 96x96, cropped back
    assert not (p.mask & ~s.roi).any()

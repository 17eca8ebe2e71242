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
from omniseg.models.specialist import NetSpec, build_net, confidence, save_checkpoint

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


def test_the_map_is_resized_back_by_half_pixel_bilinear_interpolation():
    """The full-size map is the network's map resized with pixel centres aligned as PIL and training do
    (align_corners=False): a 2-wide step becomes 0, .25, .75, 1 across four pixels (corners aligned: 0, 1/3, 2/3, 1)."""
    from omniseg.models.specialist import postprocess

    p = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])[None]  # one map, one channel, 2 x 2
    native, full = postprocess(p, [(4, 4)], NetSpec(input_size=32))[0]
    assert native.shape == (2, 2) and full.shape == (4, 4)
    np.testing.assert_allclose(full[0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(full[:, 2], 0.75, atol=1e-6)
    padded, cropped = postprocess(torch.arange(12.0).view(1, 1, 3, 4), [(2, 3)], NetSpec(input_size=32, resize="pad"))[0]
    assert np.array_equal(padded, cropped) and np.array_equal(cropped, [[0, 1, 2], [4, 5, 6]])


def test_confidence_counts_only_pixels_above_the_floor():
    p = np.array([0.3, 0.9, 0.05], np.float32)
    assert confidence(p, floor=0.3) == pytest.approx(0.8)  # 0.3 is at the floor, not above it
    assert confidence(p, floor=0.2) == pytest.approx((0.4 + 0.8) / 2)
    assert confidence(np.zeros((3, 3), np.float32)) == 0.0  # nothing found: the doubtful answer
    assert confidence(np.full((2, 2), 0.1, np.float32)) == 0.0  # the default floor: 0.1 is not above it


def test_the_signature_names_the_checkpoints_content_threshold_and_training(tmp_path, net):
    from omniseg.models.specialist import file_sha256

    path = tmp_path / "a.pt"
    training = {"epoch": 4, "minutes": 1.5, "val_dice": 0.61, "fit_images": 80, "val_images": 20, "device": "cpu",
                "precision": "fp32", "images_per_s": 12.5, "trained_at": "2026-12-08", "epochs_planned": 10,
                "epochs_done": 5, "stopped": "budget", "budget_minutes": 2.0, "minutes_total": 2.1, "share_done": 0.5}
    save_checkpoint(path, net, SPEC.model_copy(update={"threshold": 0.3}), task="polyp", dataset="kvasir-seg",
                    split_fingerprint="abc", unrelated="x", **training)
    sig = unet(path).signature()
    assert sig["checkpoint_sha256"] == file_sha256(path) and sig["threshold"] == 0.3
    assert sig["trained_on"] == {"task": "polyp", "dataset": "kvasir-seg", "split_fingerprint": "abc"}
    assert sig["training"] == training  # every field the manifest shows, and nothing else
    save_checkpoint(path, net, SPEC, epoch=4, val_dice=0.61)
    assert unet(path).signature()["training"] == {"epoch": 4, "val_dice": 0.61}
    assert unet(path, threshold=0.7).signature()["threshold"] == 0.7  # the option overrides the checkpoint's
    before = unet(path).signature_hash()
    torch.manual_seed(5)
    save_checkpoint(path, build_net(SPEC), SPEC, epoch=4, val_dice=0.61)  # other weights, all else the same
    assert unet(path).signature_hash() != before
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    plain = unet(tmp_path / "plain.pt", encoder="resnet18", input_size=64).signature()
    assert plain["trained_on"] is None and plain["training"] is None and plain["threshold"] == 0.5


def image_sample(sid, h, w, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    m = blob_mask(h, w, rng)
    image = lesion_image(m, rng)
    return Sample(sid, image if channels == 3 else image[..., 0], m)


def test_pad_batches_only_images_of_one_size_and_a_failing_group_leaves_the_others(tmp_path):
    """With resize: pad, a batch is padded to its largest image, so images of different sizes go in separate
    passes: each prediction is the one it gets alone. A pass that fails is retried image by image, and the groups
    after it still run."""
    torch.manual_seed(0)
    spec = NetSpec(encoder="resnet18", input_size=64, resize="pad", threshold=0.5)
    save_checkpoint(tmp_path / "p.pt", build_net(spec), spec)
    model = unet(tmp_path / "p.pt")
    small, big, small2 = image_sample("a", 40, 40), image_sample("b", 100, 100, 1), image_sample("c", 40, 40, 2)
    together = model.predict_batch([small, big, small2])
    for s, p in zip([small, big, small2], together):
        alone = model.predict_batch([s])[0]
        assert p.status == "ok" and p.prob.shape == s.mask.shape
        np.testing.assert_allclose(p.prob, alone.prob, atol=1e-5)  # a 40 x 40 image padded to 128 would differ
        assert p.meta == {"confidence": pytest.approx(confidence(p.prob))}

    grey = image_sample("grey", 40, 40, 3, channels=1)  # no channel axis: the network cannot take it
    out = model.predict_batch([grey, big])
    assert out[0].status == "error" and out[0].reason.split(":")[0] in ("RuntimeError", "IndexError", "ValueError")
    assert out[1].status == "ok"  # the next group still ran


def test_a_failing_pass_of_two_is_retried_one_by_one(tmp_path, net):
    save_checkpoint(tmp_path / "a.pt", net, SPEC)
    model = unet(tmp_path / "a.pt")
    good, grey = samples(1)[0], image_sample("grey", 60, 70, 3, channels=1)
    out = model.predict_batch([good, grey])
    assert out[0].status == "ok" and out[1].status == "error"
    assert out[1].reason.startswith(("RuntimeError: ", "IndexError: ", "ValueError: "))


def test_the_mask_is_the_full_size_map_strictly_above_the_threshold_inside_the_roi(tmp_path, net):
    save_checkpoint(tmp_path / "a.pt", net, SPEC)
    s = samples(1)[0]
    full = unet(tmp_path / "a.pt").probabilities([s.image])[0][1]
    at = float(np.sort(full.ravel())[full.size // 2])  # a value the map holds: that pixel is not above it
    p = unet(tmp_path / "a.pt", threshold=at).predict(s)
    assert np.array_equal(p.mask, full > np.float32(at)) and not p.mask[full == np.float32(at)].any()
    roi = np.zeros(s.mask.shape, bool)
    roi[:, : s.mask.shape[1] // 2] = True
    inside = unet(tmp_path / "a.pt", threshold=at).predict(Sample("r", s.image, s.mask, roi=roi))
    assert np.array_equal(inside.mask, (full > np.float32(at)) & roi) and not np.array_equal(inside.mask, roi)
    assert inside.meta == {"confidence": pytest.approx(confidence(inside.prob))} and inside.meta["confidence"] > 0


@pytest.mark.parametrize("h, w, side", [(65, 97, (96, 128)), (40, 70, (64, 96)), (64, 64, (64, 64))])
def test_pad_pads_each_side_up_to_a_multiple_of_32_with_the_image_at_the_top_left(h, w, side):
    from omniseg.models.specialist import preprocess

    spec = NetSpec(resize="pad")
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x = preprocess([image], spec)
    assert tuple(x.shape) == (1, 3, *side)
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    torch.testing.assert_close(x[0, :, :h, :w], (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std)
    assert torch.equal(x[0, :, h:, :], ((0 - mean) / std).expand(3, side[0] - h, side[1]))  # black, normalized
    assert torch.equal(x[0, :, :, w:], ((0 - mean) / std).expand(3, side[0], side[1] - w))


def test_resize_feeds_the_input_size_whatever_it_is_and_reads_views_of_any_layout():
    """input_size need not be a multiple of 32 (a 48 input is not padded); a flipped or read-only view (negative
    strides) is read as the array it shows."""
    from omniseg.models.specialist import preprocess

    image = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    spec = NetSpec(input_size=48)
    assert tuple(preprocess([image, image], spec).shape) == (2, 3, 48, 48)
    flipped = image[:, ::-1]
    frozen = image.copy()
    frozen.flags.writeable = False
    want = preprocess([np.ascontiguousarray(flipped), image], spec)
    assert torch.equal(preprocess([flipped, frozen], spec), want)
    assert torch.equal(preprocess([flipped], NetSpec(resize="pad"))[0, :, :48, :48], want[0])


def test_the_network_goes_to_the_picked_device_and_cuda_runs_are_deterministic(tmp_path, net, monkeypatch):
    """The device the options pick is where the checkpoint's network is put, and on CUDA cuDNN is set to its
    deterministic algorithms (a rerun gives the same masks). CUDA is stood in for: no GPU here."""
    from omniseg.models import specialist

    save_checkpoint(tmp_path / "a.pt", net, SPEC)
    real, asked = specialist.load_checkpoint, []

    def spy(path, fallback=None, device="cpu"):
        asked.append(device)
        return real(path, fallback, "cpu")

    monkeypatch.setattr(specialist, "load_checkpoint", spy)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    unet(tmp_path / "a.pt")
    assert asked == ["cpu"] and torch.backends.cudnn.deterministic is False  # not on the CPU
    monkeypatch.setattr(specialist, "pick_device", lambda wanted, who: "cuda:1")
    unet(tmp_path / "a.pt", device="cuda:1")
    assert asked == ["cpu", "cuda:1"]
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False


def test_passes_smaller_than_the_batch_give_each_image_its_own_map(tmp_path, net):
    save_checkpoint(tmp_path / "a.pt", net, SPEC)
    alone = unet(tmp_path / "a.pt", batch_size=1).predict_batch(samples())
    twos = unet(tmp_path / "a.pt", batch_size=2).predict_batch(samples())  # passes of 2, then 1
    assert len(twos) == 3
    for a, b in zip(alone, twos):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-5)
        assert np.array_equal(a.mask, b.mask)


def test_a_state_dict_with_a_tensor_the_network_lacks_does_not_fit(tmp_path, net):
    """Every tensor is the network's, whichever way it is loaded: an extra one is a checkpoint of another network."""
    state = dict(net.state_dict())
    state["decoder.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="does not fit Unet/resnet18"):
        unet(tmp_path / "extra.pt", encoder="resnet18", input_size=64)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(half, tmp_path / "extra16.pt")
    with pytest.raises(CheckpointError, match="does not fit Unet/resnet18"):
        unet(tmp_path / "extra16.pt", encoder="resnet18", input_size=64)


def test_a_checkpoint_that_pickles_objects_is_refused_unread(tmp_path, net):
    """Checkpoints are read with weights_only: a file that would run a pickled object's code is not a checkpoint."""
    import datetime

    from omniseg.models.specialist import FORMAT

    torch.save({"format": FORMAT, "net": SPEC.model_dump(mode="json"), "state_dict": net.state_dict(),
                "trained_at": datetime.date(2026, 12, 8)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        unet(tmp_path / "objects.pt")


def test_a_checkpoint_keeps_the_versions_it_was_made_with_and_its_info_is_the_rest(tmp_path, net):
    import platform

    import segmentation_models_pytorch as smp

    from omniseg import __version__
    from omniseg.models.specialist import file_sha256, load_checkpoint

    save_checkpoint(tmp_path / "a.pt", net, SPEC, epoch=2)
    _, spec, info = load_checkpoint(tmp_path / "a.pt")
    assert spec == SPEC
    assert info["versions"] == {"omniseg": __version__, "torch": str(torch.__version__),
                                "segmentation_models_pytorch": smp.__version__, "numpy": np.__version__,
                                "python": platform.python_version()}
    assert set(info) == {"format", "versions", "epoch", "sha256"}  # not the weights, not the network's description
    assert info["sha256"] == file_sha256(tmp_path / "a.pt")
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match=r"does not fit Unet/resnet34: Error\(s\) in loading state_dict"):
        unet(tmp_path / "r18.pt", encoder="resnet34")

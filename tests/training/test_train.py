"""Training the specialist for an epoch on generated data, resuming, and its checkpoint."""

from __future__ import annotations

import csv

import pytest

from omniseg import config
from omniseg.config import TrainConfig
from omniseg.models.specialist import NetSpec, load_checkpoint
from omniseg.inference.runner import open_dataset
from omniseg.training.train import train

from conftest import make_kvasir, write_config

TINY = NetSpec(encoder="resnet18", input_size=64)


def unet_config(tmp_path, n=20):
    root = make_kvasir(tmp_path / "k", n=n)
    models = f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'u.pt'}, input_size: 64}}\n"
    return config.load(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root, models))


def log_rows(ckpt):
    with open(ckpt.with_suffix(".log.csv")) as f:
        return list(csv.DictReader(f))


def test_one_epoch_writes_a_complete_checkpoint(tmp_path):
    cfg = unet_config(tmp_path)
    tc = TrainConfig(net=TINY, epochs=1, batch_size=4)
    res = train(cfg, tc, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    assert res.epochs == 1 and 0 <= res.best_val_dice <= 1 and res.device == "cpu"
    net, spec, info = load_checkpoint(tmp_path / "u.pt")
    assert spec == TINY
    for key in ("train", "split_fingerprint", "val_dice", "versions", "task", "epoch"):
        assert key in info, key
    assert info["versions"]["segmentation_models_pytorch"] and info["train"]["epochs"] == 1
    assert len(log_rows(tmp_path / "u.pt")) == 1


def test_interrupted_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    import omniseg.training.train as train_mod

    cfg = unet_config(tmp_path)
    tc = TrainConfig(net=TINY, epochs=3, batch_size=4)
    calls = {"n": 0}
    real = train_mod._validate_arrays

    def dies_in_epoch_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "_validate_arrays", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tc, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    assert [r["epoch"] for r in log_rows(tmp_path / "u.pt")] == ["1"]
    monkeypatch.setattr(train_mod, "_validate_arrays", real)
    other = tc.model_copy(update={"lr": 0.5})
    with pytest.raises(Exception, match="another training configuration"):
        train(cfg, other, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    res = train(cfg, tc, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    assert res.epochs == 3
    assert [r["epoch"] for r in log_rows(tmp_path / "u.pt")] == ["1", "2", "3"]
    # defect 11: a finished training left its (large) resume file beside the checkpoint
    assert (tmp_path / "u.pt").is_file() and not (tmp_path / "u.pt.resume").exists()


def test_a_time_budget_is_checked_every_step_and_still_leaves_a_checkpoint(tmp_path):
    """Issue 27: `--max-minutes 12` ran 27.9 minutes for one epoch: the budget was checked between epochs. Now a
    budget that is already spent stops the first epoch after its first step, validates and saves."""
    cfg = unet_config(tmp_path, n=40)
    tc = TrainConfig(net=TINY, epochs=50, batch_size=4, max_minutes=1e-6)
    res = train(cfg, tc, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    assert res.epochs == 1 and res.stopped == "time budget"
    assert res.images == 4  # one step of the first epoch's several, then validation and the checkpoint
    _, _, info = load_checkpoint(tmp_path / "u.pt")
    assert info["epoch"] == 1 and len(log_rows(tmp_path / "u.pt")) == 1


def test_auto_precision_on_a_cpu_without_bf16_says_it_falls_back(tmp_path, monkeypatch):
    import omniseg.training.data as td

    monkeypatch.setattr(td, "cpu_has_bf16", lambda: False)
    cfg = unet_config(tmp_path)
    with pytest.warns(UserWarning, match="no native bfloat16 .* fp32"):
        res = train(cfg, TrainConfig(net=TINY, epochs=1, batch_size=4, precision="auto"), open_dataset(cfg),
                    tmp_path / "u.pt", device="cpu", progress=False)
    assert res.precision == "fp32"


def test_full_resolution_training_on_random_crops(tmp_path):
    from conftest import make_drive

    root = make_drive(tmp_path / "DRIVE", n_train=8, n_test=1, size=(80, 72))
    models = f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'v.pt'}, resize: pad}}\n"
    cfg = config.load(write_config(tmp_path / "v.yaml", "vessel", "drive", root, models))
    tc = TrainConfig(net=NetSpec(encoder="resnet18", input_size=64, resize="pad"), epochs=1, batch_size=2, crop=64,
                     val_fraction=0.3)
    res = train(cfg, tc, open_dataset(cfg), tmp_path / "v.pt", device="cpu", progress=False)
    assert res.epochs == 1
    _, spec, info = load_checkpoint(tmp_path / "v.pt")
    assert spec.resize == "pad" and info["val_images"] >= 1


@pytest.mark.parametrize("resize", ["resize", "pad"])
def test_both_data_paths_augment_through_one_pipeline_at_the_configured_strength(tmp_path, monkeypatch, resize):
    """`augment: strong` with `resize: pad` gave `basic` (the full-resolution path had its own augmentation): every
    training batch of either path goes through DeviceAugment at the configured strength, as uint8 images at the
    size the network takes (padded to a multiple of 32 on the pad path), and the strong warp is drawn."""
    import torch

    from conftest import make_drive
    from omniseg.training import data

    seen, warped = [], []
    real_call, real_grid = data.DeviceAugment.__call__, torch.nn.functional.affine_grid

    def spy(self, x_u8, y_u8, train=True):
        if train:
            seen.append((self.strength, x_u8.dtype, tuple(x_u8.shape[1:3]), sorted(torch.unique(y_u8).tolist())))
        return real_call(self, x_u8, y_u8, train)

    def grid(*a, **kw):
        warped.append(1)
        return real_grid(*a, **kw)

    monkeypatch.setattr(data.DeviceAugment, "__call__", spy)
    monkeypatch.setattr(torch.nn.functional, "affine_grid", grid)
    root = make_drive(tmp_path / "DRIVE", n_train=8, n_test=1, size=(80, 72))
    models = f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'v.pt'}, resize: {resize}}}\n"
    cfg = config.load(write_config(tmp_path / "v.yaml", "vessel", "drive", root, models))
    tc = TrainConfig(net=NetSpec(encoder="resnet18", input_size=64, resize=resize), epochs=1, batch_size=2, crop=48,
                     val_fraction=0.3, augment="strong")
    train(cfg, tc, open_dataset(cfg), tmp_path / "v.pt", device="cpu", progress=False)
    assert len(seen) >= 2 and {s[0] for s in seen} == {"strong"} and {s[1] for s in seen} == {torch.uint8}
    assert {s[2] for s in seen} == {(64, 64)}  # the input size; on the pad path, 48-pixel crops padded to 64
    assert all(set(s[3]) <= {0, 1} for s in seen) and warped  # masks as 0/1; the strong warp was drawn


def test_the_checkpoint_is_the_best_epoch_of_the_log(tmp_path, monkeypatch):
    """The saved weights are those of the epoch with the highest validation Dice, not the last epoch's."""
    import omniseg.training.train as train_mod

    cfg = unet_config(tmp_path)
    scripted = iter([0.21, 0.64, 0.43])
    monkeypatch.setattr(train_mod, "_validate_arrays", lambda *a, **k: next(scripted))
    train(cfg, TrainConfig(net=TINY, epochs=3, batch_size=4), open_dataset(cfg), tmp_path / "u.pt", device="cpu",
          progress=False)
    log = log_rows(tmp_path / "u.pt")
    best = max(log, key=lambda r: float(r["val_dice"]))
    _, _, info = load_checkpoint(tmp_path / "u.pt")
    assert int(best["epoch"]) == 2 and info["epoch"] == 2 and info["val_dice"] == pytest.approx(0.64)


def test_the_split_is_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from omniseg.datasets.kvasir import KvasirSeg

    cfg = unet_config(tmp_path)
    tc = TrainConfig(net=TINY, epochs=1, batch_size=4, augment="strong")
    train(cfg, tc, open_dataset(cfg), tmp_path / "u.pt", device="cpu", progress=False)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and {p.name for p in cached[0].iterdir()} == {"images.npy", "masks.npy", "ids.json"}
    loads = []
    real = KvasirSeg.load
    monkeypatch.setattr(KvasirSeg, "load", lambda self, ref: loads.append(ref.id) or real(self, ref))
    res = train(cfg, tc, open_dataset(cfg), tmp_path / "u2.pt", device="cpu", progress=False)
    assert loads == [] and res.epochs == 1  # no image decoded again
    other = tc.model_copy(update={"net": NetSpec(encoder="resnet18", input_size=96)})
    train(cfg, other, open_dataset(cfg), tmp_path / "u3.pt", device="cpu", progress=False)
    assert len(loads) == len(open_dataset(cfg).refs("train")) and len(list((tmp_path / "cache").iterdir())) == 2  # another size: its own cache
    make_kvasir(tmp_path / "k", n=26)  # the same 20 images and 6 more: another split, another cache
    n_before = len(loads)
    res = train(cfg, tc, open_dataset(cfg), tmp_path / "u4.pt", device="cpu", progress=False)
    assert len(loads) - n_before == len(open_dataset(cfg).refs("train")) > n_before
    assert len(list((tmp_path / "cache").iterdir())) == 3
    _, _, info = load_checkpoint(tmp_path / "u2.pt")
    assert info["device"] == "cpu" and info["trained_at"].endswith("Z") and info["images_per_s"] > 0
    assert info["precision"] in ("bf16", "fp32") and info["minutes"] >= 0


def test_device_augmentation_moves_image_and_mask_together():
    import numpy as np
    import torch

    from omniseg.training.data import DeviceAugment, _hue_shift

    rng = np.random.default_rng(0)
    masks = np.zeros((16, 64, 64), np.uint8)
    for m in masks:
        y, x = rng.integers(8, 40, 2)
        m[y:y + 20, x:x + 16] = 1
    images = np.repeat((masks * 255)[..., None], 3, -1)  # the image is its mask
    spec = NetSpec(input_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    aug = DeviceAugment(spec, "strong", torch.Generator().manual_seed(1), torch.device("cpu"))
    moved = 0
    for _ in range(8):
        x, y = aug(torch.from_numpy(images), torch.from_numpy(masks))
        bright = x.mean(1) > x.mean((1, 2, 3))[:, None, None]  # brightness/contrast keep the order of grey levels
        agree = (bright == (y[:, 0] > 0.5)).float().mean().item()
        assert agree > 0.97, agree  # only warped edge pixels may disagree
        moved += int(not torch.equal(y[:, 0].to(torch.uint8), torch.from_numpy(masks)))
    assert moved >= 6  # the masks do change: flips, turns, warps
    grey = torch.rand(2, 1, 8, 8).repeat(1, 3, 1, 1)
    assert torch.allclose(_hue_shift(grey, torch.tensor([0.3, -0.3])), grey, atol=1e-5)  # hue leaves grey alone

"""The `folder` dataset and `omniseg init` on each layout of docs/datasets.md, built here in temporary folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from omniseg import config
from omniseg.cli import app
from omniseg.datasets.folder import FolderDataset, stem_matcher

from conftest import blob_mask, lesion_image, make_kvasir

cli = CliRunner()


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)


def cvc_clinicdb(root, n=8):
    """TIFF images in Original/, TIFF masks in 'Ground Truth/' (a space), same stems."""
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        m = blob_mask(60, 72, rng)
        _save(root / "Original" / f"{i}.tif", lesion_image(m, rng))
        _save(root / "Ground Truth" / f"{i}.tif", (m * 255).astype(np.uint8))
    return root / "Original", root / "Ground Truth"


def etis(root, n=8):
    """Upper-case .PNG images; masks named p<id>.TIF."""
    rng = np.random.default_rng(1)
    for i in range(1, n + 1):
        m = blob_mask(64, 64, rng)
        _save(root / "images" / f"{i}.PNG", lesion_image(m, rng))
        _save(root / "GroundTruth" / f"p{i}.TIF", (m * 255).astype(np.uint8))
    return root / "images", root / "GroundTruth"


def isic(root, n=8):
    """ISIC 2018: ISIC_<n>.jpg images, ISIC_<n>_segmentation.png masks."""
    rng = np.random.default_rng(2)
    for i in range(n):
        m = blob_mask(60, 80, rng)
        Image.fromarray(lesion_image(m, rng, bright=False)).save(_mk(root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg"), quality=95)
        _save(root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", (m * 255).astype(np.uint8))
    return root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"


def _mk(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def several_masks(root, n=6):
    """BUSI-like: <id>_mask.png and, for some images, <id>_mask_1.png in a masks folder."""
    rng = np.random.default_rng(3)
    for i in range(n):
        m = blob_mask(50, 60, rng)
        _save(root / "img" / f"case {i}.png", lesion_image(m, rng))
        _save(root / "gt" / f"case {i}_mask.png", (m * 255).astype(np.uint8))
        if i % 2 == 0:
            extra = np.zeros_like(m)
            extra[2:8, 2:8] = True
            _save(root / "gt" / f"case {i}_mask_1.png", (extra * 255).astype(np.uint8))
    return root / "img", root / "gt"


def label_images(root, n=8):
    """One label image per image: 0 background, 1 lesion, 2 a second structure."""
    rng = np.random.default_rng(4)
    for i in range(n):
        m = blob_mask(48, 48, rng)
        lab = m.astype(np.uint8)
        lab[40:46, 2:10] = 2
        _save(root / "images" / f"s{i}.png", lesion_image(m, rng))
        _save(root / "labels" / f"s{i}.png", lab)
    return root / "images", root / "labels"


def sixteen_bit(root, n=8):
    """16-bit greyscale TIFF images (12 bits used) and 0/65535 16-bit TIFF masks; one multi-page file."""
    rng = np.random.default_rng(5)
    for i in range(n):
        m = blob_mask(50, 50, rng)
        img = (lesion_image(m, rng)[..., 0].astype(np.uint16) * 16)
        if i == 0:
            tifffile.imwrite(_mk(root / "im" / f"{i}.tiff"), np.stack([img, img // 2]))  # two pages: the first counts
        else:
            _save(root / "im" / f"{i}.tiff", img)
        _save(root / "mk" / f"{i}.tiff", m.astype(np.uint16) * 65535)
    return root / "im", root / "mk"


LAYOUTS = {"cvc-clinicdb": (cvc_clinicdb, "{id}", {"threshold": 128}),
           "etis": (etis, "p{id}", {"threshold": 128}),
           "isic": (isic, "{id}_segmentation", {"threshold": 128}),
           "several": (several_masks, "{id}_mask*", {"threshold": 128}),
           "labels": (label_images, "{id}", {"labels": [1, 2]}),
           "sixteen": (sixteen_bit, "{id}", {"threshold": 128})}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_init_verify_run_report_on_each_layout(tmp_path, layout):
    make, pattern, foreground = LAYOUTS[layout]
    images, masks = make(tmp_path / "data")
    cfgs = tmp_path / "configs"
    r = cli.invoke(app, ["init", "mine", "--images", str(images), "--masks", str(masks), "--config-dir", str(cfgs),
                         "--split", "test"])
    assert r.exit_code == 0, r.output
    assert f"named {pattern!r}" in r.output and "data verify:" in r.output and "0 with problems" in r.output, r.output
    cfg = config.load(cfgs / "mine.yaml")
    opts = cfg.dataset.options
    assert opts["mask_pattern"] == pattern and {k: opts[k] for k in foreground} == foreground
    r = cli.invoke(app, ["data", "verify", "--config", str(cfgs / "mine.yaml"), "-q"])
    assert r.exit_code == 0 and "0 with problems" in r.output, r.output
    store = tmp_path / "s.sqlite"
    r = cli.invoke(app, ["run", "--config", str(cfgs / "mine.yaml"), "--models", "otsu", "--store", str(store), "-q"])
    assert r.exit_code == 0 and "sample_error" not in r.output, r.output
    r = cli.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--no-figures"])
    assert r.exit_code == 0, r.output
    per_image = pd.read_csv(tmp_path / "rep" / "per_image.csv")
    assert len(per_image) == len(list(images.iterdir())) and (per_image["status"] == "ok").all()
    assert (per_image["ref_px"] > 0).all()  # every reference was read as a lesion, not as empty


def test_the_masks_are_read_as_drawn(tmp_path):
    """Unions of several masks, chosen label values, 16-bit images scaled, the first page of a multi-page TIFF."""
    images, masks = several_masks(tmp_path / "a")
    ds = FolderDataset(tmp_path / "a", {"images": "img", "masks": "gt", "mask_pattern": "{id}_mask*"})
    s = ds.load(next(r for r in ds.refs() if r.id == "case 0"))
    assert s.mask[2:8, 2:8].all()  # the second mask is united in
    images, masks = label_images(tmp_path / "b")
    only2 = FolderDataset(tmp_path / "b", {"masks": "labels", "labels": [2]})
    s = only2.load(only2.refs()[0])
    assert s.mask.sum() == 6 * 8 and s.mask[40:46, 2:10].all()
    images, masks = sixteen_bit(tmp_path / "c")
    ds = FolderDataset(tmp_path / "c", {"images": "im", "masks": "mk"})
    first = ds.load(ds.refs()[0])
    assert first.image.dtype == np.uint8 and first.image.shape == (50, 50, 3)
    assert first.image.max() == 255 and first.mask.any()


def test_bad_input_is_one_message_or_a_sample_error_row(tmp_path):
    images, masks = isic(tmp_path / "d", n=5)
    root = tmp_path / "d"
    opts = {"images": images.name, "masks": masks.name}
    with pytest.raises(Exception, match=r"mask_pattern '\{id\}_seg' matches no file .* for any of the 5 images"):
        FolderDataset(root, {**opts, "mask_pattern": "{id}_seg"}).refs()
    (masks / "ISIC_0000001_segmentation.png").unlink()  # an image without a mask
    big = np.zeros((30, 30), np.uint8)
    _save(masks / "ISIC_0000002_segmentation_b.png", big)  # a second mask of another size
    ds = FolderDataset(root, {**opts, "mask_pattern": "{id}_segmentation*"})
    n, problems, _ = ds.verify(progress=False)
    why = dict(problems)
    assert n == 5 and set(why) == {"ISIC_0000001", "ISIC_0000002"}
    assert "no mask for" in why["ISIC_0000001"] and "is 30x30 but the image is 80x60" in why["ISIC_0000002"]
    images, masks = label_images(tmp_path / "e", n=3)
    ds = FolderDataset(tmp_path / "e", {"masks": "labels", "labels": [1, 7]})
    _, problems, _ = ds.verify(progress=False)
    assert problems == [("(dataset)", f"label value(s) [7] appear in no mask under {tmp_path / 'e' / 'labels'}; "
                                      "check `labels` (`omniseg init` lists the values it found)")]
    cfgs = tmp_path / "configs"
    r = cli.invoke(app, ["init", "bad", "--images", str(tmp_path / "nope"), "--masks", str(masks), "--config-dir", str(cfgs)])
    assert r.exit_code == 2 and "--images" in r.output and "not a folder" in r.output


def test_a_split_file_and_its_unlisted_ids(tmp_path):
    images, masks = cvc_clinicdb(tmp_path / "f", n=4)
    (tmp_path / "f" / "split.csv").write_text("id,split\n1,train\n2,test\n3,test\n")
    ds = FolderDataset(tmp_path / "f", {"images": "Original", "masks": "Ground Truth", "split": "split.csv"})
    refs = {r.id: r for r in ds.refs()}
    assert refs["1"].split == "train" and refs["2"].split == "test"
    assert refs["4"].problem == "4 is not listed in the split file split.csv" and refs["4"].split == "test"


def test_builtin_tasks_work_from_any_folder(tmp_path):
    """`omniseg run --task polyp` from a folder with no configs/: the configurations ship in the package."""
    root = make_kvasir(tmp_path / "Kvasir-SEG", n=4)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "omniseg.cli", "run", "--task", "polyp", "--data-root", str(root),
                           "--models", "otsu", "--split", "all", "-q"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "polyp [all]: 4 samples x 1 models" in done.stdout and (work / "runs" / "omniseg.sqlite").is_file()
    listing = subprocess.run([sys.executable, "-m", "omniseg.cli", "list"], cwd=work, capture_output=True, text=True)
    assert "polyp" in listing.stdout and "(built-in)" in listing.stdout
    (work / "configs").mkdir()
    (work / "configs" / "polyp.yaml").write_text((config.builtin_dir() / "polyp.yaml").read_text()
                                                  .replace("description: Colonoscopy", "description: My colonoscopy"))
    listing = subprocess.run([sys.executable, "-m", "omniseg.cli", "list"], cwd=work, capture_output=True, text=True)
    assert "configs/polyp.yaml  (this folder's configs/)" in listing.stdout


def test_a_checkpoint_run_on_another_dataset_is_noted_in_the_manifest(tmp_path):
    """Cross-dataset: a specialist trained on a Kvasir-SEG-shaped task, evaluated on a folder task."""
    from omniseg.config import TrainConfig
    from omniseg.models.specialist import NetSpec
    from omniseg.inference.runner import open_dataset
    from omniseg.training.train import train

    from conftest import write_config

    kv = make_kvasir(tmp_path / "kv", n=24)
    unet = f"  - name: unet\n    kind: unet\n    options: {{checkpoint: {tmp_path / 'u.pt'}, device: cpu}}\n"
    home = config.load(write_config(tmp_path / "home.yaml", "polyp", "kvasir-seg", kv, unet))
    train(home, TrainConfig(net=NetSpec(input_size=64), epochs=1, batch_size=4), open_dataset(home), tmp_path / "u.pt",
          device="cpu", progress=False)
    images, masks = cvc_clinicdb(tmp_path / "cvc", n=4)
    cfgs = tmp_path / "configs"
    r = cli.invoke(app, ["init", "cvc", "--images", str(images), "--masks", str(masks), "--config-dir", str(cfgs),
                         "--split", "test"])
    assert r.exit_code == 0, r.output
    import yaml

    doc = yaml.safe_load((cfgs / "cvc.yaml").read_text())
    doc["models"].insert(0, {"name": "unet", "kind": "unet", "options": {"checkpoint": str(tmp_path / "u.pt"), "device": "cpu"}})
    (cfgs / "cvc.yaml").write_text(yaml.safe_dump(doc))
    store = tmp_path / "s.sqlite"
    for cfg in (tmp_path / "home.yaml", cfgs / "cvc.yaml"):
        r = cli.invoke(app, ["run", "--config", str(cfg), "--models", "unet", "--store", str(store), "-q"])
        assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--split", "all", "--no-figures"])
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "rep" / "manifest.json").read_text())["tasks"]
    home_eval = tasks["polyp"]["models"]["unet"]["evaluation"]
    away_eval = tasks["cvc"]["models"]["unet"]["evaluation"]
    assert home_eval["same_training_data"] is True and "note" not in home_eval
    assert away_eval["same_training_data"] is False and away_eval["trained_on"]["dataset"] == "kvasir-seg"
    assert "evaluated on data it was not trained on" in away_eval["note"] and away_eval["evaluated_on"]["dataset"] == "folder"


def _rgb_jpeg_masks(root, n=12, seed=3):
    """Kvasir-SEG's layout with 3-channel JPEG masks whose edges carry compression noise (grey 1..254)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = blob_mask(90, 110, rng)
        _save(root / "images" / f"c{i:02d}.jpg", lesion_image(m, rng))
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray((m * 255).astype(np.uint8)).convert("RGB").save(root / "masks" / f"c{i:02d}.jpg", quality=70)
    return root


@pytest.mark.parametrize("source", ["generated", "real"])
def test_the_same_files_give_the_same_masks_through_folder_and_kvasir_seg(tmp_path, source):
    """Defect 7: `_grey8` turned RGB into 0..255 grey and then clipped it as if it were 0..1, so every pixel of
    grey >= 1 was foreground: Kvasir-SEG through `folder` gave masks 1.7-4.6% larger than through `kvasir-seg`."""
    from conftest import KVASIR_REAL
    from omniseg.datasets.kvasir import KvasirSeg

    if source == "real":
        if not KVASIR_REAL.is_dir():
            pytest.skip("the real Kvasir-SEG is not in ../shared/data")
        root = KVASIR_REAL
    else:
        root = _rgb_jpeg_masks(tmp_path / "K")
    kv, fo = KvasirSeg(root), FolderDataset(root, {"images": "images", "masks": "masks"})
    refs = {r.id: r for r in fo.refs("all")}
    ids = sorted(refs)[:: max(1, len(refs) // 60)]  # up to 60, spread over the set
    grey_edges = 0
    for r in (x for x in kv.refs("all") if x.id in ids):
        a, b = kv.load(r).mask, fo.load(refs[r.id]).mask
        assert np.array_equal(a, b), (r.id, int(a.sum()), int(b.sum()))
        grey = np.asarray(Image.open(r.files["mask"]).convert("L"))
        grey_edges += int(((grey > 0) & (grey < 128)).sum())
    assert grey_edges > 0  # the files do have the edge noise that the old reading counted as foreground


def test_coloured_masks_warn_in_every_kind(tmp_path):
    """Defect 7: the "not black-and-white" warning must fire for coloured masks read by `folder` too."""
    rng = np.random.default_rng(1)
    for i in range(3):
        m = blob_mask(40, 50, rng)
        _save(tmp_path / "images" / f"{i}.png", lesion_image(m, rng))
        colour = np.zeros((40, 50, 3), np.uint8)
        colour[m] = (200, 30, 30)  # a red object: grey 79, below the threshold
        _save(tmp_path / "masks" / f"{i}.png", colour)
    ds = FolderDataset(tmp_path, {})
    n, problems, warned = ds.verify(progress=False)
    assert n == 3 and not problems and len(warned) == 3
    assert all("in colour" in w for _, w in warned)


def test_two_images_sharing_a_stem_are_one_row_that_names_both(tmp_path):
    """Defect 8: a.png and a.jpg: the run announced 2 pairs and kept 1 row, without a word from init, verify
    or run. Now the id gets one sample_error row naming both files; init and verify say so; a mask without an
    image is listed by both."""
    from omniseg.store.database import Store

    rng = np.random.default_rng(2)
    for stem, suffix in (("a", ".png"), ("a", ".jpg"), ("b", ".png"), ("c", ".png")):
        m = blob_mask(40, 50, rng)
        _save(tmp_path / "data" / "images" / f"{stem}{suffix}", lesion_image(m, rng))
        if stem != "c" or suffix != ".png":
            _save(tmp_path / "data" / "masks" / f"{stem}.png", (m * 255).astype(np.uint8))
    _save(tmp_path / "data" / "masks" / "c.png", (blob_mask(40, 50, rng) * 255).astype(np.uint8))
    _save(tmp_path / "data" / "masks" / "d_orphan.png", (blob_mask(40, 50, rng) * 255).astype(np.uint8))
    r = cli.invoke(app, ["init", "mine", "--images", str(tmp_path / "data" / "images"), "--masks",
                         str(tmp_path / "data" / "masks"), "--config-dir", str(tmp_path / "configs"), "--split", "test"])
    assert r.exit_code == 0, r.output
    assert "2 images share the id 'a': images/a.jpg, images/a.png" in r.output, r.output
    assert "d_orphan.png" in r.output and "a mask without an image" in r.output
    cfg = tmp_path / "configs" / "mine.yaml"
    v = cli.invoke(app, ["data", "verify", "--config", str(cfg), "-q"])
    assert v.exit_code == 1 and "2 images share the id 'a'" in v.output and "d_orphan.png" in v.output, v.output
    store = tmp_path / "s.sqlite"
    r = cli.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q", "--models", "otsu"])
    assert r.exit_code == 0 and "3 samples x 1 models = 3 pairs" in r.output, r.output
    with Store(store) as st:
        rows = st.query("SELECT sample_id, status, reason FROM predictions ORDER BY sample_id")
    assert list(rows["sample_id"]) == ["a", "b", "c"]  # as many rows as pairs announced
    assert rows["status"].tolist() == ["sample_error", "ok", "ok"] and "images/a.jpg" in rows["reason"][0]


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    """Defect 13: a 15000 x 15000 TIFF (a few hundred KB on disk) made `init` peak at 1.6 GB and `run` at 6.2 GB
    without finishing. Every reader checks the size first: a sample_error row naming the file and the option
    that raises the limit; `init` says the same in one line."""
    import resource

    rng = np.random.default_rng(4)
    for i in range(2):
        m = blob_mask(40, 50, rng)
        _save(tmp_path / "d" / "images" / f"{i}.png", lesion_image(m, rng))
        _save(tmp_path / "d" / "masks" / f"{i}.png", (m * 255).astype(np.uint8))
    big = np.zeros((15000, 15000), np.uint8)
    tifffile.imwrite(tmp_path / "d" / "images" / "huge.tif", big, compression="zlib")
    tifffile.imwrite(tmp_path / "d" / "masks" / "huge.tif", big, compression="zlib")
    del big
    assert (tmp_path / "d" / "images" / "huge.tif").stat().st_size < 2_000_000
    ds = FolderDataset(tmp_path / "d", {"split": "test"})
    refs = {r.id: r for r in ds.refs("all")}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(Exception, match=r"huge.tif is 15000x15000 pixels \(225 megapixels\), over the limit of 100 "
                                        r"megapixels: .*raise dataset.max_pixels"):
        ds.load(refs["huge"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB: nothing was decoded
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: big\ndataset:\n  name: folder\n  root: {tmp_path / 'd'}\n  options: {{split: test}}\n"
                   "split: test\nmodels:\n  - {name: otsu, kind: otsu}\n")
    store = tmp_path / "s.sqlite"
    r = cli.invoke(app, ["run", "--config", str(cfg), "--store", str(store), "-q"])
    assert r.exit_code == 0, r.output
    from omniseg.store.database import Store

    with Store(store) as st:
        row = st.query("SELECT status, reason FROM predictions WHERE sample_id = 'huge'").iloc[0]
    assert row["status"] == "sample_error" and "dataset.max_pixels" in row["reason"]
    raised = FolderDataset(tmp_path / "d", {"split": "test"})
    raised.limit_pixels(300_000_000)  # what dataset.max_pixels does: the same file is read
    assert raised.load(refs["huge"]).image.shape == (15000, 15000, 3)
    r = cli.invoke(app, ["init", "big2", "--images", str(tmp_path / "d" / "images"), "--masks",
                         str(tmp_path / "d" / "masks"), "--config-dir", str(tmp_path / "cfgs")])
    assert r.exit_code in (0, 2) and "Traceback" not in r.output and "max_pixels" in r.output, r.output


# -- properties (hypothesis) -----------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402

_stem = st.text("ab_-1 ()", min_size=1, max_size=5).filter(lambda s: s.strip() == s and s not in (".", ".."))


@given(st.sets(_stem, min_size=1, max_size=6), st.sets(_stem, max_size=8),
       st.sampled_from(["{id}", "{id}_mask", "{id}_mask*", "{id}*", "p{id}", "*_{id}", "{id}_*_m*"]))
def test_the_pairing_finds_exactly_the_masks_its_pattern_names(images, extra, pattern):
    """The matcher against brute force: for every image id, the mask files whose stem the pattern gives
    (fnmatch for `*`, equality otherwise), whatever the other files in the folder are named."""
    import fnmatch
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        names = set(extra) | {pattern.replace("{id}", i).replace("*", "_x") for i in images}
        for n in names:
            (folder / f"{n}.png").write_bytes(b"")
        match = stem_matcher(folder, pattern)
        for sid in images:
            want = pattern.replace("{id}", sid)
            expected = sorted(folder / f"{n}.png" for n in names
                              if (fnmatch.fnmatchcase(n, want.replace("[", "[[]")) if "*" in pattern else n == want))
            assert sorted(match(sid)) == expected, (sid, pattern, sorted(names))


@given(st.integers(1, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_binarization_is_pillows_grey_level_at_the_threshold_and_monotone(threshold, r, g, b):
    from omniseg.datasets.base import binarize_rgb

    rgb = np.array([[[r, g, b], [g, b, r]]], np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    got = binarize_rgb(rgb, Path_("m.png"), threshold)
    assert np.array_equal(got, grey >= threshold)
    lower = binarize_rgb(rgb, Path_("m.png"), max(1, threshold - 10))
    assert (lower | ~got).all()  # a lower threshold keeps every foreground pixel


def Path_(name):  # noqa: N802
    from pathlib import Path

    return Path(name)


def test_a_0_128_mask_is_foreground_at_the_default_threshold_and_an_image_is_never_its_own_mask(tmp_path):
    """Two mutants that survived the old suite: masks saved as 0/128 read as empty (a '>' for '>='), and with the
    masks beside the images a pattern like '{id}*' that also matches the image merged the image into its mask."""
    rng = np.random.default_rng(5)
    m = blob_mask(40, 50, rng)
    _save(tmp_path / "a" / "images" / "x.png", lesion_image(m, rng))
    _save(tmp_path / "a" / "masks" / "x.png", (m * 128).astype(np.uint8))
    got = FolderDataset(tmp_path / "a", {}).load(FolderDataset(tmp_path / "a", {}).refs("all")[0]).mask
    assert np.array_equal(got, m)
    beside = tmp_path / "b"
    _save(beside / "x.png", np.full((40, 50, 3), 255, np.uint8))  # a white image: merged, it would fill the mask
    _save(beside / "x_mask.png", (m * 255).astype(np.uint8))
    ds = FolderDataset(beside, {"images": ".", "masks": ".", "mask_pattern": "{id}*", "exclude": "*_mask*"})
    ref = ds.refs("all")[0]
    assert [p.name for p in ref.files["masks"]] == ["x_mask.png"]
    assert np.array_equal(ds.load(ref).mask, m)


def test_mask_values_of_every_type_come_to_the_8_bit_scale():
    from omniseg.datasets.folder import to_8bit

    assert to_8bit(np.array([[True, False]])).tolist() == [[255, 0]]
    assert to_8bit(np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]])).tolist() == [[0, 128, 255, 255, 0, 0]]
    assert to_8bit(np.array([[0, 32768, 65535]], np.uint16)).tolist() == [[0, 128, 255]]
    assert to_8bit(np.array([[0, 2 ** 31 - 1]], np.int32)).tolist() == [[0, 255]]
    assert to_8bit(np.array([[0, 7, 128, 255]], np.uint8)).tolist() == [[0, 7, 128, 255]]
    assert to_8bit(np.array([[0, 0.5, 1]], np.float32)).tolist() == [[0, 128, 255]]
    assert to_8bit(np.array([[0, 7, 127]], np.int8)).tolist() == [[0, 7, 127]]  # 8-bit values stay, signed too
    for dtype in (bool, np.float32, np.float64, np.uint8, np.int8, np.uint16, np.int32):
        assert to_8bit(np.zeros((1, 2), dtype)).dtype == np.uint8, dtype
    rgb = np.zeros((1, 2, 3), np.uint16)
    rgb[0, 1] = 65535
    assert to_8bit(rgb).shape == (1, 2, 3) and to_8bit(rgb)[0, 1].tolist() == [255, 255, 255]  # channels kept


def test_one_sample_read_whole_masks_united_labels_from_the_first_channel_roi_and_split(tmp_path):
    """Every file of one sample exactly: two masks united (neither replaces the other), an RGBA mask read from its
    colour channels, RGB label images by their first channel, a region of interest from its own folder, the
    split in the sample's meta, and the pixel limit applied to masks and regions as to images."""
    from omniseg.errors import SampleError

    rng = np.random.default_rng(9)
    a, b = np.zeros((30, 40), bool), np.zeros((30, 40), bool)
    a[2:10, 2:10] = True
    b[15:25, 20:35] = True
    root = tmp_path / "d"
    _save(root / "images" / "x.png", lesion_image(a | b, rng))
    _save(root / "masks" / "x_mask.png", (a * 255).astype(np.uint8))
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[b, :3] = 255  # alpha stays 0: the mask is in the colour channels
    _save(root / "masks" / "x_mask_1.png", rgba)
    roi = np.zeros((30, 40), np.uint8)
    roi[:, :30] = 7
    _save(root / "roi" / "x_fov.png", roi)
    ds = FolderDataset(root, {"mask_pattern": "{id}_mask*", "roi": "roi", "roi_pattern": "{id}_fov", "split": "train"})
    ref, = ds.refs("all")
    assert ref.problem is None and ref.split == "train" and ref.files["roi"] == root / "roi" / "x_fov.png"
    s = ds.load(ref)
    assert np.array_equal(s.mask, a | b) and np.array_equal(s.roi, roi > 0) and s.meta == {"split": "train"}
    labels = tmp_path / "l"
    _save(labels / "images" / "y.png", lesion_image(a, rng))
    lab = np.zeros((30, 40, 3), np.uint8)
    lab[a, 0] = 2  # label 2 in the first channel; the other channels hold another structure's label
    lab[b, 1] = 2
    _save(labels / "labels" / "y.png", lab)
    only2 = FolderDataset(labels, {"masks": "labels", "labels": [2]})
    assert np.array_equal(only2.load(only2.refs("all")[0]).mask, a)
    big = tmp_path / "big"  # a 25 x 30 image (750 pixels) whose mask, or region, is 30 x 40 (1200 pixels)
    _save(big / "images" / "m.png", lesion_image(a[:25, :30], rng))
    _save(big / "masks" / "m.png", (a * 255).astype(np.uint8))
    _save(big / "images" / "r.png", lesion_image(a[:25, :30], rng))
    _save(big / "masks" / "r.png", (a[:25, :30] * 255).astype(np.uint8))
    _save(big / "roi" / "m.png", roi)
    _save(big / "roi" / "r.png", roi)
    limited = FolderDataset(big, {"roi": "roi"})
    limited.limit_pixels(1000)
    for ref in limited.refs("all"):
        with pytest.raises(SampleError, match="over the limit"):
            limited.load(ref)  # refused before it is decoded, not after as a size mismatch
    whole = FolderDataset(root, {"mask_pattern": "{id}_mask*"})
    whole.limit_pixels(1000)
    with pytest.raises(SampleError, match=r"^\S*x\.png is 40x30 pixels"):
        whole.load(whole.refs("all")[0])  # the image itself (named first), not only its masks
    no_roi = FolderDataset(root, {"mask_pattern": "{id}_mask*", "roi": "roi", "roi_pattern": "{id}_none"})
    assert no_roi.refs("all")[0].problem == "no region-of-interest mask for x.png in roi/"
    wrong = tmp_path / "w"
    _save(wrong / "images" / "z.png", lesion_image(a, rng))
    _save(wrong / "masks" / "z.png", np.zeros((20, 20), np.uint8))
    _save(wrong / "images" / "q.png", lesion_image(a, rng))
    wds = FolderDataset(wrong, {})
    by_id = {r.id: r for r in wds.refs("all")}
    assert by_id["q"].problem == "no mask for images/q.png: nothing in masks/ matches q"
    with pytest.raises(SampleError, match="z"):
        wds.load(by_id["z"])  # a mask of another size names the sample


def test_the_split_option_and_an_image_without_a_mask_last_in_the_folder(tmp_path):
    from omniseg.datasets.base import split_of

    images, masks = cvc_clinicdb(tmp_path / "f", n=12)
    (masks / "9.tif").unlink()  # the last id in sorted order ("9" after "12") has no mask: a problem, not an error
    opts = {"images": "Original", "masks": "Ground Truth"}
    refs = FolderDataset(tmp_path / "f", opts).refs("all")
    assert [r.id for r in refs if r.problem] == ["9"] and len(refs) == 12
    assert [r.split for r in refs] == [split_of("folder", r.id) for r in refs]
    assert {r.split for r in refs} == {"train", "test"}  # 12 hashed ids fall on both sides
    for split in ("train", "test"):
        assert {r.split for r in FolderDataset(tmp_path / "f", opts | {"split": split}).refs("all")} == {split}


def test_a_region_of_interest_in_colour_at_value_1_and_files_of_the_wrong_size_name_the_sample(tmp_path):
    from omniseg.errors import SampleError

    rng = np.random.default_rng(4)
    a = np.zeros((30, 40), bool)
    a[5:20, 5:25] = True
    root = tmp_path / "d"
    _save(root / "images" / "x.png", lesion_image(a, rng))
    _save(root / "masks" / "x.png", (a * 255).astype(np.uint8))
    roi = np.zeros((30, 40, 3), np.uint8)
    roi[:, :30, 2] = 1  # only the blue channel, at 1
    _save(root / "roi" / "x.png", roi)
    ds = FolderDataset(root, {"roi": "roi"})
    s = ds.load(ds.refs("all")[0])
    assert s.roi.shape == (30, 40) and np.array_equal(s.roi, roi[..., 2] > 0)
    _save(root / "roi" / "x.png", np.ones((30, 41), np.uint8))
    with pytest.raises(SampleError, match=r"^x: roi \S*x\.png is 41x30 but the image is 40x30"):
        ds.load(ds.refs("all")[0])
    _save(root / "masks" / "x.png", np.zeros((31, 40), np.uint8))
    with pytest.raises(SampleError, match=r"^x: mask \S*x\.png is 40x31 but the image is 40x30"):
        FolderDataset(root).load(FolderDataset(root).refs("all")[0])


def test_every_file_with_the_stem_an_exact_pattern_gives_is_a_mask(tmp_path):
    """Like a wildcard pattern's matches, two files with the one stem (x.png and x.tif) are both the sample's masks."""
    rng = np.random.default_rng(5)
    a, b = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    a[:, :5], b[:, 15:] = True, True
    root = tmp_path / "d"
    _save(root / "images" / "x.png", lesion_image(a | b, rng))
    _save(root / "masks" / "x.png", (a * 255).astype(np.uint8))
    _save(root / "masks" / "x.tif", (b * 255).astype(np.uint8))
    ds = FolderDataset(root)
    ref, = ds.refs("all")
    assert ref.files["masks"] == [root / "masks" / "x.png", root / "masks" / "x.tif"]
    assert np.array_equal(ds.load(ref).mask, a | b)


def test_a_grey_mask_file_reads_as_its_rgb_copy_would_with_the_same_warnings(tmp_path):
    """Grey masks are binarized on their own grey level, not an RGB copy three times their size: the mask and the
    notes are those of the same pixels saved as RGB (Pillow's luma of three equal channels is their value)."""
    from omniseg.datasets.base import binarize_rgb, read_mask

    rng = np.random.default_rng(11)
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    cases = [every, (blob_mask(40, 50, rng) * 255).astype(np.uint8), rng.integers(0, 256, (33, 47), dtype=np.uint8),
             np.where(blob_mask(40, 50, rng), 200, 90).astype(np.uint8)]  # grey regions: a warning
    for i, grey in enumerate(cases):
        Image.fromarray(grey).save(tmp_path / f"{i}.png")
        Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / f"{i}_rgb.png")
        for threshold in (1, 128, 250):
            notes_grey, notes_rgb = [], []
            got = read_mask(tmp_path / f"{i}.png", threshold, notes_grey)
            want = read_mask(tmp_path / f"{i}_rgb.png", threshold, notes_rgb)
            assert np.array_equal(got, want) and np.array_equal(got, grey >= threshold)
            assert [n.replace(f"{i}.png", "X") for n in notes_grey] == [n.replace(f"{i}_rgb.png", "X") for n in notes_rgb]
            two_d = binarize_rgb(grey, tmp_path / "m.png", threshold, notes := [])
            assert np.array_equal(two_d, want) and notes == [n.replace(f"{i}_rgb.png", "m.png") for n in notes_rgb]
    assert any("not black-and-white" in n for n in notes_rgb)  # the last case warns, both ways

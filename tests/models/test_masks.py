"""The `masks` model kind: predictions read from disk, scored against known perturbations of the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from omniseg import config, datasets
from omniseg.cli import app
from omniseg.errors import ConfigError
from omniseg.inference.runner import run
from omniseg.store.database import Store

from conftest import make_kvasir, write_config


def references(root: Path) -> dict[str, np.ndarray]:
    """The masks omniseg reads for each sample (the JPEG references binarized), to perturb by hand."""
    ds = datasets.open("kvasir-seg", root)
    return {r.id: ds.load(r).mask for r in ds.refs("all")}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice by hand, independent of omniseg.scoring (both empty: 1)."""
    s = pred.sum() + ref.sum()
    return 1.0 if s == 0 else 2 * float((pred & ref).sum()) / float(s)


def png(path: Path, m: np.ndarray, scale: int = 255) -> None:
    Image.fromarray((m * scale).astype(np.uint8)).save(path)


def entry(name: str, folder: Path, **options) -> str:
    opts = ", ".join(f"{k}: {v}" for k, v in {"folder": folder, **options}.items())
    return f"  - name: {name}\n    kind: masks\n    options: {{{opts}}}\n"


def scores(store: Path, model: str):
    with Store(store) as st:
        return st.query("SELECT p.sample_id, p.status, p.reason, c.dice FROM predictions p LEFT JOIN scores c "
                        "USING (task, sample_id, model) WHERE p.model = ? ORDER BY p.sample_id", (model,)).set_index("sample_id")


@pytest.fixture
def study(tmp_path):
    root = make_kvasir(tmp_path / "k", n=6, size=(64, 80))
    refs = references(root)
    preds = tmp_path / "preds"
    preds.mkdir()
    r = refs
    half = r["case001"].copy()
    half[:, : half.shape[1] // 2] = False  # the left half of the lesion missed
    grown = r["case002"] | np.roll(r["case002"], 3, axis=1)  # a false-positive rim on the right
    png(preds / "case000.png", r["case000"])  # exact
    png(preds / "case001.png", half)
    png(preds / "case002.png", grown)
    # case003: no file -> 'missing'
    png(preds / "case004.png", np.asarray(Image.fromarray(r["case004"]).resize((40, 32), Image.NEAREST)))  # other size
    png(preds / "case005.png", r["case005"], scale=1)  # nnU-Net writes 0/1 label files
    expected = {"case000": 1.0, "case001": dice(half, r["case001"]), "case002": dice(grown, r["case002"]),
                "case005": 1.0}
    return root, refs, preds, expected


def test_dice_per_image_a_missing_row_and_the_size_rule(tmp_path, study):
    root, refs, preds, expected = study
    models = entry("nn", preds) + entry("nn_resized", preds, size="resize")
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, models))
    store = tmp_path / "s.sqlite"
    with Store(store) as st:
        run(cfg, st, progress=False)
    df = scores(store, "nn")
    assert len(df) == 6  # every pair has a row, the missing one included
    for sid, want in expected.items():
        assert df.loc[sid, "status"] == "ok" and df.loc[sid, "dice"] == pytest.approx(want, abs=1e-9), sid
    assert 0 < expected["case001"] < 1 and 0 < expected["case002"] < 1
    assert df.loc["case003", "status"] == "missing" and df.loc["case003", "dice"] == 0.0  # scored as empty
    assert "no prediction for case003" in df.loc["case003", "reason"]
    assert df.loc["case004", "status"] == "error" and "is 40x32 but the image is 80x64" in df.loc["case004", "reason"]
    assert df.loc["case004", "dice"] == 0.0
    resized = scores(store, "nn_resized")
    back = np.asarray(Image.fromarray(np.asarray(Image.fromarray(refs["case004"]).resize((40, 32), Image.NEAREST)))
                      .resize((80, 64), Image.NEAREST))
    assert resized.loc["case004", "status"] == "ok"
    assert resized.loc["case004", "dice"] == pytest.approx(dice(back, refs["case004"]), abs=1e-9)
    r = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--task", "polyp", "--split", "all", "--no-html", "--no-figures"])
    assert r.exit_code == 0, r.output
    import pandas as pd

    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    row = summary[(summary.model == "nn") & (summary.subset == "all")].iloc[0]
    assert row.n == 6 and row.failures == 2  # the missing file and the refused size count as failures


def test_probability_maps_label_maps_and_channels(tmp_path):
    root = make_kvasir(tmp_path / "k", n=3, size=(48, 64))
    refs = references(root)
    prob, labels = tmp_path / "prob", tmp_path / "labels"
    prob.mkdir(), labels.mkdir()
    rng = np.random.default_rng(0)
    want_prob, want_labels = {}, {}
    for i, (sid, m) in enumerate(sorted(refs.items())):
        p = np.where(m, 0.7, 0.2) + rng.uniform(-0.15, 0.15, m.shape)  # above 0.5 exactly inside the lesion
        p[0, 0] = 0.55  # one false-positive pixel at the corner
        if i == 0:
            np.save(prob / f"{sid}_pred.npy", p.astype(np.float32))
        elif i == 1:  # 16-bit PNG: divided by 65535
            Image.fromarray(np.round(p * 65535).astype(np.uint16)).save(prob / f"{sid}_pred.png")
        else:  # planar NPY with two channels (background, lesion): options.channel picks the lesion
            np.save(prob / f"{sid}_pred.npy", np.stack([1 - p, p]).astype(np.float32))
        want_prob[sid] = dice(p >= 0.5, m)
        lab = np.where(m, 2, 0).astype(np.uint8)
        ys, xs = np.nonzero(m)
        lab[ys[:10], xs[:10]] = 1  # ten lesion pixels given another class: not foreground
        tifffile.imwrite(labels / f"{sid}.tif", lab)
        want_labels[sid] = dice(lab == 2, m)
    models = (entry("p", prob, pattern="'{id}_pred'", values="probability", threshold=0.5, channel=1)
              + entry("l", labels, values="labels", labels="[2]"))
    # channel 1 of a one-channel map does not exist: the 2-D files are read as they are
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, models))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, progress=False)
    p, lab = scores(tmp_path / "s.sqlite", "p"), scores(tmp_path / "s.sqlite", "l")
    for sid in refs:
        assert p.loc[sid, "status"] == "ok" and p.loc[sid, "dice"] == pytest.approx(want_prob[sid], abs=1e-9), sid
        assert lab.loc[sid, "dice"] == pytest.approx(want_labels[sid], abs=1e-9)
    assert all(v < 1 for v in want_prob.values()) and all(v < 1 for v in want_labels.values())


def test_a_changed_file_changes_the_signature_and_a_moved_folder_does_not(tmp_path, study):
    root, refs, preds, _ = study
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, entry("nn", preds)))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, progress=False)
    before = models_of(cfg)["nn"].signature_hash()
    moved = tmp_path / "elsewhere"
    preds.rename(moved)
    assert models_of(config.load(write_config(tmp_path / "m.yaml", "polyp", "kvasir-seg", root,
                                              entry("nn", moved))))["nn"].signature_hash() == before
    png(moved / "case001.png", refs["case001"])  # the half-missed lesion corrected
    cfg2 = config.load(write_config(tmp_path / "m.yaml", "polyp", "kvasir-seg", root, entry("nn", moved)))
    assert models_of(cfg2)["nn"].signature_hash() != before
    with Store(tmp_path / "s.sqlite") as st, pytest.raises(Exception, match="stored results made with other settings"):
        run(cfg2, st, progress=False)
    (moved / "case003.png").write_bytes((moved / "case000.png").read_bytes())  # a file added
    assert models_of(cfg2)["nn"].signature_hash() not in (before,)


def models_of(cfg):
    from omniseg import models

    return {m.name: models.build(m) for m in cfg.models}


def test_bad_options_and_folders_are_one_message(tmp_path):
    root = make_kvasir(tmp_path / "k", n=2)
    with pytest.raises(ConfigError, match="values: labels needs `labels`"):
        config.load(write_config(tmp_path / "a.yaml", "polyp", "kvasir-seg", root,
                                 entry("x", tmp_path, values="labels")))
    r = CliRunner().invoke(app, ["run", "--config", str(write_config(tmp_path / "b.yaml", "polyp", "kvasir-seg", root,
                                                                      entry("x", tmp_path / "nowhere"))),
                                 "--store", str(tmp_path / "s.sqlite"), "-q"])
    assert r.exit_code == 2 and "options.folder" in r.output and "nowhere" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "s.sqlite").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["run", "--config", str(write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", root,
                                                                      entry("x", empty))),
                                 "--store", str(tmp_path / "s.sqlite"), "-q"])
    assert r.exit_code == 2 and "no prediction files" in r.output, r.output


def test_an_id_map_names_files_that_are_not_sample_ids(tmp_path):
    root = make_kvasir(tmp_path / "k", n=3)
    refs = references(root)
    preds = tmp_path / "p"
    preds.mkdir()
    rows = ["case\tid"]
    for k, (sid, m) in enumerate(sorted(refs.items())):
        if k < 2:
            png(preds / f"polyp_{k:04d}.png", m, scale=1)
            rows.append(f"polyp_{k:04d}\t{sid}")
    (tmp_path / "ids.tsv").write_text("\n".join(rows) + "\n")
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root,
                                   entry("nn", preds, id_map=tmp_path / "ids.tsv")))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, progress=False)
    df = scores(tmp_path / "s.sqlite", "nn")
    assert list(df.status) == ["ok", "ok", "missing"] and list(df.dice) == [1.0, 1.0, 0.0]
    assert "not in options.id_map" in df.loc["case002", "reason"]


def masks_model(folder: Path, **options):
    from omniseg.models.masks import MasksFromDisk, MasksOptions

    return MasksFromDisk("nn", MasksOptions(folder=folder, **options))


def sample_like(mask: np.ndarray, sid: str = "s"):
    from omniseg.datasets.base import Sample

    return Sample(id=sid, image=np.zeros(mask.shape + (3,), np.uint8), mask=mask)


def a_lesion(h: int = 24, w: int = 30) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[5:15, 8:20] = True
    m[18:22, 2:5] = True
    return m


def palette_png(path: Path, indices: np.ndarray, palette: list[int]) -> None:
    im = Image.fromarray(indices.astype(np.uint8))
    im.putpalette(palette + [0] * (768 - len(palette)))  # an 'L' image with a palette becomes 'P'
    assert im.mode == "P"
    im.save(path)


@pytest.mark.parametrize("write", [
    pytest.param(lambda p, m: np.save(p / "s.npy", m.astype(np.int64) * 255), id="int64-0-255-npy"),
    pytest.param(lambda p, m: Image.fromarray(m.astype(np.uint16) * 255).save(p / "s.png"), id="uint16-png-0-255"),
    pytest.param(lambda p, m: Image.fromarray(m.astype(np.uint16) * 65535).save(p / "s.png"), id="uint16-png-0-65535"),
    pytest.param(lambda p, m: np.save(p / "s.npy", np.where(m, 1, -1).astype(np.int8)), id="int8-minus1-1"),
    pytest.param(lambda p, m: np.save(p / "s.npy", np.where(m, 7, -3).astype(np.int32)), id="int32-minus3-7"),
    pytest.param(lambda p, m: np.save(p / "s.npy", m.astype(np.uint32) * 1000), id="uint32-0-1000"),
    pytest.param(lambda p, m: palette_png(p / "s.png", m * 2, [0, 0, 0, 255, 0, 0, 255, 255, 255]), id="palette-index-2"),
    pytest.param(lambda p, m: palette_png(p / "s.png", m * 1, [0, 0, 0, 200, 30, 30]), id="palette-index-1-red"),
    pytest.param(lambda p, m: tifffile.imwrite(p / "s.tif", m.astype(np.int16) * 300), id="int16-tif-0-300"),
    pytest.param(lambda p, m: Image.fromarray(m.astype(np.uint8) * 255).save(p / "s.png"), id="uint8-png-0-255"),
    pytest.param(lambda p, m: png(p / "s.png", m, scale=1), id="uint8-png-0-1"),
])
def test_a_binary_mask_in_a_wider_or_signed_type_reads_as_its_values_say(tmp_path, write):
    m = a_lesion()
    write(tmp_path, m)
    pred = masks_model(tmp_path).predict(sample_like(m))
    assert pred.status == "ok", pred.reason
    assert np.array_equal(pred.mask, m)


def test_a_probability_map_in_int64_is_read_on_its_8bit_scale(tmp_path):
    m = a_lesion()
    p = np.where(m, 200, 40).astype(np.int64)
    p[0, 0] = 128  # 128/255 = 0.502: at or above 0.5
    np.save(tmp_path / "s.npy", p)
    pred = masks_model(tmp_path, values="probability", threshold=0.5).predict(sample_like(m))
    want = m.copy()
    want[0, 0] = True
    assert pred.status == "ok" and np.array_equal(pred.mask, want)
    assert pred.prob[5, 8] == pytest.approx(200 / 255) and pred.prob[1, 1] == pytest.approx(40 / 255)


@pytest.mark.parametrize("bad, words", [
    (lambda m: m.astype(np.complex64), "complex"),
    (lambda m: np.where(m, "a", "b"), "<U1"),
])
def test_what_cannot_be_a_mask_is_an_error_row_with_a_reason(tmp_path, bad, words):
    m = a_lesion()
    np.save(tmp_path / "s.npy", bad(m))
    pred = masks_model(tmp_path).predict(sample_like(m))
    assert pred.status == "error" and words in pred.reason and "s.npy" in pred.reason


def test_a_negative_probability_is_refused(tmp_path):
    m = a_lesion()
    np.save(tmp_path / "s.npy", np.where(m, 100, -5).astype(np.int16))
    pred = masks_model(tmp_path, values="probability").predict(sample_like(m))
    assert pred.status == "error" and "negative" in pred.reason


def test_a_folder_that_reads_as_empty_everywhere_is_warned_about(tmp_path):
    root = make_kvasir(tmp_path / "k", n=4, size=(40, 48))
    preds = tmp_path / "p"
    preds.mkdir()
    for sid, ref in references(root).items():  # 0/255 saved as float 0..255 with values: probability (0..1 expected)
        png(preds / f"{sid}.png", np.zeros_like(ref))
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, entry("nn", preds)))
    with Store(tmp_path / "s.sqlite") as st, pytest.warns(UserWarning, match=r"model 'nn': all 4 prediction files"):
        run(cfg, st, progress=False, split="all")
    with Store(tmp_path / "s2.sqlite") as st:  # one non-empty file: no warning
        png(preds / "case000.png", references(root)["case000"])
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run(config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, entry("nn", preds))), st,
                progress=False, split="all")


def test_the_dataset_pixel_limit_holds_for_prediction_files_both_ways(tmp_path):
    root = make_kvasir(tmp_path / "k", n=2, size=(40, 48))  # 1,920 pixels an image
    preds = tmp_path / "p"
    preds.mkdir()
    for sid, ref in references(root).items():
        png(preds / f"{sid}.png", np.asarray(Image.fromarray(ref).resize((50, 50), Image.NEAREST)))  # 2,500 pixels
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, entry("nn", preds, size="resize"),
                                   extra=""))
    lowered = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"max_pixels": 2000})})
    with Store(tmp_path / "s.sqlite") as st:
        run(lowered, st, progress=False, split="all")
    df = scores(tmp_path / "s.sqlite", "nn")
    assert set(df.status) == {"error"} and all("over the limit" in r for r in df.reason), df.reason.tolist()
    # raised above the default of 100 million: a 10240 x 10240 prediction is read (and then refused by its size)
    m = masks_model(tmp_path / "big")
    (tmp_path / "big").mkdir()
    big = np.lib.format.open_memmap(tmp_path / "big" / "s.npy", mode="w+", dtype=np.uint8, shape=(10240, 10240))
    del big
    from omniseg.models.base import RunContext

    assert "over the limit" in m.predict(sample_like(a_lesion())).reason
    m.bind(RunContext(max_pixels=120_000_000))
    pred = m.predict(sample_like(a_lesion()))
    assert pred.status == "error" and "is 10240x10240 but the image is 30x24" in pred.reason


from hypothesis import given, strategies as hst  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

#: file type -> the dtypes it stores as they are
STORES = {
    ".npy": ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"),
    ".tif": ("bool", "uint8", "uint16", "uint32", "int8", "int16", "int32", "int64", "float32", "float64"),
    ".png": ("bool", "uint8", "uint16"),
    ".bmp": ("bool", "uint8"),
}


@hst.composite
def saved_masks(draw):
    suffix = draw(hst.sampled_from(sorted(STORES)))
    dtype = np.dtype(draw(hst.sampled_from(STORES[suffix])))
    mask = draw(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)))
    if dtype == bool:
        return suffix, mask, mask
    if dtype.kind == "f":
        fg = draw(hst.floats(0.01, 1.0))
        return suffix, mask, np.where(mask, fg, 0.0).astype(dtype)
    info = np.iinfo(dtype)
    if dtype.kind == "u":
        bg, fg = 0, draw(hst.integers(1, int(info.max)))
    else:
        bg, fg = draw(hst.sampled_from([
            (0, draw(hst.integers(1, int(info.max)))),  # 0 and a positive value
            (0, draw(hst.integers(int(info.min), -1))),  # 0 and a negative one
            (draw(hst.integers(int(info.min), -1)), draw(hst.integers(1, int(info.max)))),  # -a / b
        ]))
    return suffix, mask, np.where(mask, fg, bg).astype(dtype)


def save_as(path: Path, values: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, values)
    elif path.suffix == ".tif":
        tifffile.imwrite(path, values)
    else:
        Image.fromarray(values).save(path)


@given(saved_masks())
def test_any_binary_mask_in_any_supported_type_and_file_reads_back_as_itself(tmp_path_factory, case):
    suffix, mask, values = case
    folder = tmp_path_factory.mktemp("m")
    save_as(folder / f"s{suffix}", values)
    pred = masks_model(folder).predict(sample_like(mask))
    assert pred.status == "ok", pred.reason
    assert np.array_equal(pred.mask, mask), (values.dtype, suffix, np.unique(values))


@pytest.mark.parametrize("values, scale", [
    ([0, 40, 255], 255),  # 0 is a probability; 255 is still the 8-bit scale
    ([0, 256, 1000], 65535),  # past 8 bits: the 16-bit scale
    ([0, 65535], 65535),
])
def test_an_integer_probability_map_is_divided_by_the_scale_its_values_fit_as_float32(values, scale):
    from omniseg.models.masks import probability

    arr = np.array([values], dtype=np.int64)
    prob = probability(arr, Path("p.npy"))
    assert prob.dtype == np.float32 and np.allclose(prob, np.array([values]) / scale)
    assert probability(np.array([[0.25, np.nan]], np.float64), Path("p.npy")).dtype == np.float32
    empty = probability(np.zeros((0, 0), np.int64), Path("p.npy"))
    assert empty.shape == (0, 0) and empty.dtype == np.float32
    with pytest.raises(Exception, match="up to 70000"):
        probability(np.array([[0, 70000]], np.int64), Path("p.npy"))


@pytest.mark.parametrize("shape, read", [
    ((6, 5), (6, 5)),  # H x W
    ((6, 5, 3), (6, 5, 3)),  # H x W x C
    ((4, 6, 5), (6, 5, 4)),  # C x H x W, up to four planes: moved to the end
    ((5, 6, 7), (5, 6, 7)),  # five "planes" is not planar: H x W x C as it is
    ((3, 6, 4), (3, 6, 4)),  # planar needs more columns than planes
])
def test_an_npy_array_is_read_as_height_by_width_whichever_axis_holds_the_channels(tmp_path, shape, read):
    from omniseg.models.masks import read_npy

    np.save(tmp_path / "a.npy", np.arange(np.prod(shape), dtype=np.int32).reshape(shape))
    assert read_npy(tmp_path / "a.npy").shape == read


def test_an_npy_array_is_sized_from_its_header_and_refused_before_its_data_is_read(tmp_path):
    import tracemalloc

    from omniseg.errors import SampleError
    from omniseg.models.masks import read_npy

    np.save(tmp_path / "planes.npy", np.zeros((3, 60, 50), np.uint8))  # planar: 60 x 50 = 3,000 pixels
    assert read_npy(tmp_path / "planes.npy", max_pixels=3000).shape == (60, 50, 3)
    with pytest.raises(SampleError, match=r"planes\.npy is 50x60 pixels"):
        read_npy(tmp_path / "planes.npy", max_pixels=2999)
    np.save(tmp_path / "big.npy", np.zeros((2000, 2000), np.uint8))
    tracemalloc.start()
    try:
        with pytest.raises(SampleError, match="over the limit"):
            read_npy(tmp_path / "big.npy", max_pixels=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes held to refuse a 4 MB file by its header"
    np.save(tmp_path / "objects.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(SampleError, match="unreadable file"):
        read_npy(tmp_path / "objects.npy")


def test_a_boolean_mask_with_channels_is_foreground_where_any_channel_is():
    from omniseg.models.masks import binary

    arr = np.zeros((4, 5, 2), bool)
    arr[1, 2, 0] = arr[3, 4, 1] = True
    assert binary(arr).shape == (4, 5) and set(zip(*np.nonzero(binary(arr)))) == {(1, 2), (3, 4)}


@pytest.mark.parametrize("values, scale", [([0, 256], 65535), ([0, 255], 255), ([0, 65535], 65535), ([0, 65536], None)])
def test_the_scale_of_an_integer_probability_map_changes_exactly_past_8_and_16_bits(values, scale):
    from omniseg.errors import SampleError
    from omniseg.models.masks import probability

    arr = np.array([values], dtype=np.int64)
    if scale is None:
        with pytest.raises(SampleError, match="up to 65536"):
            probability(arr, Path("p.npy"))
    else:
        assert np.allclose(probability(arr, Path("p.npy")), np.array([values]) / scale)


@pytest.mark.parametrize("text, words", [
    ("", "expected a header"),
    ("name\tid\nx\ty\n", "expected a header"),
    ("case\tid\npolyp_1\n", "row 2: fewer fields"),
    ("case\tid\npolyp_1\ta\npolyp_2\ta\n", "row 3: id 'a' is given two cases"),
])
def test_an_id_map_without_its_columns_with_short_rows_or_two_cases_for_an_id_is_refused(tmp_path, text, words):
    from omniseg.errors import OmnisegError
    from omniseg.models.masks import read_id_map

    (tmp_path / "ids.tsv").write_text(text)
    with pytest.raises(OmnisegError, match=words):
        read_id_map(tmp_path / "ids.tsv")


def test_an_id_map_may_repeat_a_row_and_may_name_the_case_column_second(tmp_path):
    from omniseg.models.masks import read_id_map

    (tmp_path / "ids.csv").write_text("id,case\na,polyp_1\nb,polyp_2\na,polyp_1\n")
    assert read_id_map(tmp_path / "ids.csv") == {"a": "polyp_1", "b": "polyp_2"}


@pytest.mark.parametrize("values, want", [
    pytest.param(np.array([[0, -255, -255]], np.int16), [[False, True, True]], id="0-and-negative"),
    pytest.param(np.array([[-1, 0, 1]], np.int8), [[False, False, True]], id="middle-of-both-signs-is-background"),
    pytest.param(np.array([[-1, 2, 5]], np.int8), [[False, False, True]], id="above-the-middle-not-a-third"),
    pytest.param(np.array([[0, 100, 255]], np.uint8), [[False, False, True]], id="grey-100-of-255-is-background"),
    pytest.param(np.array([[np.nan, 1.0, 0.2]], np.float32), [[False, True, False]], id="float32-nan-is-background"),
    pytest.param(np.array([[0.0, 0.9, 5.0]], np.float32), [[False, True, True]], id="float32-above-1-counts-as-1"),
])
def test_the_binary_rule_at_its_edges(values, want):
    from omniseg.models.masks import binary

    assert binary(values).tolist() == want


def test_a_colour_or_multichannel_binary_mask_reads_as_one_plane():
    from omniseg.models.masks import binary

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = 255
    two = np.zeros((4, 5, 2), np.int16)
    two[3, 4, 1] = 7
    for arr, fg in ((rgb, (1, 2)), (two, (3, 4))):
        m = binary(arr)
        assert m.shape == (4, 5) and set(zip(*np.nonzero(m))) == {fg}


@pytest.mark.parametrize("values", [
    pytest.param(lambda m: np.where(m, 1, -1).astype(np.int8), id="int8-minus1-1"),
    pytest.param(lambda m: np.where(m, 1.0, np.nan).astype(np.float32), id="float32-nan-background"),
    pytest.param(lambda m: m.astype(np.uint16) * 1000, id="uint16-0-1000"),
])
def test_a_prediction_volume_reads_by_the_rule_of_images(tmp_path, values):
    """docs/datasets.md: a volume's prediction follows the same `values` rules as images (it read every voxel of a
    -1/1 volume as foreground)."""
    from omniseg.datasets.base import Sample

    from conftest import write_nifti

    m = np.zeros((4, 6, 5), bool)
    m[1:3, 2:5, 1:4] = True
    write_nifti(tmp_path / "v.nii.gz", values(m))
    sample = Sample(id="v", image=np.zeros(m.shape, np.int16), mask=m, spacing=(3.0, 0.8, 0.7))
    pred = masks_model(tmp_path).predict(sample)
    assert pred.status == "ok", pred.reason
    assert np.array_equal(pred.mask, m)


def test_the_empty_folder_warning_counts_each_run_from_zero(tmp_path):
    """Two empty files are enough to warn; a second run of the same model counts its own files only."""
    m = a_lesion()
    for sid in ("a", "b"):
        png(tmp_path / f"{sid}.png", np.zeros_like(m))
    model = masks_model(tmp_path)
    for _ in range(2):
        for sid in ("a", "b"):
            assert model.predict(sample_like(m, sid)).status == "ok"
        with pytest.warns(UserWarning, match=r"all 2 prediction files"):
            model.close()


def test_the_manifest_names_the_folder_and_the_files_a_masks_model_read(tmp_path, study):
    from omniseg.study import manifest

    root, _, preds, _ = study
    cfg = config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, entry("nn", preds)))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, progress=False, split="all")
        sig = manifest.build(st, ["polyp"], "all")["tasks"]["polyp"]["models"]["nn"]["signature"]
    assert sig["folder"] == str(preds)
    assert sig["files"] == {"count": len(list(preds.iterdir())), "sha256": masks_model(preds).listing_hash()}


def volume_sample(m: np.ndarray, sid: str = "v", spacing=(3.0, 0.8, 0.7)):
    from omniseg.datasets.base import Sample

    return Sample(id=sid, image=np.zeros(m.shape, np.int16), mask=m, spacing=spacing)


def test_a_prediction_volume_is_found_by_its_pattern_read_by_each_values_rule_and_checked_against_the_grid(tmp_path):
    """Every rule of a volume's prediction: which files the pattern names (exact, or `*` with the id escaped), the
    union of several, labels and probability values, the grid check's message, the pixel limit and the files
    recorded (only the first-named volume tests reached this code before)."""
    from conftest import write_nifti
    from omniseg.models.base import RunContext

    m = np.zeros((4, 6, 5), bool)
    m[1:3, 2:5, 1:4] = True
    top, bottom = m.copy(), m.copy()
    top[2:], bottom[:2] = False, False
    exact = tmp_path / "exact"
    write_nifti(exact / "case[1].nii.gz", m.astype(np.uint8))
    write_nifti(exact / "case[1]_extra.nii.gz", np.ones_like(m, np.uint8))  # not named by the exact pattern
    (exact / "case[1].txt").write_text("not a volume")
    pred = masks_model(exact).predict(volume_sample(m, "case[1]"))
    assert pred.status == "ok" and np.array_equal(pred.mask, m) and pred.meta == {"files": ["case[1].nii.gz"]}

    star = tmp_path / "star"
    write_nifti(star / "case[1]_a.nii.gz", top.astype(np.uint8))
    write_nifti(star / "case[1]_b.NII", bottom.astype(np.uint8))
    write_nifti(star / "case1_c.nii.gz", np.ones_like(m, np.uint8))  # '[1]' is the id's text, not a character class
    pred = masks_model(star, pattern="{id}_*").predict(volume_sample(m, "case[1]"))
    assert pred.status == "ok" and np.array_equal(pred.mask, top | bottom)
    assert sorted(pred.meta["files"]) == ["case[1]_a.nii.gz", "case[1]_b.NII"]

    missing = masks_model(star, pattern="{id}_*").predict(volume_sample(m, "other"))
    assert missing.status == "missing" and "no prediction for other in" in missing.reason
    assert "'{id}_*'" in missing.reason and ".nii or .nii.gz" in missing.reason

    literal = tmp_path / "literal"  # without `*` the pattern is the name itself: `[a]` is no character class
    write_nifti(literal / "v_[a].nii.gz", top.astype(np.uint8))
    write_nifti(literal / "v_a.nii.gz", bottom.astype(np.uint8))
    pred = masks_model(literal, pattern="{id}_[a]").predict(volume_sample(m))
    assert pred.meta == {"files": ["v_[a].nii.gz"]} and np.array_equal(pred.mask, top)

    labels = tmp_path / "labels"
    write_nifti(labels / "v.nii.gz", np.where(top, 2, np.where(bottom, 1, 0)).astype(np.uint8))
    assert np.array_equal(masks_model(labels, values="labels", labels=[2]).predict(volume_sample(m)).mask, top)
    assert np.array_equal(masks_model(labels, values="labels", labels=[1]).predict(volume_sample(m)).mask, bottom)
    prob = tmp_path / "prob"
    write_nifti(prob / "v.nii.gz", np.where(top, 0.9, np.where(bottom, 0.4, 0.0)).astype(np.float32))
    assert np.array_equal(masks_model(prob, values="probability").predict(volume_sample(m)).mask, top)
    assert np.array_equal(masks_model(prob, values="probability", threshold=0.4).predict(volume_sample(m)).mask, m)

    grid = masks_model(exact).predict(volume_sample(m, "case[1]", spacing=(3.0, 0.8, 0.9)))
    assert grid.status == "error" and grid.meta["file"] == "case[1].nii.gz"
    assert grid.reason.startswith("case[1]: prediction case[1].nii.gz is (4, 6, 5) voxels of (3.0, 0.8, 0.7) mm but "
                                  "the image is (4, 6, 5) of (3.0, 0.8, 0.9) mm")
    near = masks_model(exact).predict(volume_sample(m, "case[1]", spacing=(3.0, 0.8, 0.7002)))
    assert near.status == "ok"  # a spacing within 0.1% is the same grid
    shape = masks_model(exact).predict(volume_sample(m[:, :, :4], "case[1]"))
    assert shape.status == "error" and "is (4, 6, 5) voxels" in shape.reason and "image is (4, 6, 4)" in shape.reason
    assert shape.reason.endswith("mm (depth, height, width): resample the prediction onto the image's grid")
    fine = tmp_path / "fine"  # spacings are said to 4 decimals
    write_nifti(fine / "v.nii.gz", m.astype(np.uint8), spacing=(3.0, 0.8, 0.70004))
    said = masks_model(fine).predict(volume_sample(m[:, :, :4], spacing=(3.00004, 0.8, 0.70004))).reason
    assert "is (4, 6, 5) voxels of (3.0, 0.8, 0.7) mm but the image is (4, 6, 4) of (3.0, 0.8, 0.7) mm" in said

    small = masks_model(exact)
    small.bind(RunContext(max_pixels=100))  # 120 voxels: over the run's limit
    refused = small.predict(volume_sample(m, "case[1]"))
    assert refused.status == "error" and refused.meta["file"] == "case[1].nii.gz"
    big = masks_model(exact)
    big.bind(RunContext(max_pixels=120))
    assert big.predict(volume_sample(m, "case[1]")).status == "ok"

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "v.nii.gz").write_bytes(b"not gzip at all")
    broken = masks_model(tmp_path / "broken").predict(volume_sample(m))
    assert broken.status == "error" and "not a readable NIfTI volume" in broken.reason


def test_an_empty_prediction_volume_counts_towards_the_empty_folder_warning(tmp_path):
    from conftest import write_nifti

    m = np.zeros((3, 4, 4), bool)
    m[1, 1:3, 1:3] = True
    for sid in ("a", "b"):
        write_nifti(tmp_path / f"{sid}.nii.gz", np.zeros(m.shape, np.uint8))
    model = masks_model(tmp_path)
    for sid in ("a", "b"):
        assert model.predict(volume_sample(m, sid)).status == "ok"
    with pytest.warns(UserWarning, match=r"all 2 prediction files"):
        model.close()
    write_nifti(tmp_path / "b.nii.gz", m.astype(np.uint8))
    model = masks_model(tmp_path)
    for sid in ("a", "b"):
        model.predict(volume_sample(m, sid))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.close()  # one of two has foreground: no warning


@pytest.mark.parametrize("values, data, words", [
    ("probability", lambda m: np.where(m, 200, -3).astype(np.int16), "holds negative values (-3)"),
    ("binary", lambda m: (m * (1 + 1j)).astype(np.complex64), "holds complex64 values"),
])
def test_a_prediction_volume_whose_values_cannot_be_read_is_its_files_error_row(tmp_path, values, data, words):
    """As a 2-D file's: the reason names the file and the row names it in `file` (a negative probability volume
    escaped as an exception, and a complex one as a TypeError, both turned into an unlabelled error by the base
    class)."""
    from conftest import write_nifti

    m = np.zeros((3, 4, 4), bool)
    m[1, 1:3, 1:3] = True
    write_nifti(tmp_path / "v.nii.gz", data(m))
    pred = masks_model(tmp_path, values=values).predict(volume_sample(m))
    assert pred.status == "error" and pred.meta.get("file") == "v.nii.gz", pred.reason
    assert str(tmp_path / "v.nii.gz") in pred.reason and words in pred.reason


@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 4)])
def test_an_empty_array_is_an_empty_mask_of_its_shape(shape):
    from omniseg.models.masks import foreground

    for dtype in (np.uint8, np.int16, np.float32):
        out = foreground(np.zeros(shape, dtype))
        assert out.dtype == bool and out.shape == shape

"""`omniseg export nnunet`: nnU-Net v2's raw layout, checked by nnU-Net's own integrity check, our split kept."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from PIL import Image
from typer.testing import CliRunner

from omniseg import config, datasets
from omniseg.cli import app
from omniseg.datasets.nnunet import case_ids
from omniseg.inference.runner import run
from omniseg.store.database import Store

from conftest import KVASIR_REAL, make_busi, make_kvasir, write_config


def export(tmp_path: Path, cfg_path: Path, *extra: str):
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(cfg_path), "--out", str(tmp_path / "raw"),
                                 "--predictions", str(tmp_path / "pred"), "-q", *extra])
    assert r.exit_code == 0, r.output
    return r.output


def ids_file(folder: Path) -> list[dict]:
    with open(folder / "omniseg_ids.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_the_export_passes_nnunets_check_keeps_our_split_and_reads_back_as_a_masks_model(tmp_path):
    root = make_busi(tmp_path / "busi", per_class=6)  # ids like 'benign (1)': not file-name safe for nnU-Net
    cfg_path = write_config(tmp_path / "b.yaml", "breast", "busi", root, "  - name: e\n    kind: ellipse\n")
    out = export(tmp_path, cfg_path, "--id", "503")
    folder = tmp_path / "raw" / "Dataset503_Breast"
    verify_dataset_integrity(str(folder), num_processes=1)  # nnU-Net's own check: raises on any problem
    ds = datasets.open("busi", root)
    refs = ds.refs("all")
    rows = ids_file(folder)
    assert {r["id"] for r in rows} == {r.id for r in refs}
    case_of = {r["id"]: r["case"] for r in rows}
    test_ids = {r.id for r in refs if r.split == "test"}
    assert 0 < len(test_ids) < len(refs)
    assert {p.name for p in (folder / "imagesTs").iterdir()} == {f"{case_of[i]}_0000.png" for i in test_ids}
    assert {p.name for p in (folder / "imagesTr").iterdir()} == {f"{case_of[r.id]}_0000.png" for r in refs
                                                                 if r.id not in test_ids}
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == len(refs) - len(test_ids) and meta["labels"] == {"background": 0, "breast": 1}
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["name"] == "Dataset503_Breast"
    assert meta["description"].startswith("exported by omniseg from task 'breast': imagesTs is exactly its test split")
    assert (folder / "dataset.json").read_text().startswith('{\n  "')  # indented by two, as nnU-Net writes it
    one = next(r for r in refs if r.split == "train")
    sample = ds.load(one)
    assert (np.asarray(Image.open(folder / "imagesTr" / f"{case_of[one.id]}_0000.png")) == sample.image).all()
    assert (np.asarray(Image.open(folder / "labelsTr" / f"{case_of[one.id]}.png")) == sample.mask).all()
    for cmd in ("nnUNetv2_plan_and_preprocess -d 503", "nnUNetv2_train 503 2d", "nnUNetv2_predict -i"):
        assert cmd in out

    # nnU-Net's predictions, as nnUNetv2_predict writes them (one 0/1 PNG per imagesTs case), read back by
    # the entry the export printed: each test sample scores 1, except the one left out, which is 'missing'
    pred = tmp_path / "pred"
    pred.mkdir()
    test_list = sorted(test_ids)
    for sid in test_list[1:]:
        Image.fromarray(ds.load(next(r for r in refs if r.id == sid)).mask.astype(np.uint8)).save(
            pred / f"{case_of[sid]}.png")
    entry = out.split("models: in", 1)[1].split("\n", 2)[2]
    models = yaml.safe_load(entry)
    assert models[0]["kind"] == "masks" and models[0]["role"] == "specialist"
    cfg = config.load(write_config(tmp_path / "r.yaml", "breast", "busi", root, entry, ""))
    with Store(tmp_path / "s.sqlite") as st:
        run(cfg, st, split="test", progress=False)
        df = st.query("SELECT p.sample_id, p.status, c.dice FROM predictions p JOIN scores c "
                      "USING (task, sample_id, model)").set_index("sample_id")
    assert set(df.index) == test_ids and df.loc[test_list[0], "status"] == "missing"
    assert (df.drop(test_list[0]).dice == 1.0).all()


def test_case_ids_are_file_name_safe_and_unique():
    got = case_ids(["benign (1)", "benign_1", "a/b", "ok-id_2", "é"])
    assert got["benign (1)"] == "benign_1" and got["benign_1"] == "benign_1_2" and got["a/b"] == "a_b"
    assert got["ok-id_2"] == "ok-id_2" and len(set(got.values())) == 5
    assert all(c.replace("_", "").replace("-", "").isalnum() and c.isascii() for c in got.values())


def test_an_occupied_id_or_folder_is_refused(tmp_path):
    root = make_kvasir(tmp_path / "k", n=6)
    cfg_path = write_config(tmp_path / "k.yaml", "polyp", "kvasir-seg", root, "  - name: e\n    kind: ellipse\n")
    export(tmp_path, cfg_path)
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(cfg_path), "--out", str(tmp_path / "raw")])
    assert r.exit_code == 2 and "exists and is not empty" in r.output, r.output
    (tmp_path / "other.yaml").write_text(cfg_path.read_text().replace("task: polyp", "task: colon"))
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(tmp_path / "other.yaml"), "--out",
                                 str(tmp_path / "raw")])
    assert r.exit_code == 2 and "id 501 is taken" in r.output and "Dataset501_Polyp" in r.output, r.output
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(cfg_path), "--id", "1000"])
    assert r.exit_code == 2 and "1..999" in r.output


def test_the_real_kvasir_seg_exports_and_passes_nnunets_check(tmp_path):
    if not KVASIR_REAL.is_dir():
        pytest.skip("the real Kvasir-SEG is not in ../shared/data")
    cfg_path = write_config(tmp_path / "k.yaml", "polyp", "kvasir-seg", KVASIR_REAL, "  - name: e\n    kind: ellipse\n")
    export(tmp_path, cfg_path)
    folder = tmp_path / "raw" / "Dataset501_Polyp"
    verify_dataset_integrity(str(folder), num_processes=2)
    test_ids = {r.id for r in datasets.open("kvasir-seg", KVASIR_REAL).refs("test")}
    assert len(test_ids) == 200
    assert {r["id"] for r in ids_file(folder) if r["split"] == "test"} == test_ids
    assert len(list((folder / "imagesTs").iterdir())) == 200 and len(list((folder / "imagesTr").iterdir())) == 800


from hypothesis import given, strategies as st  # noqa: E402

from omniseg.datasets.nnunet import write_ids  # noqa: E402
from omniseg.models.masks import read_id_map  # noqa: E402

#: ids a file system allows in a stem: any text without '/' or NUL (and encodable: no lone surrogates)
ID_TEXT = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=120)


@given(st.lists(ID_TEXT, min_size=1, max_size=12, unique=True))
def test_the_id_map_round_trips_any_ids(tmp_path_factory, ids):
    path = tmp_path_factory.mktemp("ids") / "omniseg_ids.tsv"
    cases = case_ids(ids)
    write_ids(path, [(cases[i], i, "test") for i in ids])
    assert read_id_map(path) == cases
    assert all(len(c) <= 100 and c.isascii() for c in cases.values()) and len(set(cases.values())) == len(ids)


NASTY_IDS = ['q"uote', "tab\there", "ü" * 125, "x" * 250, "it's #1", "semi;colon", "[brackets] & {braces}"]


def test_ids_of_any_text_survive_run_export_and_the_id_map(tmp_path):
    """Quotes, tabs, unicode and 250-byte ids (254-byte file names): run writes their masks, export writes their
    cases, the id map brings them back, and the predictions named by case score against the right samples."""
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(5)
    from conftest import blob_mask, lesion_image

    ids = [f"a{k}" for k in range(10)] + NASTY_IDS
    for sid in ids:
        m = blob_mask(32, 40, rng)
        Image.fromarray(lesion_image(m, rng)).save(root / "images" / f"{sid}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{sid}.png")
    cfg_path = write_config(tmp_path / "f.yaml", "own", "folder", root, "  - name: otsu\n    kind: otsu\n")
    store = tmp_path / "s.sqlite"
    r = CliRunner().invoke(app, ["run", "--config", str(cfg_path), "--store", str(store), "-q"])
    assert r.exit_code == 0, r.output
    with Store(store) as st_:
        rows = st_.query("SELECT sample_id, status, mask_path FROM predictions")
    assert sorted(rows.sample_id) == sorted(ids) and set(rows.status) == {"ok"}
    assert all((tmp_path / p).is_file() and len(Path(p).name.encode()) <= 255 for p in rows.mask_path)
    out = export(tmp_path, cfg_path)
    folder = tmp_path / "raw" / "Dataset501_Own"
    id_map = read_id_map(folder / "omniseg_ids.tsv")
    assert sorted(id_map) == sorted(ids)
    pred = tmp_path / "pred"
    pred.mkdir()
    for sub in ("labelsTr", "labelsTs"):
        for p in (folder / sub).iterdir():
            (pred / p.name).write_bytes(p.read_bytes())
    entry = out.split("models: in", 1)[1].split("\n", 2)[2]
    cfg = config.load(write_config(tmp_path / "r.yaml", "own", "folder", root, entry))
    with Store(tmp_path / "r.sqlite") as st_:
        run(cfg, st_, split="all", progress=False)
        df = st_.query("SELECT p.sample_id, p.status, c.dice FROM predictions p JOIN scores c "
                       "USING (task, sample_id, model)").set_index("sample_id")
    assert sorted(df.index) == sorted(ids) and set(df.status) == {"ok"} and (df.dice == 1.0).all()


def test_an_export_that_cannot_train_writes_nothing_and_paths_are_quoted(tmp_path):
    root = make_kvasir(tmp_path / "k", n=4)
    spaced = tmp_path / "a dir #1"
    cfg_path = write_config(tmp_path / "k.yaml", "polyp", "folder", root, "  - name: e\n    kind: ellipse\n",
                            "")
    cfg_path.write_text(cfg_path.read_text().replace("  name: folder\n", "  name: folder\n  options: {split: test}\n"))
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(cfg_path), "--out", str(spaced / "raw"), "-q"])
    assert r.exit_code == 2 and "every sample is in the test split" in r.output, r.output
    assert not (spaced / "raw" / "Dataset501_Polyp").exists()
    cfg_path.write_text(cfg_path.read_text().replace("{split: test}", "{split: hash}"))
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(cfg_path), "--out", str(spaced / "raw"), "-q",
                                 "--predictions", str(spaced / "p'red")])
    assert r.exit_code == 0, r.output
    import shlex

    line = next(x.strip() for x in r.output.splitlines() if x.strip().startswith("export nnUNet_raw="))
    assert shlex.split(line)[1] == f"nnUNet_raw={(spaced / 'raw').resolve()}"
    predict = next(x.strip() for x in r.output.splitlines() if x.strip().startswith("nnUNetv2_predict"))
    assert shlex.split(predict)[4] == str(spaced / "p'red")
    entry = yaml.safe_load(r.output.split("models: in", 1)[1].split("\n", 2)[2])[0]
    assert entry["options"]["folder"] == str(spaced / "p'red")
    assert entry["options"]["id_map"] == str(spaced / "raw" / "Dataset501_Polyp" / "omniseg_ids.tsv")


def test_a_task_named_background_keeps_nnunets_label_0_and_out_must_be_a_folder(tmp_path):
    root = make_kvasir(tmp_path / "k", n=6)
    cfg_path = write_config(tmp_path / "k.yaml", "background", "kvasir-seg", root, "  - name: e\n    kind: ellipse\n")
    export(tmp_path, cfg_path)
    meta = json.loads((tmp_path / "raw" / "Dataset501_Background" / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "foreground": 1}
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(app, ["export", "nnunet", "--config", str(cfg_path), "--out", str(tmp_path / "file")])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output, r.output


def test_an_id_map_with_a_byte_order_mark_reads_and_a_missing_one_is_one_message(tmp_path):
    root = make_kvasir(tmp_path / "k", n=2)
    preds = tmp_path / "p"
    preds.mkdir()
    ds = datasets.open("kvasir-seg", root)
    for k, r in enumerate(ds.refs("all")):
        Image.fromarray(ds.load(r).mask.astype(np.uint8)).save(preds / f"c{k}.png")
    (tmp_path / "ids.csv").write_text("case,id\nc0,case000\nc1,case001\n", encoding="utf-8-sig")
    assert read_id_map(tmp_path / "ids.csv") == {"case000": "c0", "case001": "c1"}
    entry = (f"  - name: nn\n    kind: masks\n    options: {{folder: {preds}, values: labels, labels: [1], "
             f"id_map: {tmp_path / 'ids.csv'}}}\n")
    with Store(tmp_path / "s.sqlite") as st_:
        run(config.load(write_config(tmp_path / "t.yaml", "polyp", "kvasir-seg", root, entry)), st_, progress=False)
        assert set(st_.query("SELECT status FROM predictions").status) == {"ok"}
    gone = write_config(tmp_path / "g.yaml", "polyp", "kvasir-seg", root, entry.replace("ids.csv", "gone.csv"))
    r = CliRunner().invoke(app, ["run", "--config", str(gone), "--store", str(tmp_path / "g.sqlite"), "-q"])
    assert r.exit_code == 2 and "options.id_map" in r.output and "gone.csv" in r.output, r.output
    assert "Traceback" not in r.output


def test_a_volume_task_is_refused_before_anything_is_written(tmp_path):
    from omniseg.datasets.nnunet import export
    from omniseg.errors import OmnisegError

    from conftest import make_volumes

    ds = datasets.open("nnunet-raw", make_volumes(tmp_path / "D", n=2, layout="nnunet"))
    with pytest.raises(OmnisegError, match="reads volumes.*nnunet-raw.*masks"):
        export(ds, "les", tmp_path / "raw", 7)
    assert not (tmp_path / "raw").exists()


def test_the_folder_name_the_printed_commands_and_the_masks_entry_are_exact():
    """What `export nnunet` prints, by hand: nnU-Net's folder name from the id and task, its three environment
    paths beside the raw folder and the test images to predict (quoted for the shell), and the `masks` entry (in its
    order, unicode as it is, one line per option however long the path)."""
    import shlex

    from omniseg.datasets.nnunet import Export, commands, folder_name, masks_entry
    from omniseg.errors import OmnisegError

    assert [folder_name(1, "polyp"), folder_name(999, "breast tumour-2"), folder_name(7, "é!")] == [
        "Dataset001_Polyp", "Dataset999_BreastTumour2", "Dataset007_Omniseg"]
    for bad in (0, 1000):
        with pytest.raises(OmnisegError, match="1..999"):
            folder_name(bad, "polyp")
    raw = Path("/data/a dir #1/raw")
    e = Export(folder=raw / "Dataset501_Polyp", dataset_id=501)
    env, plan, train, predict = (shlex.split(c) for c in commands(e, raw, Path("/p'red")))
    assert env == ["export", "nnUNet_raw=/data/a dir #1/raw", "nnUNet_preprocessed=/data/a dir #1/nnUNet_preprocessed",
                   "nnUNet_results=/data/a dir #1/nnUNet_results"]
    assert plan == ["nnUNetv2_plan_and_preprocess", "-d", "501", "--verify_dataset_integrity"]
    assert train == ["nnUNetv2_train", "501", "2d", "all"]
    assert predict == ["nnUNetv2_predict", "-i", "/data/a dir #1/raw/Dataset501_Polyp/imagesTs", "-o", "/p'red",
                       "-d", "501", "-c", "2d", "-f", "all"]
    long = Path("/données") / ("a very long folder name " * 4) / "predictions"
    text = masks_entry(e, long)
    assert text.splitlines()[:4] == ["  - name: nnunet", "    kind: masks", "    role: specialist", "    options:"]
    assert f"      folder: {long}" in text.splitlines()  # one line, é as it is
    assert yaml.safe_load(text)[0]["options"] == {"folder": str(long), "values": "labels", "labels": [1],
                                                  "id_map": str(e.folder / "omniseg_ids.tsv")}

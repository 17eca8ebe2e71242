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
from omniseg.evaluation.runner import run
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

"""The `nnunet-raw` dataset kind: nnU-Net v2's (and the Decathlon's) raw layout read as it is, the target chosen by
label name or value, or the union of every foreground label."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omniseg import datasets
from omniseg.errors import OmnisegError, DataMissingError

from conftest import ct_volume, make_volumes, write_nifti


def _two_labels(root, labels_doc):
    rng = np.random.default_rng(4)
    for case in ("a", "b", "c"):
        image, _ = ct_volume((4, 12, 10), rng)
        label = np.zeros(image.shape, np.uint8)
        label[1, 2:5, 2:5] = 1  # 9 voxels of liver
        label[2, 6:8, 6:8] = 2  # 4 of tumour
        write_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", label)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels_doc,
                                                   "numTraining": 3, "file_ending": ".nii.gz"}))
    return root


@pytest.mark.parametrize("doc", [{"background": 0, "liver": 1, "tumour": 2},  # nnU-Net v2
                                 {"0": "background", "1": "liver", "2": "tumour"}])  # the Decathlon's
def test_the_target_is_a_label_by_name_or_value_or_the_union(tmp_path, doc):
    root = _two_labels(tmp_path / "Dataset001_Liver", doc)
    voxels = {}
    for label in (None, "liver", "tumour", 2, "1"):
        ds = datasets.open("nnunet-raw", root, {"label": label})
        voxels[label] = ds.load(ds.refs()[0]).mask.sum()
    assert voxels == {None: 13, "liver": 9, "tumour": 4, 2: 4, "1": 9}


def test_an_unknown_label_is_a_configuration_error_listing_the_labels(tmp_path):
    root = _two_labels(tmp_path / "D", {"background": 0, "liver": 1, "tumour": 2})
    for wrong in ("spleen", 7, "background"):
        with pytest.raises(OmnisegError, match="liver") as e:
            datasets.open("nnunet-raw", root, {"label": wrong}).refs()
        assert "dataset.json" in str(e.value)


def test_labels_of_the_test_images_make_them_the_test_split(tmp_path):
    root = make_volumes(tmp_path / "D", n=4, layout="nnunet")
    hashed = datasets.open("nnunet-raw", root).refs()
    assert {r.split for r in hashed} <= {"train", "test"} and len(hashed) == 4
    rng = np.random.default_rng(5)
    for case in ("t1", "t2"):
        image, label = ct_volume((8, 24, 20), rng)
        write_nifti(root / "imagesTs" / f"{case}_0000.nii.gz", image)
        write_nifti(root / "labelsTs" / f"{case}.nii.gz", label)
    ds = datasets.open("nnunet-raw", root)
    assert [r.id for r in ds.refs("test")] == ["t1", "t2"] and len(ds.refs("train")) == 4


def test_a_2d_raw_dataset_and_a_missing_description_are_said(tmp_path):
    root = make_volumes(tmp_path / "D", n=2, layout="nnunet")
    doc = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**doc, "file_ending": ".png"}))
    with pytest.raises(DataMissingError, match="folder"):
        datasets.open("nnunet-raw", root).refs()
    (root / "dataset.json").write_text("[1, 2]")
    with pytest.raises(DataMissingError, match="labels"):
        datasets.open("nnunet-raw", root).refs()
    (root / "dataset.json").unlink()
    with pytest.raises(DataMissingError, match="dataset.json"):
        datasets.open("nnunet-raw", root).refs()

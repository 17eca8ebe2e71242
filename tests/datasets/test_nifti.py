"""The `nifti` dataset kind: volumes with their labels, read in canonical (depth, height, width) order with their
spacing; a label off its image's grid is one message naming both files."""

from __future__ import annotations

import numpy as np
import pytest

from omniseg import datasets
from omniseg.errors import DataMissingError, SampleError

from conftest import ct_volume, make_volumes, write_nifti


def test_a_volume_is_read_with_its_spacing_and_its_label_as_the_mask(tmp_path):
    root = make_volumes(tmp_path / "v", n=3, shape=(7, 22, 19), spacing=(2.5, 0.9, 0.6))
    ds = datasets.open("nifti", root)
    refs = ds.refs("all")
    assert [r.id for r in refs] == ["case_000", "case_001", "case_002"]
    s = ds.load(refs[1])
    import nibabel as nib

    label = np.asarray(nib.load(str(root / "labels" / "case_001.nii.gz")).dataobj).transpose(2, 1, 0)
    assert s.image.shape == s.mask.shape == (7, 22, 19)
    assert np.array_equal(s.mask, label > 0)
    assert s.spacing == pytest.approx((2.5, 0.9, 0.6))


def test_a_flipped_file_reads_as_the_same_canonical_volume(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    image, label = ct_volume((5, 12, 10), rng)
    write_nifti(tmp_path / "a" / "images" / "x.nii.gz", image)
    write_nifti(tmp_path / "a" / "labels" / "x.nii.gz", label)
    # the same voxels stored with the width axis reversed and a negative x step: the world is the same
    flipped = np.ascontiguousarray(image.transpose(2, 1, 0)[::-1])
    affine = np.diag([-0.7, 0.8, 3.0, 1.0])
    affine[0, 3] = 0.7 * 9
    (tmp_path / "b" / "images").mkdir(parents=True)
    nib.save(nib.Nifti1Image(flipped, affine), str(tmp_path / "b" / "images" / "x.nii.gz"))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(label.transpose(2, 1, 0)[::-1]), affine),
             str(tmp_path / "b" / "labels.nii.gz"))
    (tmp_path / "b" / "labels").mkdir()
    (tmp_path / "b" / "labels.nii.gz").rename(tmp_path / "b" / "labels" / "x.nii.gz")
    a = datasets.open("nifti", tmp_path / "a")
    b = datasets.open("nifti", tmp_path / "b")
    sa, sb = a.load(a.refs()[0]), b.load(b.refs()[0])
    assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.mask, sb.mask)


@pytest.mark.parametrize("change,said", [
    ({"shape": (5, 12, 11)}, "differ in shape"),
    ({"spacing": (2.0, 0.8, 0.7)}, "differ in voxel spacing"),
    ({"origin": (5.0, 0.0, 0.0)}, "differ in orientation or origin"),
])
def test_a_label_off_its_images_grid_is_one_message_naming_both_files(tmp_path, change, said):
    rng = np.random.default_rng(1)
    image, label = ct_volume((5, 12, 10), rng)
    root = tmp_path / "v"
    write_nifti(root / "images" / "x.nii.gz", image)
    shape = change.get("shape", label.shape)
    write_nifti(root / "labels" / "x.nii.gz", np.zeros(shape, np.uint8) if "shape" in change else label,
                change.get("spacing", (3.0, 0.8, 0.7)), change.get("origin", (0.0, 0.0, 0.0)))
    n, problems, _ = datasets.open("nifti", root).verify(progress=False)
    assert n == 1 and len(problems) == 1
    message = problems[0][1]
    assert said in message and str(root / "labels" / "x.nii.gz") in message and str(root / "images" / "x.nii.gz") in message


def test_an_image_without_a_label_is_a_problem_of_its_own_and_the_others_read(tmp_path):
    root = make_volumes(tmp_path / "v", n=3)
    (root / "labels" / "case_001.nii.gz").unlink()
    n, problems, _ = datasets.open("nifti", root).verify(progress=False)
    assert n == 3 and [p[0] for p in problems] == ["case_001"] and "has no label volume" in problems[0][1]


def test_nnunet_channel_files_give_one_sample_per_case_and_the_chosen_modality(tmp_path):
    rng = np.random.default_rng(2)
    image, label = ct_volume((4, 10, 9), rng)
    root = tmp_path / "v"
    write_nifti(root / "images" / "c1_0000.nii.gz", image)
    write_nifti(root / "images" / "c1_0001.nii.gz", (image * 2).astype(np.int16))
    write_nifti(root / "labels" / "c1.nii.gz", label)
    first = datasets.open("nifti", root)
    second = datasets.open("nifti", root, {"channel": 1})
    assert [r.id for r in first.refs()] == ["c1"]
    assert np.array_equal(second.load(second.refs()[0]).image, first.load(first.refs()[0]).image * 2)


def test_foreground_values_choose_labels_and_a_fractional_label_file_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    image, _ = ct_volume((4, 10, 9), rng)
    label = np.zeros(image.shape, np.uint8)
    label[1, 2:4, 2:4] = 1
    label[2, 5:8, 5:8] = 2
    root = tmp_path / "v"
    write_nifti(root / "images" / "x.nii.gz", image)
    write_nifti(root / "labels" / "x.nii.gz", label)
    union = datasets.open("nifti", root)
    two = datasets.open("nifti", root, {"foreground": [2]})
    assert union.load(union.refs()[0]).mask.sum() == 4 + 9 and two.load(two.refs()[0]).mask.sum() == 9
    write_nifti(root / "labels" / "x.nii.gz", label.astype(np.float32) * 0.5)
    with pytest.raises(SampleError, match="fractional"):
        union.load(union.refs()[0])


def test_a_folder_without_volumes_names_the_layout(tmp_path):
    (tmp_path / "v" / "images").mkdir(parents=True)
    (tmp_path / "v" / "labels").mkdir()
    (tmp_path / "v" / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DataMissingError, match="no .nii or .nii.gz volume"):
        datasets.open("nifti", tmp_path / "v").refs()
    with pytest.raises(DataMissingError, match="lacks labels/"):
        datasets.open("nifti", _only_images(tmp_path)).refs()


def _only_images(tmp_path):
    root = tmp_path / "w"
    (root / "images").mkdir(parents=True)
    return root

"""2-D models on volumes (omniseg.models.slicewise): a volume is the model's answers on its windowed slices,
stacked; the selection asks only some slices (the others empty); a failed slice is counted and scored empty."""

from __future__ import annotations

import numpy as np
import pytest

from omniseg import models
from omniseg.config import ModelConfig, SliceConfig
from omniseg.datasets import open as open_dataset, volumes
from omniseg.datasets.base import Sample
from omniseg.models.base import Prediction, Segmenter
from omniseg.models.slicewise import SliceWise, for_volumes

from conftest import make_volumes
from omniseg.store import runs as store_runs


@pytest.fixture
def volume(tmp_path):
    ds = open_dataset("nifti", make_volumes(tmp_path / "v", n=1, shape=(9, 30, 26)))
    return ds.load(ds.refs()[0])


def test_a_volume_is_the_2d_models_answers_on_its_windowed_slices_stacked(volume):
    otsu = models.build(ModelConfig(name="otsu", kind="otsu", options={"foreground": "bright"}))
    cut = SliceConfig(window=(40, 400))
    pred = SliceWise(otsu, cut).predict(volume)
    expected = []
    for k in range(volume.mask.shape[0]):
        grey = np.clip((volume.image[k].astype(np.float32) - (40 - 200)) * 255 / 400, 0, 255).round().astype(np.uint8)
        expected.append(otsu.predict(Sample("s", np.repeat(grey[..., None], 3, 2), volume.mask[k])).mask)
    assert pred.status == "ok" and pred.mask.shape == volume.mask.shape
    assert np.array_equal(pred.mask, np.stack(expected))
    assert pred.meta["slices"] == 9 and pred.meta["failed_slices"] == 0


@pytest.mark.parametrize("axis", ["coronal", "sagittal"])
def test_other_axes_cut_the_volume_along_their_own_dimension(volume, axis):
    seen = []

    class Shapes(Segmenter):
        kind = "shapes"

        def predict(self, sample):
            seen.append(sample.image.shape[:2])
            return Prediction(np.ones(sample.mask.shape, bool))

    pred = SliceWise(Shapes("s"), SliceConfig(axis=axis)).predict(volume)
    d, h, w = volume.mask.shape
    assert seen == ([(d, w)] * h if axis == "coronal" else [(d, h)] * w) and pred.mask.all()


def test_reference_selection_asks_only_slices_near_the_reference_and_is_marked_privileged(volume):
    asked = []

    class Everything(Segmenter):
        kind = "everything"

        def predict(self, sample):
            asked.append(sample.meta["slice"])
            return Prediction(np.ones(sample.mask.shape, bool))

    model = SliceWise(Everything("e"), SliceConfig(select="reference", margin=1))
    pred = model.predict(volume)
    hit = np.flatnonzero(volume.mask.any(axis=(1, 2)))
    want = sorted({k for h in hit for k in range(max(0, h - 1), min(9, h + 2))})
    assert asked == want and len(want) < 9
    assert pred.mask.any(axis=(1, 2)).nonzero()[0].tolist() == want  # the other slices are empty
    assert model.privileged and not SliceWise(Everything("e"), SliceConfig()).privileged
    assert SliceWise(Everything("e"), SliceConfig(select="every", every=4)).predict(volume).meta["slices"] == 3


def test_failed_slices_are_counted_and_scored_empty_and_all_failed_is_a_failure(volume):
    class Flaky(Segmenter):
        kind = "flaky"

        def __init__(self, name, fail):
            super().__init__(name)
            self.fail = fail

        def predict(self, sample):
            if sample.meta["slice"] in self.fail:
                return Prediction.failed("the server said 500", status="api_error")
            return Prediction(np.ones(sample.mask.shape, bool))

    some = SliceWise(Flaky("f", {2, 5}), SliceConfig()).predict(volume)
    assert some.status == "ok" and some.meta["failed_slices"] == 2 and some.meta["slice_statuses"] == {"api_error": 2}
    assert not some.mask[2].any() and not some.mask[5].any() and some.mask[3].all()
    assert "2 of 9 slices failed" in some.reason and "slice 2: api_error" in some.reason
    every = SliceWise(Flaky("f", set(range(9))), SliceConfig()).predict(volume)
    assert every.status == "api_error" and every.mask is None and "every one of the 9 slices failed" in every.reason


def test_the_signature_changes_with_the_slicing_and_whole_volume_models_are_left_as_they_are(tmp_path):
    otsu = models.build(ModelConfig(name="otsu", kind="otsu"))
    a = SliceWise(otsu, SliceConfig()).signature_hash()
    assert a != SliceWise(otsu, SliceConfig(window=(40, 400))).signature_hash()
    assert a != SliceWise(otsu, SliceConfig(axis="coronal")).signature_hash()
    (tmp_path / "p").mkdir()
    disk = models.build(ModelConfig(name="n", kind="masks", options={"folder": str(tmp_path / "p")}))
    wrapped = for_volumes([otsu, disk], SliceConfig())
    assert isinstance(wrapped[0], SliceWise) and wrapped[1] is disk


def test_windowing_maps_the_window_or_the_volumes_percentiles_to_black_and_white():
    data = np.linspace(-1000, 1000, 2000).reshape(2, 10, 100)
    assert volumes.intensity_range(data, (40, 400), (0.5, 99.5)) == (-160, 240)
    lo, hi = volumes.intensity_range(data, None, (0, 100))
    assert (lo, hi) == pytest.approx((-1000, 1000))
    rgb = volumes.to_rgb(np.array([[-2000.0, -160.0, 40.0, 240.0, 5000.0]]), -160, 240)
    assert rgb[0, :, 0].tolist() == [0, 0, 128, 255, 255] and rgb.shape == (1, 5, 3)


def test_a_model_told_the_reference_slices_is_marked_privileged_in_the_store_and_the_tables(tmp_path):
    import yaml

    from omniseg import config
    from omniseg.inference.runner import run
    from omniseg.store.database import Store
    from omniseg.study.report import per_image

    root = make_volumes(tmp_path / "v", n=2, shape=(6, 16, 14))
    doc = {"task": "les", "dataset": {"name": "nifti", "root": str(root)}, "split": "all",
           "slices": {"select": "reference", "margin": 0},
           "models": [{"name": "otsu", "kind": "otsu", "options": {"foreground": "bright"}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with Store(tmp_path / "s.sqlite") as st:
        run(config.load(tmp_path / "c.yaml"), st, progress=False)
        assert store_runs.privileged(st, "les") == {"otsu"} and per_image(st, "les", "all")["privileged"].all()
    doc["slices"] = {"select": "all"}
    doc["task"] = "les2"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with Store(tmp_path / "s.sqlite") as st:
        run(config.load(tmp_path / "c.yaml"), st, progress=False)
        assert store_runs.privileged(st, "les2") == set() and not per_image(st, "les2", "all")["privileged"].any()

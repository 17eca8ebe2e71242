"""manifest.json's record of what a trained model learnt from against the data this task evaluates it on."""

from __future__ import annotations

import json

import pandas as pd

from omniseg.study import manifest


def _runs(*fingerprints):
    return pd.DataFrame({"config": [json.dumps({"dataset": {"name": "kvasir-seg"}})] * len(fingerprints),
                         "summary": [json.dumps({"train_split_fingerprint": f} if f else {}) for f in fingerprints]})


def test_a_trained_model_is_told_apart_from_data_it_did_not_learn_from():
    trained = {"dataset": "kvasir-seg", "task": "polyp", "split_fingerprint": "abc"}
    home = manifest._evaluation({"trained_on": trained}, "polyp", _runs("old", "abc", None))  # the last run with one
    assert home == {"evaluation": {"trained_on": trained, "same_training_data": True, "evaluated_on": {
        "task": "polyp", "dataset": "kvasir-seg", "train_split_fingerprint": "abc"}}}
    away = manifest._evaluation({"trained_on": trained}, "polyp", _runs("abc", "xyz"))["evaluation"]
    assert away["same_training_data"] is False and "not trained on" in away["note"] and "xyz" in away["note"]
    assert manifest._evaluation({"kind": "masks"}, "polyp", _runs("abc")) == {}  # not a trained model
    assert manifest._evaluation({"trained_on": trained}, "polyp", _runs()) == {}  # no run yet

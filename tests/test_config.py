"""Configuration loading: the shipped configs load, and each mistake is one message naming file and key."""

from __future__ import annotations


import pytest

from omniseg import config
from omniseg.errors import ConfigError

from conftest import OTSU, REPO, write_config


@pytest.mark.parametrize("task", ["polyp", "vessel", "breast"])
def test_shipped_configs_load(task):
    cfg = config.find(task, None, REPO / "configs")
    assert cfg.task == task
    assert cfg.reference in [m.name for m in cfg.models]
    assert len(cfg.fingerprint()) == 64


def test_unknown_key_names_file_and_key(tmp_path):
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path, OTSU, "curation:\n  extremz: 5\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(p) in str(e.value) and "'curation.extremz': unknown key" in str(e.value)


def test_unknown_model_option_is_caught_by_the_kind(tmp_path):
    models = "  - name: otsu\n    kind: otsu\n    options: {foregrund: dark}\n"
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path, models)
    with pytest.raises(ConfigError, match=r"'models\.0\.options\.foregrund': unknown key"):
        config.load(p)


def test_wrong_type_says_what_was_expected(tmp_path):
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path, OTSU, "curation:\n  extremes: many\n")
    with pytest.raises(ConfigError, match=r"'curation\.extremes': .*integer.*'many'"):
        config.load(p)


def test_unknown_model_kind_suggests_a_name(tmp_path):
    models = "  - name: a\n    kind: otsuu\n"
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path, models)
    with pytest.raises(ConfigError, match=r"'models\.0\.kind': unknown model kind 'otsuu'.*did you mean 'otsu'"):
        config.load(p)


def test_unknown_dataset_and_missing_key(tmp_path):
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir", tmp_path, OTSU)
    with pytest.raises(ConfigError, match=r"'dataset\.name': unknown dataset 'kvasir'.*did you mean 'kvasir-seg'"):
        config.load(p)
    p.write_text("task: polyp\nmodels: []\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert "'dataset': required key is missing" in str(e.value)


def test_duplicate_model_names_and_unknown_reference(tmp_path):
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path, OTSU + OTSU)
    with pytest.raises(ConfigError, match="unique"):
        config.load(p)
    p = write_config(tmp_path / "d.yaml", "polyp", "kvasir-seg", tmp_path, OTSU, "curation:\n  reference: unet\n")
    with pytest.raises(ConfigError, match=r"'curation\.reference': unknown model 'unet'"):
        config.load(p)


def test_missing_file_bad_yaml_and_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(ConfigError, match=r"unknown task 'polpy'.*did you mean 'polyp'"):
        config.find("polpy", None, REPO / "configs")


def test_model_lookup_by_name(polyp_config):
    cfg = config.load(polyp_config)
    assert cfg.model("otsu").kind == "otsu"
    with pytest.raises(ConfigError, match=r"unknown model 'otsuu'.*did you mean 'otsu'"):
        cfg.model("otsuu")


def test_a_config_that_is_not_utf8_is_one_message(tmp_path):
    """Hardening defect 9: a UnicodeDecodeError traceback."""
    p = tmp_path / "latin1.yaml"
    p.write_bytes("task: polyp\ndescription: p\xf3lipos\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 26: .*save it as UTF-8"):
        config.load(p)


def test_a_misspelt_device_is_refused_on_load(tmp_path):
    """Hardening defect 9: `device: gpu0` reached torch as a RuntimeError traceback."""
    models = "  - name: unet\n    kind: unet\n    options: {checkpoint: x.pt, device: gpu0}\n"
    p = write_config(tmp_path / "c.yaml", "polyp", "kvasir-seg", tmp_path, models)
    with pytest.raises(ConfigError, match=r"c.yaml: key 'models.0.options.device': String should match pattern"):
        config.load(p)

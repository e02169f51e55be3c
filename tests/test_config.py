"""The configuration: one typed schema, base file plus overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import REPO

from medalign_utils.config import ConfigError, SuiteConfig, deep_merge, load_config


def test_shipped_configs_load_and_differ_only_where_they_should():
    synth = load_config(REPO / "configs" / "synthetic.yaml")
    real = load_config(REPO / "configs" / "medalign.yaml")
    assert synth.synthetic.generate_if_missing and not real.synthetic.generate_if_missing
    assert synth.data_dir == "data/synthetic" and real.data_dir == "data/medalign"
    # Shared keys come from base.yaml once.
    for key in ("tokenizers", "context_lengths", "generation_reserve", "n_resamples", "prompts_path", "allowed_hosts"):
        assert getattr(synth, key) == getattr(real, key), key
    assert synth.notebooks["03_model_generation"]["max_items"] == 10
    assert real.notebooks["03_model_generation"]["max_items"] == 64
    # Sections merge key by key: the base's generation_contexts survive the override of max_items.
    assert real.notebooks["03_model_generation"]["generation_contexts"] == [2048]
    base_keys = set(yaml.safe_load((REPO / "configs" / "base.yaml").read_text()))
    for name in ("synthetic.yaml", "medalign.yaml"):
        own = set(yaml.safe_load((REPO / "configs" / name).read_text())) - {"extends", "notebooks"}
        assert not own & base_keys, (name, own & base_keys)


def test_unknown_or_misspelt_key_is_an_error_naming_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("extends: " + str(REPO / "configs" / "base.yaml") + "\nn_resample: 10\n")
    with pytest.raises(ConfigError, match=r"unknown key 'n_resample' \(did you mean 'n_resamples'\?\)"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="synthetic: unknown key 'scal'"):
        load_config(REPO / "configs" / "synthetic.yaml", {"synthetic": {"scal": "full"}})


def test_types_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="allowed_hosts must be a list"):
        load_config(overrides={"allowed_hosts": "example.org"})
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        load_config(overrides={"seed": "zero"})
    with pytest.raises(ConfigError, match="share_safe must be true or false"):
        load_config(overrides={"share_safe": "yes"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)


def test_overrides_are_data_and_merge_last():
    cfg = load_config(overrides={"data_dir": "/x", "notebooks": {"03_model_generation": {"max_items": 2}}})
    assert cfg.data_dir == "/x" and cfg.notebooks["03_model_generation"]["max_items"] == 2
    assert cfg.notebooks["03_model_generation"]["max_new_tokens"] == 48  # from base.yaml, kept
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}


def test_notebook_parameters_take_declared_keys_and_refuse_undeclared_ones():
    cfg = SuiteConfig(seed=3, notebooks={"03_model_generation": {"max_items": 5}})
    params = cfg.notebook_parameters("03_model_generation", {"data_dir", "seed", "max_items"})
    assert params == {"data_dir": "data/synthetic", "seed": 3, "max_items": 5}
    with pytest.raises(ConfigError, match="sets max_items, which 04_x does not declare"):
        SuiteConfig(notebooks={"04_x": {"max_items": 5}}).notebook_parameters("04_x", {"data_dir"})


def test_a_config_that_extends_itself_is_refused(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(loop)


def test_a_relative_config_path_is_read_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "synthetic.yaml").write_text("data_dir: data/mine\nseed: 7\n")  # shadows the suite's
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/synthetic.yaml")
    assert cfg.seed == 7 and cfg.source == str(tmp_path / "configs" / "synthetic.yaml")
    # A path that is only the suite's own (run from another folder) still finds it.
    assert Path(load_config("configs/medalign.yaml").source) == REPO / "configs" / "medalign.yaml"
    with pytest.raises(ConfigError, match=f"config {tmp_path / 'nowhere.yaml'} does not exist"):
        load_config("nowhere.yaml")  # named where the user looked: the current folder

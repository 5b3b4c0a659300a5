"""Config loading: defaults, dotted overrides, validation errors that name key and line."""

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from srt_jax.config import (
    RunConfig,
    config_hash,
    dump_config,
    from_dict,
    load_config,
    replace,
    yaml_key_lines,
)
from srt_jax.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["model.d_model=128", "train.tokens=1e6", "train.epochs=null"])
    assert cfg.model.d_model == 128
    assert cfg.train.tokens == 1_000_000 and cfg.train.epochs is None
    assert cfg.eval.cutoffs == (5, 10, 20)
    assert load_config() == RunConfig()


def test_yaml_round_trip_and_stable_hash(tmp_path):
    cfg = load_config(None, ["data.max_len=200", "eval.cutoffs=[1, 10]"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(RunConfig())


def test_unknown_key_names_key_line_and_allowed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  d_model: 64\n  d_modle: 32\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}:3" in message
    assert "model.d_modle" in message and "d_model" in message


def test_bad_values_are_errors(tmp_path):
    cases = {
        "model.n_heads=3": "divisor",
        "train.loss=hinge": "full_softmax",
        "data.max_len=ten": "integer",
        "data.max_len=2.5": "integer",
        "model.tie_embeddings=yes please": "true or false",
        "train.tokens=100": "exactly one",
        "eval.item_chunk=0": "eval.item_chunk",
        "eval.cutoffs=[5, 20]": "includes 10",
        "nosuchsection.x=1": "unknown config key 'nosuchsection'",
    }
    for override, expected in cases.items():
        with pytest.raises(ConfigError, match=expected):
            load_config(None, [override])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["model.d_model"])


def test_bad_value_in_file_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  dataset: movielens-100k\ntrain:\n  batch_size: -4\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: train.batch_size"):
        load_config(path)


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_replace_revalidates():
    cfg = replace(RunConfig(), ["model.n_layers=4"])
    assert cfg.model.n_layers == 4
    with pytest.raises(ConfigError):
        replace(cfg, ["model.n_layers=-1"])


def test_yaml_key_lines():
    lines = yaml_key_lines("a:\n  b: 1\n  c:\n    d: 2\ne: 3\n")
    assert lines == {"a": 1, "a.b": 2, "a.c": 3, "a.c.d": 4, "e": 5}


SHIPPED_CONFIGS = sorted(
    (Path(__file__).resolve().parents[1] / "configs").glob("ml100k_sasrec*.yaml")
)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_describe_the_ml100k_sasrec_shape(path):
    config = load_config(path)
    assert config.data.dataset == "movielens-100k" and config.data.max_len == 50
    shape = (config.model.d_model, config.model.n_layers, config.model.n_heads)
    assert shape == (64, 2, 2) and config.train.loss == "full_softmax"


@dataclasses.dataclass(frozen=True)
class _Either:
    value: int | Literal["auto"] = "auto"


def test_a_union_tries_every_member_and_names_them_all_when_none_fits():
    assert from_dict(_Either, {"value": 3}).value == 3
    assert from_dict(_Either, {"value": "auto"}).value == "auto"
    with pytest.raises(
        ConfigError, match=r"value = 'fast' is invalid: expected an integer or one of 'auto'"
    ):
        from_dict(_Either, {"value": "fast"})

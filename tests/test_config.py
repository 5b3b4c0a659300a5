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


PINNED_IDS = {  # run ids before train.optimizer existed: adding it changes none of them
    None: "d257c7f2b3c3",
    "ml100k_sasrec_fast.yaml": "9d2a9a38b79c",
    "ml100k_sasrec.yaml": "4aaae726f20a",
    "ml100k_mamba4rec.yaml": "7042e078f84b",
}


@pytest.mark.parametrize("name", PINNED_IDS, ids=str)
def test_run_ids_of_configs_before_the_optimizer_key_are_unchanged(name):
    path = None if name is None else Path(__file__).resolve().parents[1] / "configs" / name
    config = load_config(path)
    assert config_hash(config) == PINNED_IDS[name]
    assert config_hash(load_config(path, ["train.optimizer=adamw"])) == PINNED_IDS[name]
    assert config_hash(load_config(path, ["train.optimizer=usgm"])) != PINNED_IDS[name]
    assert "optimizer: adamw" in dump_config(config)  # config.yaml still names it


def test_optimizer_sections_belong_to_their_optimizer(tmp_path):
    cfg = load_config(None, ["train.optimizer=prodigy", "train.prodigy.d_coef=2"])
    assert cfg.train.prodigy.d_coef == 2.0 and cfg.train.prodigy.scale == 1.0
    assert cfg.train.usgm is None and cfg.train.dadapt_adamw is None
    assert load_config(None, ["train.optimizer=usgm"]).train.usgm.epsilon == 0.01
    assert "prodigy" not in dump_config(load_config(None))
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    path.write_text("train:\n  optimizer: adamw\n  usgm:\n    epsilon: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: train.usgm is a usgm key, but "):
        load_config(path)


def test_optimizer_errors_name_the_key():
    cases = {
        "train.optimizer=sgd": r"train.optimizer = 'sgd' is invalid: expected one of 'adamw'",
        "train.prodigy.scale=0": r"train.prodigy.scale = 0.0 is invalid",
        "train.dadapt_adamw.d0=-1": r"train.dadapt_adamw.d0 = -1.0 is invalid",
        "train.usgm.epsilon=-0.1": r"train.usgm.epsilon = -0.1 is invalid",
        "train.usgm.max_backtracks=0": r"train.usgm.max_backtracks = 0 is invalid",
        "train.usgm.weight_decay=-1": r"train.usgm.weight_decay = -1.0 is invalid",
        "train.usgm.lr=1": r"unknown config key 'train.usgm.lr'",
    }
    for override, expected in cases.items():
        optimizer = override.split(".")[1].split("=")[0]
        chosen = [] if optimizer == "optimizer" else [f"train.optimizer={optimizer}"]
        with pytest.raises(ConfigError, match=expected):
            load_config(None, [*chosen, override])
    with pytest.raises(ConfigError, match=r"train.b1 = 0.0 is invalid: expected .* \(0, 1\)"):
        load_config(None, ["train.optimizer=schedule_free_adamw", "train.b1=0"])


def test_a_changed_default_hashes_as_the_old_one():
    default = load_config(None)
    assert default.eval.batch_users is None  # chosen by platform
    assert config_hash(default) == config_hash(load_config(None, ["eval.batch_users=256"]))
    assert config_hash(default) != config_hash(load_config(None, ["eval.batch_users=64"]))
    assert "batch_users: null" in dump_config(default)


def test_a_new_backbone_key_at_its_default_leaves_the_run_id():
    default = load_config(None)
    assert default.model.attention == "auto" and default.model.dtype == "auto"
    assert config_hash(default) == config_hash(load_config(None, ["model.attention=auto"]))
    assert config_hash(default) == config_hash(load_config(None, ["model.dtype=float32"]))
    assert config_hash(default) != config_hash(load_config(None, ["model.attention=fused"]))
    with pytest.raises(ConfigError, match=r"model\.attention is a transformer key"):
        load_config(None, ["model.backbone=mamba", "model.attention=fused"])
    assert load_config(None, ["model.backbone=mamba"]).model.attention is None

"""Sweep specs: grid/zip/shape expansion, IsoFLOP sizing, skipped runs, errors, ladders."""

import bz2
import math
import sqlite3
from pathlib import Path

import pytest
import yaml

from srt_jax.config import ModelConfig, config_hash
from srt_jax.errors import ConfigError
from srt_jax.models.counting import flops_per_token
from srt_jax.sweep.ladders import LADDERS
from srt_jax.sweep.spec import data_facts, expand, load_spec

SRT_DB = Path(__file__).resolve().parent / "data" / "srt_mlruns.sqlite.bz2"  # tests/data/README.md


def tiny_data(cache_dir: Path) -> dict:
    return {
        "dataset": "synthetic",
        "cache_dir": str(cache_dir),
        "synthetic": {"users": 60, "items": 40, "mean_length": 15},
        "max_len": 10,
    }


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_grid_is_the_full_product_and_zip_groups_vary_together(tmp_path):
    spec = write_spec(
        tmp_path / "s.yaml",
        {
            "name": "g",
            "config": {"data": tiny_data(tmp_path), "train": {"tokens": 1000, "epochs": None}},
            "grid": {"train.seed": [0, 1, 2], "train.learning_rate": [1e-3, 3e-3]},
            "zip": [{"model.d_model": [8, 16], "model.n_heads": [1, 2]}],
        },
    )
    runs = expand(load_spec(spec)).runs
    assert len(runs) == 3 * 2 * 2
    combos = {
        (r.config.train.seed, r.config.train.learning_rate, r.config.model.d_model) for r in runs
    }
    assert len(combos) == 12
    assert {(r.config.model.d_model, r.config.model.n_heads) for r in runs} == {(8, 1), (16, 2)}
    assert all(r.tokens == 1000 and r.budget is None for r in runs)
    assert all(r.run_id == config_hash(r.config) for r in runs)


def test_grid_runs_sized_by_epochs_use_the_split_s_tokens_per_epoch(tmp_path):
    data = tiny_data(tmp_path)
    spec = write_spec(
        tmp_path / "s.yaml",
        {"name": "e", "config": {"data": data, "train": {"epochs": 2.5}}},
    )
    (run,) = expand(load_spec(spec)).runs
    facts = data_facts(run.config.data)
    assert run.tokens == round(2.5 * facts.tokens_per_epoch)
    per_token = flops_per_token(run.config.model, facts.n_items, 10, run.config.train).total
    assert run.compute == pytest.approx(run.tokens * per_token)


def test_isoflop_sets_d_from_c_and_lists_infeasible_runs_with_the_reason(tmp_path):
    spec = write_spec(
        tmp_path / "s.yaml",
        {
            "name": "iso",
            "config": {"data": tiny_data(tmp_path), "train": {"batch_size": 8}},
            "shapes": "tiny",
            "isoflop": {
                "budgets": ["1e7", 1e8, 1e9],
                "min_tokens": 500,
                "max_epochs": 20,
                "evals_per_run": 4,
            },
        },
    )
    expansion = expand(load_spec(spec))
    facts = data_facts(expansion.runs[0].config.data)
    cap = 20 * facts.tokens_per_epoch
    assert len(expansion.runs) + len(expansion.skipped) == 4 * 3
    for run in expansion.runs:
        per_token = flops_per_token(run.config.model, facts.n_items, 10, run.config.train).total
        assert run.tokens == round(run.budget / per_token)
        assert run.config.train.tokens == run.tokens and run.config.train.epochs is None
        assert run.config.train.eval_every_tokens == math.ceil(run.tokens / 4)
        assert run.compute == pytest.approx(run.budget, rel=1e-3)
        assert 500 <= run.tokens <= cap
    reasons = [s.reason for s in expansion.skipped]
    assert all("below min_tokens = 500" in r or "above max_epochs 20" in r for r in reasons)
    assert any("below" in r for r in reasons) and any("above" in r for r in reasons)
    for skip in expansion.skipped:
        assert skip.tokens < 500 or skip.tokens > cap


def test_default_min_tokens_is_one_batch_and_repeats_merge(tmp_path):
    spec = write_spec(
        tmp_path / "s.yaml",
        {
            "name": "m",
            "config": {"data": tiny_data(tmp_path), "train": {"batch_size": 4}},
            "shapes": [{"d_model": 8, "n_layers": 1, "n_heads": 1}, "tiny"],
            "isoflop": {"budgets": [1.0e6]},
        },
    )
    expansion = expand(load_spec(spec))
    assert expansion.merged == 1  # the inline shape is tiny's first
    assert expansion.runs and expansion.skipped
    assert all(run.tokens >= 40 for run in expansion.runs)
    for skip in expansion.skipped:
        assert skip.tokens < 40 and skip.reason.endswith("below min_tokens = 40")  # 4 x 10


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        expand(load_spec(path))
    return str(err.value)


def test_spec_errors_name_the_key_and_the_line(tmp_path):
    cache = tmp_path / "c"
    data = f"config:\n  data: {{dataset: synthetic, cache_dir: {cache}, max_len: 10}}\n"
    message = error_of(tmp_path, f"name: x\n{data}grdi:\n  train.seed: [0]\n")
    assert "bad.yaml:4" in message and "grdi" in message and "unknown spec key" in message
    message = error_of(tmp_path, f"name: x\n{data}grid:\n  train.seed: [0]\n  model.d_modl: [8]\n")
    assert "bad.yaml:6" in message and "model.d_modl" in message
    message = error_of(tmp_path, f"name: x\n{data}grid:\n  model.d_model: [8, 0]\n")
    assert "bad.yaml:5" in message and "model.d_model = 0" in message
    message = error_of(tmp_path, f"name: x\n{data}grid:\n  model.n_heads: [3]\n")
    assert "bad.yaml:5" in message and "model.n_heads" in message and "divisor" in message
    message = error_of(tmp_path, "name: x\nconfig:\n  model:\n    d_model: -1\n")
    assert "bad.yaml:4" in message and "model.d_model" in message
    message = error_of(tmp_path, f"name: x\n{data}shapes: huge\nisoflop:\n  budgets: [1e9]\n")
    assert "bad.yaml:4" in message and "unknown shape ladder 'huge'" in message
    message = error_of(tmp_path, f"name: x\n{data}shapes: tiny\nisoflop:\n  budget: [1e9]\n")
    assert "bad.yaml:6" in message and "isoflop.budget" in message
    message = error_of(tmp_path, f"name: x\n{data}shapes: tiny\nisoflop:\n  budgets: [-1]\n")
    assert "bad.yaml:6" in message and "positive" in message
    message = error_of(
        tmp_path, f"name: x\n{data}zip:\n  - {{train.seed: [0, 1], model.d_model: [8]}}\n"
    )
    assert "bad.yaml:4" in message and "differ in length" in message
    message = error_of(
        tmp_path,
        f"name: x\n{data}shapes: tiny\ngrid:\n  train.tokens: [5]\nisoflop:\n  budgets: [1e9]\n",
    )
    assert "bad.yaml:6" in message and "train.tokens" in message
    message = error_of(tmp_path, f"name: x\n{data}isoflop:\n  budgets: [1e9]\n")
    assert "needs a 'shapes' axis" in message
    message = error_of(tmp_path, f"name: x\n{data}shapes:\nisoflop:\n  budgets: [1e9]\n")
    assert "needs a 'shapes' axis" in message
    message = error_of(tmp_path, f"name: x\n{data}grid:\n  model.n_layers: [1, 2]\nshapes: tiny\n")
    assert "bad.yaml:6: shapes: model.n_layers is also set by grid.model.n_layers" in message
    assert "bad.yaml:5)" in message
    message = error_of(tmp_path, "name: 'a b'\n")
    assert "bad.yaml:1" in message and "name" in message


def test_base_config_is_relative_to_the_spec_and_its_errors_name_its_line(tmp_path):
    (tmp_path / "configs").mkdir()
    base = tmp_path / "configs" / "base.yaml"
    base.write_text(
        f"data:\n  dataset: synthetic\n  cache_dir: {tmp_path}\n  max_len: 10\n"
        "model:\n  d_model: 8\n  n_heads: 1\n"
    )
    (tmp_path / "sweeps").mkdir()
    spec = tmp_path / "sweeps" / "s.yaml"
    spec.write_text(
        "name: b\nbase: ../configs/base.yaml\nconfig:\n  model: {n_layers: 1}\n"
        "grid:\n  train.seed: [0, 1]\n"
    )
    runs = expand(load_spec(spec)).runs
    assert [(r.config.model.d_model, r.config.model.n_layers) for r in runs] == [(8, 1)] * 2
    base.write_text("model:\n  d_model: 8\n  dropout: 2.0\n")
    with pytest.raises(ConfigError, match=r"base.yaml:3: model.dropout"):
        load_spec(spec)


def test_ladders_have_valid_shapes_and_srt15_is_every_shape_of_the_srt_database(tmp_path):
    assert len(LADDERS["srt15"]) == 15
    for name, shapes in LADDERS.items():
        for shape in shapes:
            ModelConfig(**shape)  # a valid model of its backbone (raises ConfigError if not)
            if shape.get("backbone", "transformer") == "transformer":
                assert shape["d_model"] % shape["n_heads"] == 0, (name, shape)
    db_path = tmp_path / "srt.sqlite"
    db_path.write_bytes(bz2.decompress(SRT_DB.read_bytes()))
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT p.run_uuid, p.key, p.value FROM params p WHERE p.key IN "
            "('n_layers', 'hidden_size', 'n_heads', 'inner_size')"
        ).fetchall()
    by_run: dict[str, dict[str, int]] = {}
    for run, key, value in rows:
        by_run.setdefault(run, {})[key] = int(value)
    shapes = {
        (p["n_layers"], p["hidden_size"], p["n_heads"], p["inner_size"]) for p in by_run.values()
    }
    ladder = {(s["n_layers"], s["d_model"], s["n_heads"], s["d_ff"]) for s in LADDERS["srt15"]}
    assert ladder == shapes

"""`srt-jax sweep plan`: counts from an abstract model, measured and cached step times, the
table with skipped combinations and totals, and errors that name the spec line."""

import json

import pytest
from flax import nnx
from test_sweep_spec import tiny_data, write_spec

from srt_jax.cli import main
from srt_jax.models.counting import count_params
from srt_jax.models.factory import build_model
from srt_jax.sweep import plan as plan_module
from srt_jax.sweep.plan import CALIBRATION_FILE, format_plan, make_plan, tokens_per_step
from srt_jax.sweep.spec import load_spec


def iso_spec(tmp_path, shapes) -> object:
    return write_spec(
        tmp_path / "iso.yaml",
        {
            "name": "iso",
            "description": "a tiny IsoFLOP sweep",
            "config": {"data": tiny_data(tmp_path / "cache"), "train": {"batch_size": 8}},
            "shapes": shapes,
            "isoflop": {"budgets": [1e7, 1e8], "min_tokens": 500, "max_epochs": 20},
            "grid": {"train.seed": [0, 1]},
        },
    )


def test_plan_measures_each_step_shape_once_and_caches_it(tmp_path, monkeypatch):
    spec, root = iso_spec(tmp_path, [{"d_model": 8, "n_layers": 1, "n_heads": 1}]), tmp_path / "r"
    plan = make_plan(load_spec(spec), root=root, calibration_steps=2)
    assert len(plan.rows) == 4 and all(row.seconds > 0 for row in plan.rows)
    cache = json.loads((root / CALIBRATION_FILE).read_text())
    assert len(cache) == 1  # one calibration per step shape, not per seed or budget
    (entry,) = cache.values()
    assert entry["seconds_per_step"] > 0 and entry["steps"] == 2
    row = plan.rows[0]
    key = plan_module.step_shape_key(row.run.config, row.run.facts.n_items)
    steps = -(-row.run.tokens // tokens_per_step(row.run))
    assert row.seconds == pytest.approx(steps * cache[key]["seconds_per_step"])

    def no_measuring(*args, **kwargs):
        raise AssertionError("calibration should come from the cache")

    monkeypatch.setattr(plan_module, "time_steps", no_measuring)
    again = make_plan(load_spec(spec), root=root)
    assert [r.seconds for r in again.rows] == [r.seconds for r in plan.rows]
    assert "estimated time: " in format_plan(again) and again.total_seconds > 0


def test_plan_counts_parameters_like_a_real_model_and_prints_the_table(tmp_path, capsys):
    spec = iso_spec(tmp_path, "tiny")
    plan = make_plan(load_spec(spec), calibrate=False)
    assert plan.rows and plan.skipped
    for row in plan.rows:
        real = build_model(row.run.config.model, row.run.facts.n_items, 10, nnx.Rngs(0))
        assert row.params == count_params(real)
        assert row.six_nd == 6 * row.params.total * row.run.tokens
        assert row.seconds is None
    assert plan.total_compute == pytest.approx(sum(r.run.compute for r in plan.rows))
    assert main(["sweep", "plan", str(spec), "--no-calibrate"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"sweep iso ({spec}): {len(plan.rows)} runs"
    assert "a tiny IsoFLOP sweep" in text and "train.seed" in text.splitlines()[3]
    assert f"skipped ({len(plan.skipped)} combinations that cannot run):" in text
    assert "below min_tokens = 500" in text and "total compute:" in text
    assert "not measured (--no-calibrate)" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("min_tokens", "min_tokes"))
    assert main(["sweep", "plan", str(bad), "--no-calibrate"]) == 2
    err = capsys.readouterr().err
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if "min_tokes" in t)
    assert f"bad.yaml:{line}: isoflop.min_tokes: unknown key" in err
    assert main(["sweep", "plan", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep spec not found" in capsys.readouterr().err


def test_a_sweep_over_samplers_with_the_epoch_mix_is_costed(tmp_path):
    """The epoch-mixed sampler places its switch by the token budget, so costing a run
    needs the run's tokens (this raised ConfigError before)."""
    spec = write_spec(
        tmp_path / "samplers.yaml",
        {
            "name": "samplers",
            "config": {
                "data": {**tiny_data(tmp_path / "cache"), "mixed_by": "epoch"},
                "train": {"batch_size": 8, "tokens": 1000, "epochs": None},
            },
            "grid": {"data.sampler": ["recent", "mixed"]},
        },
    )
    plan = make_plan(load_spec(spec), calibrate=False)
    assert [row.run.config.data.sampler for row in plan.rows] == ["recent", "mixed"]
    for row in plan.rows:
        assert 0 < tokens_per_step(row.run) <= 8 * 10

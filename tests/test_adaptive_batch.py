"""Adaptive batch size (train.adaptive_batch): the halves' gradient is the batch's, A
accumulated micro-batches make the update of their concatenation, the noise-scale
estimators and the controller by hand, the loop's records and budget, bad configs."""

import json

import jax
import numpy as np
import pytest
from flax import nnx
from test_loop import tiny_config
from test_step import N_ITEMS, L, batches

from srt_jax.config import AdaptiveBatchConfig, ModelConfig, TrainConfig, from_dict
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model
from srt_jax.train.adaptive_batch import (
    BatchController,
    accumulate,
    empty_accumulator,
    half_gradients,
)
from srt_jax.train.loop import train
from srt_jax.train.mesh import data_mesh
from srt_jax.train.step import TrainStep

ADAPTIVE = AdaptiveBatchConfig(max_accumulation=4)


def make_step(adaptive: AdaptiveBatchConfig | None) -> TrainStep:
    model = build_model(
        ModelConfig(d_model=16, n_layers=1, n_heads=2, dropout=0.0), N_ITEMS, L, nnx.Rngs(0)
    )
    cfg = TrainConfig(learning_rate=1e-2, warmup_fraction=0.0, adaptive_batch=adaptive)
    return TrainStep(model, cfg, total_tokens=10**6, mesh=data_mesh(1))


def test_accumulated_micro_batches_update_with_the_mean_gradient_of_all_their_targets():
    rows = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    params = {"w": np.zeros(3, np.float32)}
    state = {"params": params, "opt_state": (), "accum": empty_accumulator(params)}

    def update(grads, opt_state):  # "params" become the gradient the update received
        return grads, opt_state

    for part in (rows[:4], rows[4:]):  # micro-batches of 4 and 6 targets
        (_, figures), grads = jax.value_and_grad(quadratic_loss, has_aux=True)(
            params, {"x": part}, None, None
        )
        state = accumulate(state, grads, figures["count"], np.int32(2), update)
    np.testing.assert_allclose(state["params"]["w"], -rows.mean(0), rtol=1e-6)
    assert int(state["accum"]["micro"]) == 0 and float(state["accum"]["tokens"]) == 0


def test_the_step_updates_only_when_its_accumulation_is_complete():
    first, second = batches(2)
    step = make_step(ADAPTIVE)
    initial = [np.asarray(leaf) for leaf in jax.tree.leaves(step.init_state()["params"])]
    state, _ = step(step.init_state(), step.put_batch(first), 0, 0, accumulation=2)
    for before, after in zip(initial, jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(state["accum"]["micro"]) == 1
    state, _ = step(state, step.put_batch(second), 1, 0, accumulation=2)
    moved = [
        not np.array_equal(before, after)
        for before, after in zip(initial, jax.tree.leaves(state["params"]), strict=True)
    ]
    assert all(moved) and int(state["accum"]["micro"]) == 0


def quadratic_loss(params, batch, dropout_key, loss_key):
    """Mean over rows of |w - x_row|² / 2; the gradient of a row is w - x_row."""
    del dropout_key, loss_key
    per_row = 0.5 * ((params["w"] - batch["x"]) ** 2).sum(axis=1)
    count = jax.numpy.asarray(per_row.shape[0], jax.numpy.float32)
    return per_row.mean(), {"loss_sum": per_row.sum(), "count": count}


def test_halves_give_the_batch_gradient_and_the_papers_noise_estimators():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    params = {"w": np.zeros(3, np.float32)}
    key = jax.random.key(0)
    loss, figures, grads, noise = half_gradients(quadratic_loss, params, {"x": x}, key, key)
    np.testing.assert_allclose(grads["w"], -x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(loss, 0.5 * (x**2).sum(1).mean(), rtol=1e-6)
    assert float(figures["count"]) == 8
    small = np.mean([np.sum(x[:4].mean(0) ** 2), np.sum(x[4:].mean(0) ** 2)])
    big = np.sum(x.mean(0) ** 2)
    np.testing.assert_allclose(noise["noise_g2"], 2 * big - small, rtol=1e-5)
    np.testing.assert_allclose(noise["noise_trace"], (small - big) * 8, rtol=1e-5)
    same = np.concatenate([x[:4], x[:4]])  # identical halves: no noise between them
    *_, noise = half_gradients(quadratic_loss, params, {"x": same}, key, key)
    assert abs(float(noise["noise_trace"])) < 1e-5


def test_controller_by_hand():
    cfg = AdaptiveBatchConfig(max_accumulation=4, ema_decay=0.5, scale=1.0)
    c = BatchController()
    assert c.noise_scale is None
    c.observe(cfg, g2=2.0, trace=100.0)
    c.observe(cfg, g2=4.0, trace=200.0)  # averages 3 and 150
    assert c.noise_scale == 50.0
    c.decide(cfg, tokens_per_micro_batch=20.0)
    assert c.accumulation == 2  # round(50 / 20)
    c.observe(cfg, g2=3.0, trace=0.0)  # the noise falls: A never shrinks
    c.decide(cfg, 20.0)
    assert c.accumulation == 2
    c.observe(cfg, g2=0.001, trace=1e4)
    c.decide(cfg, 20.0)
    assert c.accumulation == 4  # capped
    assert [c.dispatch(last=False) for _ in range(5)] == [4, 4, 4, 4, 4]
    assert (c.updates, c.micro) == (1, 1)
    assert c.dispatch(last=True) == 2 and (c.updates, c.micro) == (2, 0)
    assert BatchController.from_json(json.loads(json.dumps(c.to_json()))) == c


def test_adaptive_run_grows_its_batch_logs_it_and_keeps_the_budget(tmp_path):
    config = tiny_config(tmp_path / "cache", "train.adaptive_batch.max_accumulation=8")
    summary = train(config, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train_lines = [r for r in lines if r["kind"] == "train"]
    assert summary["train_tokens"] == summary["token_budget"] == 2500
    assert 1 <= summary["updates"] < summary["steps"]
    assert train_lines[-1]["updates"] == summary["updates"]
    accumulations = [r["accumulation"] for r in train_lines[:-1]]
    assert accumulations == sorted(accumulations) and accumulations[-1] > 1
    assert all(r["noise_scale"] > 0 for r in train_lines)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"batch_size": 15, "adaptive_batch": {}}, "an even number"),
        ({"optimizer": "usgm", "adaptive_batch": {}}, "train.adaptive_batch"),
        ({"adaptive_batch": {"max_accumulation": 0}}, "max_accumulation"),
        ({"adaptive_batch": {"ema_decay": 1.0}}, "ema_decay"),
    ],
)
def test_bad_adaptive_batch_config_is_an_error(section, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, section, where="train")

"""The jitted train step: learning, donation, determinism, data-parallel equivalence."""

import types
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from forced_devices import run_on_cpu_devices

from srt_jax.config import ModelConfig, TrainConfig, from_dict
from srt_jax.data.sampler import Batch
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model
from srt_jax.train.mesh import check_divisible, data_mesh
from srt_jax.train.step import TrainStep

N_ITEMS, L, B = 30, 6, 8
REPO = Path(__file__).resolve().parents[1]


def batches(n, seed=0):
    """Batches of a learnable sequence rule: the next item is (item + 1) mod N_ITEMS."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = rng.integers(1, N_ITEMS + 1, size=(B, 1))
        window = (start + np.arange(L + 1) - 1) % N_ITEMS + 1
        inputs = window[:, :-1].copy()
        inputs[0, :2] = 0  # a left-padded row: no target where the input is padding
        mask = inputs != 0
        targets = np.where(mask, window[:, 1:], 0)
        out.append(
            Batch(
                inputs.astype(np.int32),
                targets.astype(np.int32),
                mask,
                np.zeros((B, L), np.int32),
                np.arange(B),
            )
        )
    return out


def make_step(train_cfg=None, data_parallel=1, total_tokens=2_000):
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, dropout=0.1)
    model = build_model(cfg, N_ITEMS, L, nnx.Rngs(0))
    train_cfg = train_cfg or TrainConfig(learning_rate=1e-2, warmup_fraction=0.0)
    return TrainStep(model, train_cfg, total_tokens=total_tokens, mesh=data_mesh(data_parallel))


def run(step, data, state=None):
    state = step.init_state() if state is None else state
    losses, tokens = [], 0
    for k, batch in enumerate(data):
        state, metrics = step(state, step.put_batch(batch), k, tokens)
        tokens += batch.n_targets
        losses.append(float(metrics["loss_sum"] / metrics["count"]))
    return state, losses


def test_step_learns_a_sequence_rule():
    step = make_step(TrainConfig(learning_rate=3e-2, warmup_fraction=0.0), total_tokens=3_000)
    _, losses = run(step, batches(60))
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])


@pytest.mark.parametrize(
    ("optimizer", "section", "keys"),
    [  # d0 near this toy problem's scale: from optax's 1e-6, d takes longer than 40 steps
        ("prodigy", {"d0": 1e-3}, {"d"}),
        ("dadapt_adamw", {"d0": 1e-3}, {"d"}),
        ("usgm", {}, {"lipschitz", "evals"}),
    ],
)
def test_adaptive_optimisers_learn_and_report_their_step_size(optimizer, section, keys):
    cfg = from_dict(
        TrainConfig, {"optimizer": optimizer, "warmup_fraction": 0.1, optimizer: section}
    )
    step = make_step(cfg, total_tokens=3_000)
    state, losses = run(step, batches(40))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    _, metrics = step(state, step.put_batch(batches(1)[0]), 40, 2_000)
    assert (
        keys
        <= set(metrics)
        == set(step.optimizer.metric_keys)
        | {"loss_sum", "count", "grad_norm", "lr", "loss_finite", "grad_finite"}
    )
    assert all(np.isfinite(float(metrics[k])) and float(metrics[k]) > 0 for k in keys)
    if optimizer == "usgm":  # its lr is its step size 1/L
        assert float(metrics["lr"]) == pytest.approx(1 / float(metrics["lipschitz"]))


def test_metrics_are_exact_sums_and_report_the_learning_rate():
    step = make_step(TrainConfig(learning_rate=1e-2, warmup_fraction=0.5), total_tokens=1_000)
    batch = batches(1)[0]
    _, metrics = step(step.init_state(), step.put_batch(batch), 0, 250)
    assert float(metrics["count"]) == batch.n_targets == B * L - 2
    assert float(metrics["lr"]) == pytest.approx(0.5e-2)  # half way through the warmup
    assert bool(metrics["loss_finite"]) and bool(metrics["grad_finite"])
    assert float(metrics["grad_norm"]) > 0


def test_state_buffers_are_donated():
    step = make_step()
    state = step.init_state()
    leaves = [leaf for leaf in jax.tree.leaves(state) if leaf.ndim]  # params and moments
    new_state, _ = step(state, step.put_batch(batches(1)[0]), 0, 0)
    jax.block_until_ready(new_state)
    assert len(leaves) > 10 and all(leaf.is_deleted() for leaf in leaves)


def test_same_seed_same_curve_and_keys_depend_on_the_step():
    data = batches(5)
    _, first = run(make_step(), data)
    _, second = run(make_step(), data)
    assert first == second
    step = make_step()
    batch = step.put_batch(data[0])
    _, a = step(step.init_state(), batch, 0, 0)
    _, b = step(step.init_state(), batch, 1, 0)  # other dropout keys
    assert float(a["loss_sum"]) != float(b["loss_sum"])


def test_compiled_step_equals_jitted_step():
    data = batches(3)
    _, jitted = run(make_step(), data)
    step = make_step()
    assert step.compile(B, L) > 0
    _, compiled = run(step, data)
    assert jitted == compiled


def _lowered_text(step):
    shapes = jax.ShapeDtypeStruct((B, L), np.int32)
    batch = {"inputs": shapes, "targets": shapes, "mask": jax.ShapeDtypeStruct((B, L), bool)}
    scalar_i, scalar_f = jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((), np.float32)
    return step._jitted.lower(
        step.abstract_state(), batch, step._constants, scalar_i, scalar_f, scalar_i
    ).as_text()


RATES = {  # two peak rates (or the knobs that stand for them) per optimiser
    "adamw": ({"learning_rate": 1e-2}, {"learning_rate": 3e-3}),
    "schedule_free_adamw": ({"learning_rate": 1e-2}, {"learning_rate": 3e-3}),
    "prodigy": ({"prodigy": {"scale": 1.0, "d0": 1e-6}}, {"prodigy": {"scale": 0.5, "d0": 1e-5}}),
    "dadapt_adamw": ({"dadapt_adamw": {"scale": 1.0}}, {"dadapt_adamw": {"scale": 0.3}}),
    "usgm": (
        {"usgm": {"epsilon": 0.01, "lipschitz0": 1.0}},
        {"usgm": {"epsilon": 0.1, "lipschitz0": 4.0}},
    ),
}


@pytest.mark.parametrize("optimizer", RATES)
def test_seed_learning_rate_and_budget_are_arguments_not_compiled_constants(optimizer):
    """Same-shaped runs of a sweep (other budgets, seeds, peak rates, optimiser knobs) share
    one program, whichever the optimiser."""
    first, second = RATES[optimizer]
    base_cfg = from_dict(TrainConfig, {"optimizer": optimizer, "seed": 0, **first})
    other_cfg = from_dict(TrainConfig, {"optimizer": optimizer, "seed": 7, **second})
    base = make_step(base_cfg, total_tokens=2_000)
    other = make_step(other_cfg, total_tokens=90_000)
    assert _lowered_text(base) == _lowered_text(other)
    batch = base.put_batch(batches(1)[0])
    _, a = base(base.init_state(), batch, 3, 1_000)
    # the other run's step through the base run's compiled program: its own results
    progress = np.float32(1_000 / other.total_tokens)
    args = (other._constants, np.int32(3), progress, np.int32(1))
    _, b = base._jitted(other.init_state(), batch, *args)
    assert float(a["lr"]) != float(b["lr"]) and float(a["loss_sum"]) != float(b["loss_sum"])


def test_batch_must_split_over_devices():
    check_divisible(7, data_mesh(1), "train.batch_size")
    two_devices = types.SimpleNamespace(shape={"data": 2})
    with pytest.raises(ConfigError, match=r"train\.batch_size = 7 .* multiple of the 2"):
        check_divisible(7, two_devices, "train.batch_size")


FOUR_DEVICE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
from srt_jax.config import load_config
from srt_jax.train.loop import train
from tests.test_loop import TINY
assert jax.device_count() == 4, jax.devices()
out = {}
for n, shards in ((1, 1), (4, 1), (2, 2)):
    config = load_config(None, [*TINY, f"data.cache_dir={sys.argv[2]}/cache",
                                "train.log_every=1", "train.tokens=6000",
                                "train.learning_rate=0.005", f"train.data_parallel={n}",
                                f"train.item_shards={shards}"])
    summary = train(config, f"{sys.argv[2]}/run{n}", progress=False)
    lines = open(f"{sys.argv[2]}/run{n}/metrics.jsonl").read().splitlines()
    out[f"{n}x{shards}"] = {"losses": [json.loads(l)["loss"] for l in lines if '"train"' in l],
                            "devices": summary["devices"], "eval": summary["eval"]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_four_cpu_devices_match_one_device(tmp_path):
    """The whole loop data-parallel over 4 forced CPU devices, and over 2 with the item
    table split over 2 more (``train.item_shards``), gives the 1-device loss curve within
    rtol 1e-4 (only the order of the sums differs), and the same evaluation."""
    runs = run_on_cpu_devices(FOUR_DEVICE_SCRIPT, str(tmp_path))
    one = runs.pop("1x1")
    assert one["devices"] == 1
    assert len(one["losses"]) > 50 and one["losses"][-1] < 0.9 * one["losses"][0]
    for four in runs.values():
        assert four["devices"] == 4
        np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-4)
        assert four["eval"]["loss"] == pytest.approx(one["eval"]["loss"], rel=1e-4)
        assert four["eval"]["hr@20"] == pytest.approx(one["eval"]["hr@20"], abs=0.02)

"""μP (model.mup_base_width): the coordinate check (output scales stay flat across widths
after training, and grow without it), equality with the standard model at the base width,
and its config rules."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from test_step import N_ITEMS, L, batches

from srt_jax.config import ModelConfig, TrainConfig, load_config
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model
from srt_jax.train.losses import scores
from srt_jax.train.step import TrainStep, data_mesh

BASE = 32


@functools.cache
def trained(width: int, mup: bool, steps: int = 6):
    """A 2-layer model of ``width`` after ``steps`` AdamW steps at lr 1e-2 (no decay)."""
    cfg = ModelConfig(
        d_model=width, n_layers=2, n_heads=2, dropout=0.0, mup_base_width=BASE if mup else None
    )
    model = build_model(cfg, N_ITEMS, L, nnx.Rngs(0))
    train_cfg = TrainConfig(learning_rate=1e-2, warmup_fraction=0.0, weight_decay=0.0)
    step = TrainStep(model, train_cfg, total_tokens=10**9, mesh=data_mesh(1))
    state, losses, data = step.init_state(), [], batches(steps)
    for k, batch in enumerate(data):
        state, metrics = step(state, step.put_batch(batch), k, 0)
        losses.append(float(metrics["loss_sum"]))
    net = nnx.merge(step.graphdef, state["params"], step._constants["rest"])
    net.eval()
    hidden = net(data[0].inputs)
    logits = scores(hidden.reshape(-1, width), net.item_table()[1:])
    return float(np.abs(np.asarray(logits)).mean()), losses, state


def test_coordinate_check_logits_stay_flat_across_widths_with_mup_only():
    widths = (BASE, 4 * BASE)
    mup = [trained(w, True)[0] for w in widths]
    standard = [trained(w, False)[0] for w in widths]
    # measured (mean |logit|, widths 32 / 64 / 128 / 256): μP 0.35 / 0.36 / 0.41 / 0.35,
    # standard 0.35 / 0.66 / 1.17 / 1.54
    assert max(mup) / min(mup) < 1.5, mup
    assert standard[-1] / standard[0] > 2.5, standard


def test_mup_at_its_base_width_is_the_standard_model():
    _, mup_losses, mup_state = trained(BASE, True)
    _, losses, state = trained(BASE, False)
    assert mup_losses == losses
    for a, b in zip(
        jax.tree.leaves(mup_state["params"]), jax.tree.leaves(state["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.mup_base_width=64", "train.optimizer=prodigy"], "train.optimizer"),
        (
            ["model.backbone=mamba", "model.n_heads=null", "model.mup_base_width=64"],
            "transformer key",
        ),
        (["model.mup_base_width=1"], "model.mup_base_width"),
    ],
)
def test_bad_mup_config_is_an_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)

"""μP (model.mup_base_width): the coordinate check (output scales stay flat across widths
after training, and grow without it), equality with the standard model at the base width,
and its config rules."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from test_step import N_ITEMS, L, batches

from srt_jax.config import MambaConfig, ModelConfig, TrainConfig, load_config
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model
from srt_jax.train.losses import scores
from srt_jax.train.mesh import data_mesh
from srt_jax.train.step import TrainStep

BASE = 32


def model_config(backbone: str, width: int, mup: bool) -> ModelConfig:
    """2 layers of ``width``, no dropout; Mamba with its fan-in initialisation (μP's)."""
    shape = {
        "d_model": width,
        "n_layers": 2,
        "dropout": 0.0,
        "mup_base_width": BASE if mup else None,
    }
    if backbone == "mamba":
        return ModelConfig(backbone="mamba", mamba=MambaConfig(init="mamba"), **shape)
    return ModelConfig(n_heads=2, **shape)


@functools.cache
def trained(width: int, mup: bool, steps: int = 6, backbone: str = "transformer"):
    """A 2-layer model of ``width`` after ``steps`` AdamW steps at lr 1e-2 (no decay)."""
    cfg = model_config(backbone, width, mup)
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


@pytest.mark.parametrize("backbone", ["transformer", "mamba"])
def test_coordinate_check_logits_stay_flat_across_widths_with_mup_only(backbone):
    widths = (BASE, 4 * BASE)
    mup = [trained(w, True, backbone=backbone)[0] for w in widths]
    standard = [trained(w, False, backbone=backbone)[0] for w in widths]
    # measured (mean |logit|, widths 32 / 64 / 128 / 256): transformer μP 0.35 / 0.36 /
    # 0.41 / 0.35, standard 0.35 / 0.66 / 1.17 / 1.54; Mamba μP 0.41 / 0.35 / 0.35 / 0.34,
    # standard 0.41 / 0.59 / 0.90 / 1.50
    assert max(mup) / min(mup) < 1.5, mup
    assert standard[-1] / standard[0] > 2, standard


@pytest.mark.parametrize("backbone", ["transformer", "mamba"])
def test_mup_at_its_base_width_is_the_standard_model(backbone):
    _, mup_losses, mup_state = trained(BASE, True, backbone=backbone)
    _, losses, state = trained(BASE, False, backbone=backbone)
    assert mup_losses == losses
    for a, b in zip(
        jax.tree.leaves(mup_state["params"]), jax.tree.leaves(state["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_mamba_mup_keeps_the_step_of_its_depthwise_convolution():
    """At m = 2, one AdamW step moves every kernel half as far as without μP, but the
    convolution's (fan-in W, fixed), the biases and A_log / D as far."""
    params = {}
    for mup in (True, False):
        model = build_model(model_config("mamba", 2 * BASE, mup), N_ITEMS, L, nnx.Rngs(0))
        train_cfg = TrainConfig(learning_rate=1e-3, warmup_fraction=0.0, weight_decay=0.0)
        step = TrainStep(model, train_cfg, total_tokens=10**9, mesh=data_mesh(1))
        state = step.init_state()
        before = jax.tree.map(np.asarray, state["params"])
        state, _ = step(state, step.put_batch(batches(1)[0]), 0, 0)
        params[mup] = jax.tree.map(
            lambda b, a: np.abs(np.asarray(a) - b).mean(), before, state["params"]
        )
    mixer = lambda mup: params[mup]["layers"][0]["mixer"]  # noqa: E731
    for name, expected in [("in_proj", 0.5), ("out_proj", 0.5), ("x_proj", 0.5), ("conv", 1.0)]:
        ratio = mixer(True)[name]["kernel"][...] / mixer(False)[name]["kernel"][...]
        assert ratio == pytest.approx(expected, rel=0.05), name
    ratio = mixer(True)["A_log"][...] / mixer(False)["A_log"][...]
    assert ratio == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.mup_base_width=64", "train.optimizer=prodigy"], "train.optimizer"),
        (
            ["model.backbone=mamba", "model.n_heads=null", "model.mup_base_width=64"],
            "model.mamba.init",
        ),
        (["model.mup_base_width=1"], "model.mup_base_width"),
    ],
)
def test_bad_mup_config_is_an_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)

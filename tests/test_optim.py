"""Token-based warmup-cosine schedule, weight-decay mask, learning rate injection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srt_jax.config import ModelConfig, TrainConfig
from srt_jax.models.factory import build_model
from srt_jax.train.optim import decay_mask, lr_schedule, make_optimizer, set_learning_rate

TRAIN = TrainConfig(learning_rate=1e-3, warmup_fraction=0.1, min_lr_ratio=0.1)


def test_schedule_shape_over_tokens():
    total = 10_000
    lr = lr_schedule(TRAIN, total)
    assert float(lr(0)) == 0.0
    assert float(lr(500)) == pytest.approx(0.5e-3, rel=1e-5)  # linear warmup over 1,000 tokens
    assert float(lr(1_000)) == pytest.approx(1e-3, rel=1e-5)  # the peak
    middle = 1_000 + (total - 1_000) / 2  # cosine half way: floor + (peak - floor) / 2
    assert float(lr(middle)) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-5)
    assert float(lr(total)) == pytest.approx(1e-4, rel=1e-5)  # the floor: min_lr_ratio x peak
    assert float(lr(2 * total)) == pytest.approx(1e-4)
    values = np.array([float(lr(t)) for t in range(1_000, total + 1, 500)])
    assert np.all(np.diff(values) < 0)  # decays monotonically after warmup


def test_schedule_scales_with_token_budget():
    small, large = lr_schedule(TRAIN, 1_000), lr_schedule(TRAIN, 100_000)
    for fraction in (0.05, 0.3, 0.7):
        assert float(small(fraction * 1_000)) == pytest.approx(float(large(fraction * 100_000)))


def _params(tie=True):
    cfg = ModelConfig(d_model=8, n_layers=1, n_heads=2, tie_embeddings=tie)
    model = build_model(cfg, n_items=10, max_len=4, rngs=nnx.Rngs(0))
    return nnx.state(model, nnx.Param)


def _flat(mask):
    return {
        jax.tree_util.keystr(path): value
        for path, value in jax.tree_util.tree_flatten_with_path(mask)[0]
    }


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_decay_mask_only_kernels_and_optionally_embeddings(decay_embeddings):
    flat = _flat(decay_mask(_params(tie=False), decay_embeddings=decay_embeddings))
    for name, decayed in flat.items():
        if "kernel" in name:
            assert decayed, name
        elif "bias" in name or "scale" in name:
            assert not decayed, name
        else:  # item tables (input and untied output) and the position table
            assert any(t in name for t in ("table", "position")), name
            assert decayed == decay_embeddings, name
    assert sum("table" in n or "position" in n for n in flat) == 3


def test_weight_decay_applies_to_kernels_only():
    params = _params()
    cfg = TrainConfig(weight_decay=0.5, learning_rate=0.1, grad_clip=1e9)
    tx = make_optimizer(cfg)
    state = tx.init(params)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, state, params)
    flat_u = _flat(updates)
    flat_p = _flat(params)
    for name, update in flat_u.items():
        expected = -0.1 * 0.5 * flat_p[name] if "kernel" in name else jnp.zeros_like(update)
        np.testing.assert_allclose(update, expected, rtol=1e-6, atol=1e-12, err_msg=name)


def test_set_learning_rate_scales_the_update():
    params = _params()
    tx = make_optimizer(TrainConfig(weight_decay=0.0, grad_clip=1e9))
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    small, _ = tx.update(grads, set_learning_rate(state, jnp.float32(1e-3)), params)
    large, _ = tx.update(grads, set_learning_rate(state, jnp.float32(2e-3)), params)
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(large), strict=True):
        np.testing.assert_allclose(2 * a, b, rtol=1e-6)

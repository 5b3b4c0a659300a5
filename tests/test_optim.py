"""Token-based warmup-cosine schedule, weight-decay mask, learning rate injection, and the
optimisers of train.optimizer (masked contrib optimisers equal optax's own)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from srt_jax.config import ModelConfig, TrainConfig, from_dict
from srt_jax.models.factory import build_model
from srt_jax.train import contrib_optim
from srt_jax.train.optim import FACTORIES, decay_mask, lr_schedule, make_optimizer

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


def train_config(optimizer="adamw", **keys):
    return from_dict(TrainConfig, {"optimizer": optimizer, **keys})


def test_weight_decay_applies_to_kernels_only():
    params = _params()
    cfg = TrainConfig(weight_decay=0.5, learning_rate=0.1, grad_clip=1e9)
    tx = make_optimizer(cfg).tx
    state = tx.init(params)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, state, params)
    flat_u = _flat(updates)
    flat_p = _flat(params)
    for name, update in flat_u.items():
        expected = -0.1 * 0.5 * flat_p[name] if "kernel" in name else jnp.zeros_like(update)
        np.testing.assert_allclose(update, expected, rtol=1e-6, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("optimizer", ["prodigy", "dadapt_adamw", "schedule_free_adamw"])
def test_contrib_optimisers_decay_kernels_only(optimizer):
    """Weight decay changes the update of kernels and of nothing else."""
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)

    def update(weight_decay):
        tx = make_optimizer(train_config(optimizer, weight_decay=weight_decay, grad_clip=1e9)).tx
        return _flat(tx.update(grads, tx.init(params), params)[0])

    decayed, plain = update(0.5), update(0.0)
    for name, update in decayed.items():
        changed = bool(np.any(np.asarray(update) != np.asarray(plain[name])))
        assert changed == ("kernel" in name), name


def test_usgm_decays_kernels_at_its_own_rate_not_at_train_weight_decay():
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)

    def update(usgm_decay, train_decay=0.1):
        section = {"epsilon": 1e6, "weight_decay": usgm_decay}  # the first trial always holds
        cfg = train_config("usgm", grad_clip=1e9, weight_decay=train_decay, usgm=section)
        tx = make_optimizer(cfg).tx
        loss = lambda p: jnp.float32(0.0)  # noqa: E731
        updates, _ = tx.update(grads, tx.init(params), params, value=loss(params), value_fn=loss)
        return _flat(updates)

    decayed, plain = update(0.5), update(0.0)
    for name, u in decayed.items():
        assert bool(np.any(np.asarray(u) != np.asarray(plain[name]))) == ("kernel" in name), name
    for name, u in update(0.0, train_decay=0.0).items():
        np.testing.assert_array_equal(u, plain[name], err_msg=name)


CONTRIB = {
    "prodigy": (
        lambda mask: contrib_optim.prodigy(0.7, 0.9, 0.98, 1e-3, 1.5, 0.1, mask),
        optax.contrib.prodigy(
            0.7, betas=(0.9, 0.98), estim_lr0=1e-3, estim_lr_coef=1.5, weight_decay=0.1
        ),
    ),
    "dadapt_adamw": (
        lambda mask: contrib_optim.dadapt_adamw(0.7, 0.9, 0.98, 1e-3, 0.1, mask),
        optax.contrib.dadapt_adamw(0.7, betas=(0.9, 0.98), estim_lr0=1e-3, weight_decay=0.1),
    ),
    "schedule_free_adamw": (
        lambda mask: contrib_optim.schedule_free_adamw(1e-2, 0.9, 0.98, 0.1, mask),
        optax.contrib.schedule_free_adamw(1e-2, b1=0.9, b2=0.98, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("optimizer", CONTRIB)
def test_masked_contrib_optimisers_equal_optax_when_every_parameter_decays(optimizer):
    """Ties contrib_optim to optax's code: with a mask True everywhere, five steps of the
    masked factory give optax's own updates."""
    ours, theirs = CONTRIB[optimizer]
    ours = ours(lambda p: jax.tree.map(lambda _: True, p))
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.3, -0.2])}
    state_a, state_b = ours.init(params), theirs.init(params)
    for k in range(5):
        grads = {"w": jnp.cos(params["w"] * (k + 1)), "b": jnp.sin(params["b"] + k)}
        a, state_a = ours.update(grads, state_a, params)
        b, state_b = theirs.update(grads, state_b, params)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-10)
        params = optax.apply_updates(params, a)


@pytest.mark.parametrize("optimizer", ["prodigy", "dadapt_adamw"])
def test_a_step_at_learning_rate_zero_changes_nothing(optimizer):
    """The first step of a warmup from 0 leaves d finite (optax's own turns it NaN) and
    changes nothing; the next steps move the parameters."""
    params = _params()
    opt = make_optimizer(train_config(optimizer))
    state = opt.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, after = opt.tx.update(grads, opt.set_learning_rate(state, jnp.float32(0.0)), params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert float(after[-1].inner_state.estim_lr) == pytest.approx(1e-6)
    for _ in range(3):
        updates, after = opt.tx.update(
            grads, opt.set_learning_rate(after, jnp.float32(0.1)), params
        )
        params = optax.apply_updates(params, updates)
    assert np.isfinite(float(after[-1].inner_state.estim_lr))
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
    assert any(np.any(np.asarray(u)) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("optimizer", list(FACTORIES))
def test_set_learning_rate_scales_the_update(optimizer):
    """The injected rate scales the first update of every scheduled optimiser (the
    learning-rate-free ones' rate is the multiplier of d)."""
    params = _params()
    opt = make_optimizer(train_config(optimizer, weight_decay=0.0, grad_clip=1e9))
    state = opt.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    small, _ = opt.tx.update(grads, opt.set_learning_rate(state, jnp.float32(1e-3)), params)
    large, _ = opt.tx.update(grads, opt.set_learning_rate(state, jnp.float32(2e-3)), params)
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(large), strict=True):
        np.testing.assert_allclose(2 * a, b, rtol=1e-4)


def test_schedule_free_warms_up_then_stays_at_the_peak():
    cfg = train_config("schedule_free_adamw", learning_rate=1e-3, warmup_fraction=0.1)
    lr = lr_schedule(cfg, 10_000)
    assert float(lr(500)) == pytest.approx(0.5e-3, rel=1e-5)
    for tokens in (1_100, 5_000, 10_000, 20_000):
        assert float(lr(tokens)) == pytest.approx(1e-3, rel=1e-6)


def test_learning_rate_free_optimisers_scale_their_section_not_learning_rate():
    cfg = train_config("prodigy", learning_rate=5e-4, prodigy={"scale": 0.5})
    opt = make_optimizer(cfg)
    assert opt.peak == 0.5 and opt.metric_keys == ("d",)
    assert make_optimizer(train_config("usgm")).peak is None


def test_schedule_free_eval_params_are_the_averaged_sequence():
    params = _params()
    opt = make_optimizer(train_config("schedule_free_adamw", learning_rate=0.1))
    state = opt.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = opt.tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    evaluated = opt.eval_params(state, params)
    expected = optax.contrib.schedule_free_eval_params(state[-1].inner_state, params)
    leaves = [jax.tree.leaves(t) for t in (evaluated, expected, params)]
    for a, b, _ in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, p) for a, _, p in zip(*leaves, strict=True))
    adamw = make_optimizer(TrainConfig())
    assert adamw.eval_params(adamw.tx.init(params), params) is params

"""Losses against hand (numpy) computations; masks, collisions, limits, gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srt_jax.config import TrainConfig
from srt_jax.errors import ConfigError
from srt_jax.train.losses import (
    bce_loss,
    compute_loss,
    full_softmax_loss,
    gbce_beta,
    gbce_loss,
    log_q_from_counts,
    sample_negatives,
    sampled_softmax_loss,
    uniform_log_q,
)

N_ITEMS, D = 6, 4
rng = np.random.default_rng(0)
HIDDEN = rng.normal(size=(2, 3, D)).astype(np.float32)
TABLE = rng.normal(size=(N_ITEMS + 1, D)).astype(np.float32)
TARGETS = np.array([[0, 2, 5], [1, 6, 3]], dtype=np.int32)
MASK = np.array([[False, True, True], [True, True, True]])


def log_softmax_np(x):
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def softplus_np(x):
    return np.log1p(np.exp(x))


def per_position(fn):
    """Sum of ``fn(b, l)`` over masked positions, and their count."""
    values = [fn(b, l) for b in range(2) for l in range(3) if MASK[b, l]]
    return sum(values), len(values)


def test_full_softmax_matches_numpy():
    def hand(b, l):
        logits = TABLE[1:] @ HIDDEN[b, l]
        return -log_softmax_np(logits)[TARGETS[b, l] - 1]

    expected, count = per_position(hand)
    loss_sum, n = full_softmax_loss(HIDDEN, TABLE, TARGETS, MASK)
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-5)
    assert n == count == 5


@pytest.mark.parametrize("max_chunk_logits", [1, 10**6])  # 3 chunks of l = 1; one of l = 3
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fused_full_softmax_equals_autodiff_of_plain_formula(max_chunk_logits, dtype):
    def plain(hidden, table):
        logits = hidden.astype(jnp.float32) @ table[1:].T
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), TARGETS[..., None] - 1, -1)
        return -3.0 * (picked[..., 0] * MASK).sum()

    def fused(hidden, table):
        loss_sum, _ = full_softmax_loss(
            hidden, table, TARGETS, MASK, max_chunk_logits=max_chunk_logits
        )
        return 3.0 * loss_sum  # a cotangent other than 1

    hidden, table = jnp.asarray(HIDDEN, dtype), jnp.asarray(TABLE)
    tolerance = (
        {"rtol": 1e-5, "atol": 1e-5} if dtype == jnp.float32 else {"rtol": 0.03, "atol": 0.05}
    )
    expected = jax.value_and_grad(plain, argnums=(0, 1))(hidden, table)
    got = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(hidden, table)
    assert got[1][0].dtype == dtype
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), **tolerance
        )


def test_sampled_softmax_with_logq_matches_hand_computation():
    negatives = np.array([3, 1, 4, 4], dtype=np.int32)
    counts = np.array([0, 5, 1, 0, 9, 2, 3])
    log_q = np.asarray(log_q_from_counts(jnp.asarray(counts)))

    def hand(b, l):
        h, target = HIDDEN[b, l], TARGETS[b, l]
        kept = [n for n in negatives if n != target]
        logits = np.array([TABLE[i] @ h - log_q[i] for i in [target, *kept]])
        return -log_softmax_np(logits)[0]

    expected, _ = per_position(hand)
    loss_sum, _ = sampled_softmax_loss(
        HIDDEN, TABLE, TARGETS, MASK, jnp.asarray(negatives), jnp.asarray(log_q)
    )
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-5)


def test_sampled_softmax_collision_equals_leaving_the_negative_out():
    log_q = uniform_log_q(N_ITEMS)
    targets = np.full((2, 3), 2, dtype=np.int32)
    with_collision = sampled_softmax_loss(
        HIDDEN, TABLE, targets, MASK, jnp.array([2, 5, 2]), log_q
    )[0]
    without = sampled_softmax_loss(HIDDEN, TABLE, targets, MASK, jnp.array([5]), log_q)[0]
    np.testing.assert_allclose(with_collision, without, rtol=1e-6)


def test_bce_matches_hand_formula_and_drops_colliding_negatives():
    negatives = np.array([[4, 2, 5], [1, 1, 2]], dtype=np.int32)  # (0,2) and (1,0) collide

    def hand(b, l):
        h, target, negative = HIDDEN[b, l], TARGETS[b, l], negatives[b, l]
        loss = softplus_np(-(TABLE[target] @ h))
        return loss + (0.0 if negative == target else softplus_np(TABLE[negative] @ h))

    expected, _ = per_position(hand)
    loss_sum, _ = bce_loss(HIDDEN, TABLE, TARGETS, MASK, jnp.asarray(negatives))
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-5)


def test_gbce_matches_hand_formula():
    negatives = np.array([3, 5, 6], dtype=np.int32)
    t = 0.75
    alpha = 3 / (N_ITEMS - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)

    def hand(b, l):
        h, target = HIDDEN[b, l], TARGETS[b, l]
        positive = -np.log((1 / (1 + np.exp(-(TABLE[target] @ h)))) ** beta)
        return positive + sum(
            -np.log(1 - 1 / (1 + np.exp(-(TABLE[n] @ h)))) for n in negatives if n != target
        )

    expected, _ = per_position(hand)
    loss_sum, _ = gbce_loss(HIDDEN, TABLE, TARGETS, MASK, jnp.asarray(negatives), t=t)
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-5)


def test_gbce_limit_cases():
    # t = 0: beta = 1, i.e. BCE with every negative; with one negative it is SASRec's BCE.
    assert gbce_beta(3, N_ITEMS, 0.0) == pytest.approx(1.0)
    negatives_BxL = np.full((2, 3), 4, dtype=np.int32)
    np.testing.assert_allclose(
        gbce_loss(HIDDEN, TABLE, TARGETS, MASK, jnp.array([4]), t=0.0)[0],
        bce_loss(HIDDEN, TABLE, TARGETS, MASK, jnp.asarray(negatives_BxL))[0],
        rtol=1e-6,
    )
    # t = 1: beta = alpha = k / (n_items - 1); all n_items - 1 negatives: beta = 1 for any t.
    assert gbce_beta(2, N_ITEMS, 1.0) == pytest.approx(2 / (N_ITEMS - 1))
    assert gbce_beta(N_ITEMS - 1, N_ITEMS, 0.3) == pytest.approx(1.0)


@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax", "bce", "gbce"])
def test_masked_positions_contribute_nothing_and_gradients_are_finite(loss):
    cfg = TrainConfig(loss=loss, num_negatives=3)
    key = jax.random.key(0)

    def run(hidden, targets):
        return compute_loss(
            hidden, jnp.asarray(TABLE), targets, jnp.asarray(MASK), train_cfg=cfg, key=key
        )

    loss_sum, count = run(jnp.asarray(HIDDEN), jnp.asarray(TARGETS))
    garbage_hidden = jnp.asarray(HIDDEN).at[0, 0].set(1e4)
    garbage_targets = jnp.asarray(TARGETS).at[0, 0].set(-7)
    np.testing.assert_allclose(run(garbage_hidden, garbage_targets)[0], loss_sum, rtol=1e-6)
    assert count == MASK.sum()
    grad_h, grad_table = jax.grad(
        lambda h, t: compute_loss(
            h, t, jnp.asarray(TARGETS), jnp.asarray(MASK), train_cfg=cfg, key=key
        )[0],
        argnums=(0, 1),
    )(jnp.asarray(HIDDEN), jnp.asarray(TABLE))
    assert bool(jnp.isfinite(grad_h).all() and jnp.isfinite(grad_table).all())
    assert float(jnp.abs(grad_h[0, 0]).max()) == 0.0
    assert float(jnp.abs(grad_h[1]).max()) > 0.0


def test_compute_loss_uses_train_config_and_key():
    sampled = TrainConfig(loss="sampled_softmax", num_negatives=4)
    key = jax.random.key(3)
    negatives = sample_negatives(key, uniform_log_q(N_ITEMS), (4,))
    expected = sampled_softmax_loss(HIDDEN, TABLE, TARGETS, MASK, negatives, uniform_log_q(N_ITEMS))
    got = compute_loss(HIDDEN, TABLE, TARGETS, MASK, train_cfg=sampled, key=key)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    full = compute_loss(HIDDEN, TABLE, TARGETS, MASK, train_cfg=TrainConfig(), key=key)
    np.testing.assert_allclose(full, full_softmax_loss(HIDDEN, TABLE, TARGETS, MASK))


def test_popularity_negatives_need_log_q_and_are_refused_for_gbce():
    popular = TrainConfig(loss="sampled_softmax", negatives="popularity")
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="item_log_q"):
        compute_loss(HIDDEN, TABLE, TARGETS, MASK, train_cfg=popular, key=key)
    with pytest.raises(ValueError, match="only used with"):
        compute_loss(
            HIDDEN,
            TABLE,
            TARGETS,
            MASK,
            train_cfg=TrainConfig(loss="bce"),
            key=key,
            item_log_q=uniform_log_q(N_ITEMS),
        )
    with pytest.raises(ConfigError, match="gbce") as err:
        compute_loss(
            HIDDEN,
            TABLE,
            TARGETS,
            MASK,
            key=key,
            train_cfg=dataclasses.replace(popular, loss="gbce"),
            item_log_q=uniform_log_q(N_ITEMS),
        )
    assert err.value.key == "train.negatives"


def test_negatives_follow_the_sampling_distribution():
    counts = jnp.array([0, 10, 0, 30, 60])
    log_q = log_q_from_counts(counts)
    np.testing.assert_allclose(jnp.exp(log_q).sum(), 1.0, rtol=1e-6)
    assert log_q[0] == -jnp.inf
    draws = np.asarray(sample_negatives(jax.random.key(1), log_q, (20_000,)))
    frequencies = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(frequencies, [0, 11 / 104, 1 / 104, 31 / 104, 61 / 104], atol=0.01)
    uniform = np.asarray(sample_negatives(jax.random.key(2), uniform_log_q(4), (20_000,)))
    assert uniform.min() == 1 and uniform.max() == 4
    np.testing.assert_allclose(np.bincount(uniform)[1:] / uniform.size, 0.25, atol=0.01)


def test_bfloat16_hidden_gives_float32_loss():
    loss_sum, _ = full_softmax_loss(jnp.asarray(HIDDEN, jnp.bfloat16), TABLE, TARGETS, MASK)
    reference, _ = full_softmax_loss(HIDDEN, TABLE, TARGETS, MASK)
    assert loss_sum.dtype == jnp.float32
    np.testing.assert_allclose(loss_sum, reference, rtol=0.02)

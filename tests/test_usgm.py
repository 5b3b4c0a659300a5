"""USGM (srt_jax.train.usgm) on convex problems where its rate is known (Nesterov 2015):
the averaged iterate's gap within ||x0 - x*||^2 / (2 S_k) + eps/2 and within the O(L/k)
bound, steps that adapt to 1/L, descent up to eps/2, the line search's cost; and its
behaviour as an optax transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from srt_jax.train.usgm import USGMState, usgm


def minimise(f, x0, steps, *, epsilon, lipschitz0, max_backtracks=30, direction=None):
    """Run USGM on f from x0; return the iterates x_1..x_k, accepted M_0..M_{k-1}, evals."""
    tx = usgm(epsilon=epsilon, lipschitz0=lipschitz0, max_backtracks=max_backtracks)

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x)
        d = grad if direction is None else direction(grad)
        updates, state = tx.update(d, state, x, value=value, value_fn=f, grad=grad)
        return optax.apply_updates(x, updates), state

    x, state = x0, tx.init(x0)
    xs, ms, evals = [], [], []
    for _ in range(steps):
        x, state = step(x, state)
        xs.append(np.asarray(x, np.float64))
        ms.append(float(state.accepted))
        evals.append(int(state.evals))
    return np.array(xs), np.array(ms), np.array(evals)


def averaged(xs, ms):
    """x̄_k = sum x_{i+1} / M_i / S_k for every k, and S_k."""
    weights = 1.0 / ms
    s = np.cumsum(weights)
    return np.cumsum(xs * weights[:, None], axis=0) / s[:, None], s


def quadratic(eigenvalues, centre):
    a = jnp.asarray(eigenvalues, jnp.float32)
    c = jnp.asarray(centre, jnp.float32)
    return lambda x: 0.5 * jnp.sum(a * (x - c) ** 2)


DIM = 20
EIGEN = np.geomspace(1e-3, 10.0, DIM)  # L = 10, badly conditioned: only the O(1/k) rate
CENTRE = np.linspace(-1.0, 1.0, DIM)


@pytest.mark.parametrize("epsilon", [0.0, 1e-3, 1e-1])
@pytest.mark.parametrize("lipschitz0", [1e-3, 10.0, 1e4])
def test_smooth_convex_gap_within_the_universal_bound(epsilon, lipschitz0):
    """f(x̄_k) - f* <= R^2 / (2 S_k) + eps/2 <= max(L0, 2L) R^2 / (2k) + eps/2 (the
    O(L/k) rate), every accepted M <= max(L0, 2L)."""
    f, lipschitz = quadratic(EIGEN, CENTRE), EIGEN.max()
    x0 = jnp.zeros(DIM, jnp.float32)
    r2 = float(np.sum(CENTRE**2))
    xs, ms, _ = minimise(f, x0, 300, epsilon=epsilon, lipschitz0=lipschitz0)
    x_bar, s = averaged(xs, ms)
    gaps = np.array([float(f(jnp.asarray(x))) for x in x_bar])
    k = np.arange(1, len(ms) + 1)
    slack = 1e-5  # float32 evaluation of f
    assert np.all(ms <= max(lipschitz0, 2 * lipschitz) * (1 + 1e-6))
    assert np.all(gaps <= r2 / (2 * s) + epsilon / 2 + slack)
    assert np.all(gaps <= max(lipschitz0, 2 * lipschitz) * r2 / (2 * k) + epsilon / 2 + slack)
    assert gaps[-1] < 0.1 * gaps[9] + epsilon / 2 + slack  # it keeps converging (~1/k)


def test_nonsmooth_convex_gap_within_the_certificate():
    """f = G ||x - c||_1 (Hölder exponent 0): M stays below max(L0, 8 G^2 n / eps) and the
    averaged gap below R^2 / (2 S_k) + eps/2."""
    g, epsilon = 2.0, 0.05
    c = jnp.asarray(CENTRE[:5], jnp.float32)

    def f(x):
        return g * jnp.sum(jnp.abs(x - c))

    x0 = jnp.zeros(5, jnp.float32)
    xs, ms, _ = minimise(f, x0, 400, epsilon=epsilon, lipschitz0=1.0)
    x_bar, s = averaged(xs, ms)
    gaps = np.array([float(f(jnp.asarray(x))) for x in x_bar])
    grad_bound_sq = g**2 * 5  # ||subgradient||^2 <= G^2 n; the model holds for M >= 4 that / eps
    assert np.all(ms <= max(1.0, 8 * grad_bound_sq / epsilon) * (1 + 1e-6))
    assert np.all(gaps <= float(np.sum(CENTRE[:5] ** 2)) / (2 * s) + epsilon / 2 + 1e-5)
    assert gaps[-1] < 0.7 * gaps[9]  # the average is slow (early long steps weigh in) ...
    assert float(f(jnp.asarray(xs[-1]))) < epsilon  # ... the last iterate is within eps


@pytest.mark.parametrize("lipschitz0", [1e-4, 1.0, 1e4])
def test_step_size_adapts_to_one_over_l(lipschitz0):
    """On f = L/2 ||x||^2 the model (eps = 0) holds exactly for M >= L: from any L0 the
    accepted M settles in [L, 2L) (after halving down from a large L0) — step 1/M ~ 1/L."""
    lipschitz = 7.0
    f = quadratic([lipschitz] * 3, [0.0] * 3)
    x0 = jnp.asarray([1.0, -2.0, 0.5], jnp.float32)
    settle = int(np.ceil(abs(np.log2(lipschitz0 / lipschitz)))) + 1
    # few steps after settling: x shrinks by up to 8x a step, and once f underflows to 0
    # the model holds for any M
    _, ms, _ = minimise(f, x0, settle + 8, epsilon=0.0, lipschitz0=lipschitz0)
    assert np.all(ms[settle:] >= lipschitz)
    assert np.all(ms[settle:] < 2 * lipschitz)


def test_descent_up_to_half_epsilon_and_finite():
    """With d = g, every step lowers f by at least ||g||^2 / (2M) - eps/2."""
    epsilon = 1e-2
    f = quadratic(EIGEN, CENTRE)
    x0 = jnp.zeros(DIM, jnp.float32)
    xs, ms, _ = minimise(f, x0, 100, epsilon=epsilon, lipschitz0=1.0)
    values = np.array([float(f(x0))] + [float(f(jnp.asarray(x))) for x in xs])
    grads = [np.asarray(jax.grad(f)(x0))] + [np.asarray(jax.grad(f)(jnp.asarray(x))) for x in xs]
    drops = values[:-1] - values[1:]
    needed = np.array([np.sum(gr**2) for gr in grads[:-1]]) / (2 * ms) - epsilon / 2
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(ms))
    assert np.all(drops >= needed - 1e-5)


def test_line_search_costs_about_two_evaluations_per_step():
    """Evaluations of f in k steps <= 2k + log2(max M / L0) + 1 (Nesterov's count: L
    halves once per step, so every doubling beyond the first is paid for by a halving)."""
    f = quadratic(EIGEN, CENTRE)
    lipschitz0 = 1e-3
    _, ms, evals = minimise(
        f, jnp.zeros(DIM, jnp.float32), 200, epsilon=1e-3, lipschitz0=lipschitz0
    )
    assert evals.sum() <= 2 * len(evals) + np.log2(ms.max() / lipschitz0) + 1


def test_gives_up_after_max_backtracks_and_takes_the_smallest_step():
    """A loss that is never finite at a trial point: max_backtracks doublings, then the step
    with M = 2^max L is taken (the state stays finite)."""

    def f(x):
        return jnp.where(jnp.all(x == 0.0), 0.0, jnp.nan)

    tx = usgm(epsilon=0.1, lipschitz0=1.0, max_backtracks=5)
    x = jnp.zeros(2)
    updates, state = tx.update(jnp.ones(2), tx.init(x), x, value=jnp.float32(0.0), value_fn=f)
    assert int(state.evals) == 6 and float(state.accepted) == 32.0
    np.testing.assert_allclose(updates, -jnp.ones(2) / 32.0)
    assert float(state.lipschitz) == 16.0


def test_needs_the_loss_and_works_inside_chain_and_inject_hyperparams():
    tx = usgm()
    x = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="value_fn"):
        tx.update(x, tx.init(x), x)

    def f(p):
        return jnp.sum(p["w"] ** 2)

    chained = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(usgm, static_args=("max_backtracks",))(
            epsilon=0.0, lipschitz0=1.0, max_backtracks=10
        ),
    )
    state = chained.init(x)
    grad = jax.grad(f)(x)
    updates, state = chained.update(grad, state, x, value=f(x), value_fn=f, grad=grad)
    inner = state[-1].inner_state
    assert isinstance(inner, USGMState) and state[-1].hyperparams["epsilon"] == 0.0
    assert float(f(optax.apply_updates(x, updates))) < float(f(x))
    # the clipped direction d = g/|g| with the true gradient g in the model: M >= 2 here
    assert float(inner.accepted) >= 2.0

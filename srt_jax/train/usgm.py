r"""USGM, the universal stochastic gradient method, as an optax transformation.

Nesterov's universal primal gradient method (Nesterov 2015) run on mini-batches: a gradient
step whose size 1/M comes from a line search on an upper quadratic model of the loss, with
an accuracy slack ε that lets one method adapt to smooth and non-smooth problems alike
("universal": no Lipschitz constant or Hölder exponent is given to it).

**Update rule.** At step k, with parameters x_k, the step's batch loss f_k (one function of
the parameters: the step's batch, dropout and negative-sampling keys fixed), its value
f_k(x_k) and gradient g_k, the direction d_k (the transformation's input updates: g_k, or
what the chain before it made of g_k, e.g. clipped, plus decoupled weight decay) and the
estimate L_k:

.. math::

    \text{find the smallest } i \ge 0 \text{ such that, with } M = 2^i L_k,\;
    x^+ = x_k - d_k / M:\quad
    f_k(x^+) \le f_k(x_k) + \langle g_k, x^+ - x_k\rangle + \tfrac{M}{2}\|x^+ - x_k\|^2
    + \tfrac{\varepsilon}{2}, \qquad (*)

    x_{k+1} = x^+,\qquad L_{k+1} = M / 2.

The output updates are ``-d_k / M``: the step size 1/M, no learning-rate schedule.

**Parameters.**

- ``epsilon`` (ε >= 0): the accuracy, in units of the loss (nats for this project's mean
  per-token loss). Larger ε accepts smaller M (longer steps); it bounds how far above the
  model the loss may land, ε/2 per step. ε = 0 is plain backtracking on the quadratic model.
- ``lipschitz0`` (L_0 > 0): the initial estimate; the first step tries 1/L_0.
- ``max_backtracks``: at most this many doublings per step; if (*) still fails the step
  with M = 2^max_backtracks L_k is taken anyway (so a step always ends, e.g. at a point
  where the loss is not finite, which counts as a failed trial).

**Step-size adaptation.** L halves after every step and doubles inside a step until (*)
holds, so 1/M tracks the local curvature both ways. For convex f whose gradient is Hölder
continuous with exponent ν ∈ [0, 1] and constant H_ν, (*) holds for every
M >= ε^{-(1-ν)/(1+ν)} H_ν^{2/(1+ν)} (ν = 1: every M >= L, the Lipschitz constant of the
gradient, whatever ε), so every accepted M_k <= max(L_0, 2 ε^{-(1-ν)/(1+ν)} H_ν^{2/(1+ν)}),
and summing (*) gives

.. math::

    f(\bar x_k) - f^* \le \frac{\|x_0 - x^*\|^2}{2 S_k} + \frac{\varepsilon}{2},\qquad
    S_k = \sum_{i<k} \frac{1}{M_i},\quad \bar x_k = \frac{1}{S_k}\sum_{i<k}\frac{x_{i+1}}{M_i},

i.e. f(x̄_k) - f* <= max(L_0, 2L) ||x_0 - x*||² / (2k) + ε/2 for an L-Lipschitz gradient
(``tests/test_usgm.py`` checks these on convex problems). With d_k = g_k, (*) also gives
f_k(x_{k+1}) <= f_k(x_k) - ||g_k||² / (2M) + ε/2: descent up to ε/2 on the step's batch.
The line search evaluates f about twice per step on average (each step starts one halving
below the last accepted M).

**Function values.** The update needs f_k, so this is a
:class:`optax.GradientTransformationExtraArgs` taking the keyword arguments ``value``
(f_k(x_k)), ``value_fn`` (parameters -> f_k) and ``grad`` (g_k; the input updates when
absent), as optax's own line searches do. The train step (:mod:`srt_jax.train.step`) passes
the batch loss its gradient came with and the same loss function (same batch and keys): one
forward pass per trial point, inside a ``jax.lax.while_loop``. Those forward passes are not
in the run's analytic FLOPs (``train_flops`` charges forward x 3 per trained token); the
``evals`` figure of each train line says how many there were.

**Stochastic use.** Checking (*) on the step's own mini-batch, where f_k is an unbiased
sample of the loss, is the universal method for stochastic problems of Gasnikov & Nesterov
(2018); their guarantees also need a batch that grows as ε shrinks, which a fixed
``train.batch_size`` does not provide (adaptive batch size is a separate feature).

References:
  Yu. Nesterov, "Universal gradient methods for convex optimization problems",
  Math. Program. 152 (2015) 381-404 (the universal primal gradient method).
  A. V. Gasnikov, Yu. E. Nesterov, "Universal method for stochastic composite optimization
  problems", Comput. Math. Math. Phys. 58 (2018) 48-64.
  M. Obozov, M. Baderko, S. Kulibaba, N. Kutuzov, A. Gasnikov, "Exploring applications of
  state space models and advanced training techniques in sequential recommendations"
  (arXiv:2408.05606, 2024), which trains SASRec and Mamba4Rec with USGM. Only that paper's
  abstract and introduction were at hand when this module was written, so this is the
  method as Nesterov and Gasnikov define it, not a transcription of the paper's pseudo-code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class USGMState(NamedTuple):
    """State of :func:`usgm` (float32 / int32 scalars).

    Attributes:
      lipschitz: L_k, where the next step's line search starts.
      accepted: M of the last step (its step size was 1/M); L_0 before the first step.
      evals: evaluations of f the last step's line search made (0 before the first).
    """

    lipschitz: jax.Array
    accepted: jax.Array
    evals: jax.Array


def usgm(
    epsilon: Any = 0.01, lipschitz0: Any = 1.0, max_backtracks: int = 20
) -> optax.GradientTransformationExtraArgs:
    """The universal stochastic gradient step (see the module docstring).

    Args:
      epsilon: the accuracy ε >= 0 (units of the loss).
      lipschitz0: the initial estimate L_0 > 0 (the first step tries 1/L_0).
      max_backtracks: doublings of L per step at most (a Python int).

    Returns:
      A transformation whose ``update(updates, state, params, *, value, value_fn,
      grad=None)`` returns ``-updates / M``.
    """

    def init_fn(params: optax.Params) -> USGMState:
        del params
        start = jnp.asarray(lipschitz0, jnp.float32)
        return USGMState(start, start, jnp.zeros((), jnp.int32))

    def update_fn(
        updates: optax.Updates,
        state: USGMState,
        params: optax.Params | None = None,
        *,
        value: jax.Array | None = None,
        value_fn: Callable[[optax.Params], jax.Array] | None = None,
        grad: optax.Updates | None = None,
        **extra: Any,
    ) -> tuple[optax.Updates, USGMState]:
        del extra
        if params is None or value is None or value_fn is None:
            raise ValueError("usgm needs params, value= and value_fn= (the loss) in update()")
        gradient = updates if grad is None else grad
        slope = optax.tree.vdot(gradient, updates).astype(jnp.float32)  # <g, d>
        length_sq = optax.tree.vdot(updates, updates).astype(jnp.float32)  # ||d||^2
        value = jnp.asarray(value, jnp.float32)

        def trial(m: jax.Array) -> jax.Array:
            point = jax.tree.map(lambda p, d: p - (d / m).astype(p.dtype), params, updates)
            return jnp.asarray(value_fn(point), jnp.float32)

        def model_holds(m: jax.Array, loss: jax.Array) -> jax.Array:
            # (*) at x+ = x - d/M: <g, x+ - x> = -<g, d>/M, ||x+ - x||^2 = ||d||^2/M^2
            return loss <= value - slope / m + length_sq / (2 * m) + epsilon / 2

        def searching(carry: tuple) -> jax.Array:
            m, loss, evals = carry
            return ~model_holds(m, loss) & (evals <= max_backtracks)

        def double(carry: tuple) -> tuple:
            m, _, evals = carry
            return 2 * m, trial(2 * m), evals + 1

        start = state.lipschitz
        m, _, evals = jax.lax.while_loop(searching, double, (start, trial(start), jnp.int32(1)))
        step = jax.tree.map(lambda d: (-d / m).astype(d.dtype), updates)
        return step, USGMState(lipschitz=m / 2, accepted=m, evals=evals)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

"""Huber objectives on log-loss residuals, with analytic gradients, for every law fit.

A law is fitted by minimising sum_i Huber_delta(r_i) where r_i = log L_hat_i - log L_i is
the (dimensionless) log residual of point i, in float64. Each law supplies a function
``theta -> (r [n], J [n, p])`` with J = dr/dtheta; :func:`huber_objective` turns it into
the value and gradient L-BFGS needs. Reduction "mean" exists only to show why it must not
be used with default L-BFGS tolerances: dividing by n shrinks the gradient below the
stopping threshold, so the optimiser "converges" next to its start.

Log-parameterised laws (positive constants through exp, sums of terms through LSE):

- Chinchilla, theta = (e, a, b, alpha, beta):
  log L_hat = LSE(e, a - alpha log N, b - beta log D).
- Compute law on the frontier, theta = (e, a, gamma): log L_hat = LSE(e, a - gamma log C).
- Kaplan, theta = (log N_c, log D_c, alpha_N, alpha_D):
  log L_hat = alpha_D LSE((alpha_N / alpha_D)(log N_c - log N), log D_c - log D).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

CHINCHILLA_PARAMS = ("e", "a", "b", "alpha", "beta")
"""Order of the Chinchilla log-parameter vector theta used throughout approach 3."""
COMPUTE_LAW_PARAMS = ("e", "a", "gamma")
KAPLAN_PARAMS = ("log_n_c", "log_d_c", "alpha_n", "alpha_d")

Reduction = Literal["sum", "mean"]
ResidualFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Elementwise Huber loss: r^2/2 inside |r| <= delta, delta (|r| - delta/2) outside."""
    abs_r = np.abs(r)
    return np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta))


def huber_objective(
    residual_fn: ResidualFn, theta: np.ndarray, delta: float, reduction: Reduction = "sum"
) -> tuple[float, np.ndarray]:
    """Summed (or mean) Huber loss of ``residual_fn(theta)`` and its gradient [p]."""
    r, jac = residual_fn(theta)
    value = float(huber(r, delta).sum())
    grad = np.clip(r, -delta, delta) @ jac
    if reduction == "mean":
        return value / r.size, grad / r.size
    return value, grad


def _lse_with_shares(*terms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum_j exp(terms[j])) per point [n] and the softmax shares of each term [n]."""
    top = np.maximum.reduce(terms)
    exps = [np.exp(t - top) for t in terms]
    total = sum(exps)
    return top + np.log(total), [x / total for x in exps]


def chinchilla_residuals(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray) -> ResidualFn:
    """Residual function of the Chinchilla law for points with logs of N, D and loss [n]."""

    def residuals(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, a, b, alpha, beta = theta
        log_pred, (s_e, s_a, s_b) = _lse_with_shares(
            np.full_like(log_n, e), a - alpha * log_n, b - beta * log_d
        )
        jac = np.column_stack([s_e, s_a, s_b, -s_a * log_n, -s_b * log_d])
        return log_pred - log_loss, jac

    return residuals


def compute_law_residuals(log_c: np.ndarray, log_loss: np.ndarray) -> ResidualFn:
    """Residual function of L(C) = E + A C^-gamma, theta = (e, a, gamma)."""

    def residuals(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, a, gamma = theta
        log_pred, (s_e, s_a) = _lse_with_shares(np.full_like(log_c, e), a - gamma * log_c)
        return log_pred - log_loss, np.column_stack([s_e, s_a, -s_a * log_c])

    return residuals


def kaplan_residuals(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray) -> ResidualFn:
    """Residual function of Kaplan's L(N, D) = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D."""

    def residuals(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_n_c, log_d_c, alpha_n, alpha_d = theta
        ratio = alpha_n / alpha_d
        gap_n = log_n_c - log_n
        inner, (s_n, s_d) = _lse_with_shares(ratio * gap_n, log_d_c - log_d)
        jac = np.column_stack(
            [alpha_n * s_n, alpha_d * s_d, s_n * gap_n, inner - ratio * s_n * gap_n]
        )
        return alpha_d * inner - log_loss, jac

    return residuals

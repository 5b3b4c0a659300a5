"""Kaplan et al. 2020's L(N, D) fitted by the same summed Huber objective, for comparison.

L(N, D) = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D has no irreducible term; its
objective beside the Chinchilla law's tells which form the data prefer. Starts: a grid of
exponents and of N_c, D_c from the largest N and D up to 14 e-folds beyond. Exponents
are kept in [1e-3, 4] and N_c, D_c within 40 e-folds of the data, so that a law with no
trend in one variable stays finite (its exponent then sits on the bound).
"""

from __future__ import annotations

import numpy as np

from srt_jax.scaling.lbfgs import many_start_fit, start_grid
from srt_jax.scaling.objective import kaplan_residuals

EXPONENT_BOUNDS = (1e-3, 4.0)
SCALE_RANGE = 40.0


def fit_kaplan(n: np.ndarray, d: np.ndarray, loss: np.ndarray, delta: float) -> dict:
    """Kaplan L(N, D) through points [n] (JSON-ready N_c, D_c, alpha_N, alpha_D, objective)."""
    log_n, log_d = np.log(n), np.log(d)
    offsets = np.array([0.0, 7.0, 14.0])
    exponents = np.array([0.05, 0.3])
    starts = start_grid(log_n.max() + offsets, log_d.max() + offsets, exponents, exponents)
    bounds = [
        (log_n.min() - SCALE_RANGE, log_n.max() + SCALE_RANGE),
        (log_d.min() - SCALE_RANGE, log_d.max() + SCALE_RANGE),
        EXPONENT_BOUNDS,
        EXPONENT_BOUNDS,
    ]
    best = many_start_fit(
        kaplan_residuals(log_n, log_d, np.log(loss)), starts, delta, bounds=bounds
    )
    log_n_c, log_d_c, alpha_n, alpha_d = best.theta
    return {
        "form": "L(N, D) = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D",
        "N_c": float(np.exp(log_n_c)),
        "D_c": float(np.exp(log_d_c)),
        "alpha_N": float(alpha_n),
        "alpha_D": float(alpha_d),
        "objective": best.objective,
        "converged": best.converged,
    }

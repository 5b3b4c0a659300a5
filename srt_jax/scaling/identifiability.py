"""How well the data pin down each Chinchilla parameter: curvature and profiles.

- Hessian of the summed Huber objective in log-parameters (e, a, b, alpha, beta) at the
  optimum, by central differences of the analytic gradient: its eigenvalues, condition
  number and the direction of least curvature (the combination the data barely constrain).
- Profiles: log E, log A or log B fixed at the optimum times a factor, the four other
  parameters refitted; the relative rise of the objective says how flat it is along that
  parameter (a rise of a few percent for A x 2 means A is poorly identified).
"""

from __future__ import annotations

import numpy as np

from srt_jax.scaling.approach3 import Approach3Fit
from srt_jax.scaling.lbfgs import minimize_huber
from srt_jax.scaling.objective import CHINCHILLA_PARAMS, chinchilla_residuals, huber_objective

PROFILE_FACTORS = (0.5, 0.8, 1.25, 2.0)
PROFILED = {"E": 0, "A": 1, "B": 2}
HESSIAN_STEP = 1e-5


def identifiability(fit: Approach3Fit, n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> dict:
    """Hessian spectrum and E/A/B profiles of ``fit`` on its points [n] (JSON-ready)."""
    residual_fn = chinchilla_residuals(np.log(n), np.log(d), np.log(loss))
    theta = fit.law.theta
    hessian = _hessian(lambda t: huber_objective(residual_fn, t, fit.delta)[1], theta)
    eigenvalues, eigenvectors = np.linalg.eigh(hessian)
    flat = eigenvectors[:, 0] * np.sign(eigenvectors[np.argmax(np.abs(eigenvectors[:, 0])), 0])
    profiles = {}
    for name, index in PROFILED.items():
        rises = {}
        for factor in PROFILE_FACTORS:
            bounds = [(None, None)] * 5
            fixed = theta[index] + np.log(factor)
            bounds[index] = (fixed, fixed)
            start = theta.copy()
            start[index] = fixed
            refit = minimize_huber(residual_fn, start, fit.delta, bounds=bounds)
            rises[f"x{factor:g}"] = (refit.objective - fit.objective) / fit.objective
        profiles[name] = rises
    return {
        "hessian_log_params": {
            "params": list(CHINCHILLA_PARAMS),
            "eigenvalues": eigenvalues.tolist(),
            "condition_number": float(eigenvalues[-1] / eigenvalues[0])
            if eigenvalues[0] > 0
            else float("inf"),
            "flattest_direction": dict(zip(CHINCHILLA_PARAMS, flat.tolist(), strict=True)),
        },
        "profile_relative_objective_rise": profiles,
    }


def _hessian(gradient, theta: np.ndarray) -> np.ndarray:
    """Symmetrised central-difference Jacobian of ``gradient`` at ``theta`` [p, p]."""
    columns = []
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = HESSIAN_STEP
        columns.append((gradient(theta + step) - gradient(theta - step)) / (2 * HESSIAN_STEP))
    hessian = np.column_stack(columns)
    return 0.5 * (hessian + hessian.T)

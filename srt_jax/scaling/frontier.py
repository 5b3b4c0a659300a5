"""The compute frontier of a set of runs and the laws fitted along it.

The frontier is the running best against compute: sorted by C, a run (or, over training
curves, an evaluation) is on it when nothing cheaper did better. Along it the loss is
fitted with L(C) = E + A C^-gamma (summed Huber of log residuals, as approach 3) and a
ranking metric with m(C) = a + b ln C (ordinary least squares, the log-linear form HSTU
reports).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from srt_jax.errors import DataError
from srt_jax.scaling.lbfgs import many_start_fit, start_grid
from srt_jax.scaling.objective import compute_law_residuals
from srt_jax.scaling.points import Curve


def pareto_frontier(
    compute: np.ndarray, values: np.ndarray, *, lower_is_better: bool
) -> np.ndarray:
    """Indices of the frontier runs, ordered by compute (shape [frontier]); NaN never counts."""
    order = np.argsort(compute, kind="stable")
    sign = 1.0 if lower_is_better else -1.0
    best, keep = np.inf, []
    for i in order:
        value = sign * values[i]
        if np.isfinite(value) and value < best:
            best = value
            keep.append(i)
    return np.array(keep, dtype=int)


def curve_frontier(
    curves: Sequence[Curve | None], metric: str | None = None, *, lower_is_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Frontier over every evaluation of every curve: (compute [frontier], value [frontier]).

    ``metric`` names a curve metric; None means the loss.
    """
    present = [c for c in curves if c is not None and (metric is None or metric in c.metrics)]
    if not present:
        return np.empty(0), np.empty(0)
    compute = np.concatenate([c.flops for c in present])
    values = np.concatenate([c.loss if metric is None else c.metrics[metric] for c in present])
    keep = pareto_frontier(compute, values, lower_is_better=lower_is_better)
    return compute[keep], values[keep]


def fit_compute_law(compute: np.ndarray, loss: np.ndarray, delta: float) -> dict:
    """L(C) = E + A C^-gamma through frontier points (JSON-ready E, A, gamma, objective)."""
    if compute.size < 3:
        raise DataError(f"the compute law needs 3 or more frontier points; got {compute.size}")
    log_c, log_loss = np.log(compute), np.log(loss)
    centre = log_c.mean()
    starts = start_grid(
        np.log(loss.min()) + np.log([0.3, 0.6, 0.9]),
        np.log(np.ptp(loss) + 1e-3 * loss.min()) + np.array([-2.0, 0.0, 2.0]),
        np.array([0.05, 0.15, 0.3, 0.6]),
    )
    best = many_start_fit(compute_law_residuals(log_c - centre, log_loss), starts, delta)
    e, a_centred, gamma = best.theta
    return {
        "form": "L(C) = E + A C^-gamma",
        "E": float(np.exp(e)),
        "A": float(np.exp(a_centred + gamma * centre)),
        "gamma": float(gamma),
        "objective": best.objective,
        "converged": best.converged,
        "points": int(compute.size),
    }


def fit_metric_law(compute: np.ndarray, metric: np.ndarray) -> dict:
    """m(C) = a + b ln C through frontier points by least squares (JSON-ready)."""
    if compute.size < 2:
        raise DataError(f"the metric law needs 2 or more frontier points; got {compute.size}")
    b, a = np.polyfit(np.log(compute), metric, 1)
    fitted = a + b * np.log(compute)
    total = np.sum((metric - metric.mean()) ** 2)
    r2 = 1.0 - np.sum((metric - fitted) ** 2) / total if total > 0 else float("nan")
    return {
        "form": "m(C) = a + b ln C",
        "a": float(a),
        "b": float(b),
        "r2": float(r2),
        "points": int(compute.size),
    }

"""The compute frontier of a set of runs and the laws fitted along it.

The frontier is the running best against compute: sorted by C, a run (or, over training
curves, an evaluation) is on it when nothing cheaper did better. Along it the loss is
fitted with L(C) = E + A C^-gamma (summed Huber of log residuals, as approach 3) and a
ranking metric with m(C) = a + b ln C (ordinary least squares, the log-linear form HSTU
reports) and with the saturating m(C) = M_inf - A (C/C0)^-alpha (:func:`fit_power_law`,
also used for downstream quality against pre-training compute).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import curve_fit

from srt_jax.errors import DataError
from srt_jax.scaling.lbfgs import many_start_fit, start_grid
from srt_jax.scaling.objective import compute_law_residuals
from srt_jax.scaling.points import Curve

MIN_LAW_BUDGETS = 3
"""Distinct budgets a saturating power law needs (it has 3 parameters)."""


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
    """m(C) = a + b ln C through frontier points by least squares (JSON-ready), and beside
    it (``saturating``) the saturating form m(C) = M_inf - A (C/C0)^-alpha of
    :func:`fit_power_law`, which cannot grow past 1."""
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
        "saturating": fit_power_law(compute, metric, increasing=True),
    }


def fit_power_law(flops: Sequence[float], values: Sequence[float], increasing: bool) -> dict:
    """``y = c - A (C/C0)^-alpha`` (``increasing``) or ``y = c + A (C/C0)^-alpha`` fitted by
    least squares (scipy ``curve_fit``), every run one point; ``c`` is ``M_inf`` or ``E``.

    The level is bounded by the data and the quantity's range (``max(y) <= M_inf <= 1``,
    ``0 <= E <= min(y)``) and ``0 <= alpha <= 3``. Returns ``{"law": {...} | None, "points",
    "rmse"?, "identified"?, "reason"?}``: no law with fewer than :data:`MIN_LAW_BUDGETS` distinct
    budgets or when the fit fails; ``identified`` is False (with the reason) when a
    parameter ends at the edge of its range.
    """
    c = np.asarray(flops, np.float64)
    y = np.asarray(values, np.float64)
    result: dict[str, Any] = {"law": None, "points": int(c.size)}
    if len(np.unique(c)) < MIN_LAW_BUDGETS:
        result["reason"] = f"{len(np.unique(c))} budgets; a law needs {MIN_LAW_BUDGETS}"
        return result
    scale, sign = float(c.min()), -1.0 if increasing else 1.0
    spread = float(np.ptp(y)) or abs(float(y.mean())) or 1.0

    def law(x: np.ndarray, level: float, gap: float, alpha: float) -> np.ndarray:
        return level + sign * gap * (x / scale) ** -alpha

    # the level lies beyond every run's value and inside the metric's or the loss's range
    low, high = (float(y.max()), 1.0) if increasing else (0.0, float(y.min()))
    start = ((low + high) / 2, spread, 0.3)
    try:
        (level, gap, alpha), _ = curve_fit(
            law,
            c,
            y,
            p0=start,
            bounds=([low, 0.0, 0.0], [max(high, low + 1e-12), np.inf, 3.0]),
            maxfev=20_000,
        )
    except (RuntimeError, ValueError) as err:
        result["reason"] = f"fit failed: {err}"
        return result
    at_bound = [
        name
        for name, value, bound in (
            ("level", level, low),
            ("level", level, high),
            ("alpha", alpha, 0.0),
            ("alpha", alpha, 3.0),
        )
        if abs(value - bound) <= 1e-3 * max(abs(bound), 1e-3)
    ]
    result["identified"] = not at_bound
    if at_bound:
        result["reason"] = (
            f"{' and '.join(sorted(set(at_bound)))} at the edge of its range: the runs do not "
            "show where the curve saturates"
        )
    name = "M_inf" if increasing else "E"
    result["law"] = {name: level, "A": gap, "alpha": alpha, "C0": scale}
    result["rmse"] = float(np.sqrt(np.mean((y - law(c, level, gap, alpha)) ** 2)))
    return result


def law_values(law: dict, flops: np.ndarray) -> np.ndarray:
    """A fitted law of :func:`fit_power_law` at ``flops``."""
    if "M_inf" in law:
        return law["M_inf"] - law["A"] * (flops / law["C0"]) ** -law["alpha"]
    return law["E"] + law["A"] * (flops / law["C0"]) ** -law["alpha"]

"""Approach 2: IsoFLOP profiles give N_opt(C) from the minimum of loss against log N.

Profiles at fixed compute come from the training curves when there are any: each run's
loss is interpolated (linearly in log FLOPs) at every budget its curve spans, and a model
size keeps its lowest loss. Without curves, final points whose log10 C lie within
``group_dex`` of each other form one budget (their geometric-mean compute).

Per budget with at least ``min_sizes`` model sizes the loss is fitted against log N with a
parabola through the sizes within ``window_dex`` decades of the lowest observed loss (all
sizes if fewer than 4 are that close: a parabola is a good model only near the minimum),
and, with 5 or more sizes, with a cubic smoothing spline (scipy's
``make_smoothing_spline``, penalty chosen by generalised cross-validation) as a smoother
check. A minimum is not trusted, and so is left out of the power-law fit, when the parabola
opens downwards, when its vertex lies outside the sampled sizes, when the lowest observed
loss is at the smallest or largest size (the true minimum is then likely beyond it), or
when the vertex lies within ``edge_fraction`` of the range from either end ("far
off-centre"). The trusted minima give
N_opt = G C^a; D_opt = C / (k N_opt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_smoothing_spline

from srt_jax.errors import DataError
from srt_jax.scaling.laws import PowerLaw
from srt_jax.scaling.points import Curve

MIN_SPLINE_SIZES = 5
MIN_PARABOLA_SIZES = 4


@dataclass(frozen=True)
class IsoFlopProfile:
    """Loss against model size at one compute budget (arrays [m], sorted by N).

    ``parabola`` holds the coefficients of loss in log N (highest power first); ``n_opt``
    its vertex and ``loss_opt`` the loss there; ``n_opt_spline`` the smoothing-spline
    minimum (NaN with fewer than 5 sizes); ``flag`` why the minimum is not trusted ("" if
    it is).
    """

    compute: float
    n: np.ndarray
    loss: np.ndarray
    parabola: np.ndarray
    n_opt: float
    loss_opt: float
    n_opt_spline: float
    flag: str

    @property
    def trusted(self) -> bool:
        return not self.flag

    def summary(self) -> dict:
        return {
            "compute": self.compute,
            "sizes": int(self.n.size),
            "N_opt": self.n_opt,
            "N_opt_spline": self.n_opt_spline,
            "loss_opt": self.loss_opt,
            "trusted": self.trusted,
            "flag": self.flag,
        }


@dataclass(frozen=True)
class Approach2Result:
    """All profiles, and the power laws through the trusted minima (None if < 2)."""

    profiles: tuple[IsoFlopProfile, ...]
    from_curves: bool
    k: float
    n_law: PowerLaw | None
    d_law: PowerLaw | None
    n_law_spline: PowerLaw | None

    def summary(self) -> dict:
        return {
            "a": None if self.n_law is None else self.n_law.exponent,
            "b": None if self.d_law is None else self.d_law.exponent,
            "a_spline": None if self.n_law_spline is None else self.n_law_spline.exponent,
            "N_opt_coefficient": None if self.n_law is None else self.n_law.coefficient,
            "profiles_from": "training curves" if self.from_curves else "grouped final points",
            "profiles": [p.summary() for p in self.profiles],
        }


def fit_approach2(
    n_params: np.ndarray,
    compute: np.ndarray,
    loss: np.ndarray,
    curves: Sequence[Curve | None],
    k: float,
    *,
    budgets: Sequence[float] | None = None,
    n_budgets: int = 8,
    min_sizes: int = 4,
    group_dex: float = 0.05,
    edge_fraction: float = 0.1,
    window_dex: float = 1.0,
    with_spline: bool = True,
) -> Approach2Result:
    """IsoFLOP analysis of runs with N, final C and loss [runs] (and curves if any).

    ``budgets`` (FLOPs) default to ``n_budgets`` log-spaced values over the final computes;
    ``with_spline=False`` skips the smoothing-spline check (the bootstrap does not need it).
    """
    n_params = np.asarray(n_params, float)
    from_curves = any(c is not None for c in curves)
    if from_curves:
        if budgets is None:
            budgets = np.geomspace(compute.min(), compute.max(), n_budgets)
        slices = [_curve_slice(n_params, curves, c) for c in budgets]
    else:
        slices = _grouped_points(n_params, compute, loss, group_dex)
    profiles = tuple(
        _profile(c, n, l, edge_fraction, window_dex, with_spline)
        for c, n, l in slices
        if np.unique(n).size >= min_sizes
    )
    if not profiles:
        raise DataError(
            f"approach 2: no compute budget has {min_sizes} or more model sizes "
            f"({'interpolated curves' if from_curves else 'grouped final points'})"
        )
    trusted = [p for p in profiles if p.trusted]
    spline = [p for p in trusted if np.isfinite(p.n_opt_spline)]
    n_law = _law([p.compute for p in trusted], [p.n_opt for p in trusted])
    d_law = _law([p.compute for p in trusted], [p.compute / (k * p.n_opt) for p in trusted])
    return Approach2Result(
        profiles=profiles,
        from_curves=from_curves,
        k=k,
        n_law=n_law,
        d_law=d_law,
        n_law_spline=_law([p.compute for p in spline], [p.n_opt_spline for p in spline]),
    )


def _law(compute: list[float], values: list[float]) -> PowerLaw | None:
    return PowerLaw.fit(np.array(compute), np.array(values)) if len(compute) >= 2 else None


def _curve_slice(
    n_params: np.ndarray, curves: Sequence[Curve | None], budget: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """(budget, N [m], loss [m]) of every size whose curve spans ``budget``; best per size."""
    best: dict[float, float] = {}
    log_budget = np.log(budget)
    for n, curve in zip(n_params, curves, strict=True):
        if curve is None:
            continue
        log_flops = np.log(curve.flops)
        if log_flops[0] <= log_budget <= log_flops[-1]:
            value = float(np.interp(log_budget, log_flops, curve.loss))
            best[n] = min(value, best.get(n, np.inf))
    sizes = np.array(sorted(best))
    return budget, sizes, np.array([best[n] for n in sizes])


def _grouped_points(
    n_params: np.ndarray, compute: np.ndarray, loss: np.ndarray, group_dex: float
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Budgets formed by final points within ``group_dex`` decades of compute; best per size."""
    order = np.argsort(compute)
    log10_c = np.log10(compute[order])
    groups, start = [], 0
    for i in range(1, order.size + 1):
        if i == order.size or log10_c[i] - log10_c[start] > group_dex:
            members = order[start:i]
            best: dict[float, float] = {}
            for j in members:
                best[n_params[j]] = min(loss[j], best.get(n_params[j], np.inf))
            sizes = np.array(sorted(best))
            budget = float(10 ** log10_c[start:i].mean())
            groups.append((budget, sizes, np.array([best[n] for n in sizes])))
            start = i
    return groups


def _profile(
    compute: float,
    n: np.ndarray,
    loss: np.ndarray,
    edge_fraction: float,
    window_dex: float,
    with_spline: bool,
) -> IsoFlopProfile:
    """Parabola and spline fits of loss against log N at one budget, with the trust flag."""
    log_n = np.log(n)
    lowest = int(np.argmin(loss))
    near = np.abs(log_n - log_n[lowest]) <= window_dex * np.log(10.0)
    if near.sum() < MIN_PARABOLA_SIZES:
        near[:] = True
    parabola = np.polyfit(log_n[near], loss[near], 2)
    lo, hi = log_n[0], log_n[-1]
    if parabola[0] <= 0:
        vertex, flag = np.nan, "parabola opens downwards"
    else:
        vertex = -parabola[1] / (2 * parabola[0])
        position = (vertex - lo) / (hi - lo)
        if not 0.0 <= position <= 1.0:
            flag = "minimum outside the sampled sizes"
        elif lowest in (0, n.size - 1):
            flag = "lowest loss at the smallest or largest size"
        elif min(position, 1.0 - position) < edge_fraction:
            flag = "minimum far off-centre (near the edge of the sampled sizes)"
        else:
            flag = ""
    spline_min = np.nan
    if with_spline and n.size >= MIN_SPLINE_SIZES:
        spline = make_smoothing_spline(log_n, loss)
        fine = np.linspace(lo, hi, 512)
        spline_min = float(np.exp(fine[np.argmin(spline(fine))]))
    return IsoFlopProfile(
        compute=float(compute),
        n=n,
        loss=loss,
        parabola=parabola,
        n_opt=float(np.exp(vertex)),
        loss_opt=float(np.polyval(parabola, vertex)) if np.isfinite(vertex) else np.nan,
        n_opt_spline=spline_min,
        flag=flag,
    )

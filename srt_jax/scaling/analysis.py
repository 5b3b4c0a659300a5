"""Every fit of a results table in one call: what ``srt-jax fit`` computes.

:func:`analyse` runs approach 3 (the headline law), its identifiability, the bootstrap over
runs (approach-3 parameters, a, b, N*, D* and the loss at the target compute, plus the
approach-1/2 exponents where those approaches apply), approaches 1 and 2, the held-out
check, the extrapolation check and grade (:mod:`srt_jax.scaling.validation`), the
data-constrained law where runs repeat their data (:mod:`srt_jax.scaling.data_constrained`)
and the alternative laws (Kaplan, L(C) on the frontier, metric(C) per ranking metric). An
analysis
that does not apply to the data (no curves, too few sizes per budget) is recorded with the
reason instead of failing the whole fit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from srt_jax.errors import ConfigError, DataError, SrtJaxError
from srt_jax.scaling.approach1 import Approach1Result, fit_approach1
from srt_jax.scaling.approach2 import Approach2Result, fit_approach2
from srt_jax.scaling.approach3 import Approach3Fit, fit_approach3
from srt_jax.scaling.bootstrap import BootstrapResult, bootstrap_runs, default_workers
from srt_jax.scaling.data_constrained import analyse_data_constrained, repeats_data
from srt_jax.scaling.frontier import fit_compute_law, fit_metric_law, pareto_frontier
from srt_jax.scaling.identifiability import identifiability
from srt_jax.scaling.kaplan import fit_kaplan
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.points import ParamsKind, ScalingPoints
from srt_jax.scaling.predict import holdout_check
from srt_jax.scaling.validation import EXTRAPOLATION_RESAMPLES, extrapolation_check, grade
from srt_jax.scaling.warm_start import WarmStart, warm_start

DEFAULT_TARGET_FACTOR = 10.0
"""Without --target-compute, predictions are made at this multiple of the largest C."""


@dataclass(frozen=True)
class FitOptions:
    """Choices of one analysis (the ``srt-jax fit`` options).

    ``flops_per_param_token`` (k): None derives it as the median C / (N D) of the points.
    ``target_compute`` (FLOPs): None means 10x the largest compute in the data.
    ``extrapolation_factor``, ``max_extrapolation_error``: the extrapolation check and the
    grade of :mod:`srt_jax.scaling.validation`.
    ``workers``: processes fitting the bootstrap resamples (None: one per CPU, up to 8, from
    200 resamples; :func:`srt_jax.scaling.bootstrap.default_workers`).
    """

    params: ParamsKind = "total"
    target_compute: float | None = None
    bootstrap: int = 1000
    seed: int = 0
    delta: float = 1e-3
    flops_per_param_token: float | None = None
    holdout_fraction: float = 0.1
    isoflop_budgets: tuple[float, ...] | None = None
    envelope_points: int = 40
    smooth: int = 3
    show_progress: bool = True
    extrapolation_factor: float = 10.0
    max_extrapolation_error: float = 0.02
    workers: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "params": self.params in ("total", "non_embedding"),
            "bootstrap": self.bootstrap >= 0,
            "delta": self.delta > 0,
            "holdout_fraction": 0 <= self.holdout_fraction < 1,
            "target_compute": self.target_compute is None or self.target_compute > 0,
            "flops_per_param_token": self.flops_per_param_token is None
            or self.flops_per_param_token > 0,
            "envelope_points": self.envelope_points >= 2,
            "extrapolation_factor": self.extrapolation_factor >= 1,
            "max_extrapolation_error": self.max_extrapolation_error > 0,
            "smooth": self.smooth >= 1,
            "workers": self.workers is None or self.workers >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"fit option {key} = {getattr(self, key)!r} is out of range", key)


@dataclass(frozen=True)
class FitReport:
    """Everything :func:`analyse` computed (see the module doc); arrays are per run [runs]."""

    points: ScalingPoints
    options: FitOptions
    n: np.ndarray
    k: float
    k_derived: bool
    target_compute: float
    fit: Approach3Fit
    identifiability: dict
    bootstrap: BootstrapResult | None
    approach1: Approach1Result | None
    approach2: Approach2Result | None
    holdout: dict
    alternatives: dict
    extrapolation: dict
    grade: dict
    data_constrained: dict | None = None
    not_applicable: dict[str, str] = field(default_factory=dict)
    warm_start: WarmStart = field(default_factory=lambda: WarmStart(start=None))


def analyse(points: ScalingPoints, options: FitOptions) -> FitReport:
    """Fit ``points`` in every way ``options`` asks for."""
    n = points.params(options.params)
    per_run_k = points.flops_per_param_token(options.params)
    k_derived = options.flops_per_param_token is None
    k = float(np.median(per_run_k)) if k_derived else float(options.flops_per_param_token)
    target = options.target_compute or DEFAULT_TARGET_FACTOR * float(points.compute.max())
    fit = fit_approach3(n, points.tokens, points.loss, delta=options.delta)
    not_applicable: dict[str, str] = {}
    approach1 = _try(not_applicable, "approach1", lambda: _approach1(points, n, options))
    approach2 = _try(not_applicable, "approach2", lambda: _approach2(points, n, k, options))

    workers = options.workers or default_workers(options.bootstrap)
    warm = warm_start(
        points,
        options.params,
        fit.law,
        bootstrap=options.bootstrap,
        delta=options.delta,
        seed=options.seed,
        workers=workers,
        show_progress=options.show_progress,
    )
    estimator = functools.partial(
        _estimates,
        options=options,
        k=k,
        target=target,
        start=warm.start,
        with_approach1=approach1 is not None,
        approach2=approach2,
    )
    bootstrap = (
        bootstrap_runs(
            points,
            estimator,
            options.bootstrap,
            options.seed,
            workers=workers,
            show_progress=options.show_progress,
        )
        if options.bootstrap
        else None
    )
    extrapolation = extrapolation_check(
        points,
        options.params,
        factor=options.extrapolation_factor,
        delta=options.delta,
        resamples=min(options.bootstrap, EXTRAPOLATION_RESAMPLES),
        seed=options.seed,
        workers=workers,
        show_progress=options.show_progress,
    )
    data_constrained = None
    if (reason := repeats_data(points)) is not None:
        not_applicable["data_constrained"] = reason
    else:
        data_constrained = _try(
            not_applicable,
            "data_constrained",
            lambda: analyse_data_constrained(
                points,
                n,
                delta=options.delta,
                factor=options.extrapolation_factor,
                plain_objective=fit.objective,
            ),
        )
    return FitReport(
        points=points,
        options=options,
        n=n,
        k=k,
        k_derived=k_derived,
        target_compute=target,
        fit=fit,
        identifiability=identifiability(fit, n, points.tokens, points.loss),
        bootstrap=bootstrap,
        approach1=approach1,
        approach2=approach2,
        holdout=holdout_check(
            points.run_id,
            n,
            points.tokens,
            points.compute,
            points.loss,
            fraction=options.holdout_fraction,
            delta=options.delta,
        )
        if options.holdout_fraction > 0
        else {"skipped": "holdout fraction is 0"},
        alternatives=_alternatives(points, n, options, not_applicable),
        extrapolation=extrapolation,
        grade=grade(
            fit,
            bootstrap,
            extrapolation,
            options.max_extrapolation_error,
            n=n,
            tokens=points.tokens,
            compute=points.compute,
            unique_tokens=points.unique_tokens,
        ),
        data_constrained=data_constrained,
        not_applicable=not_applicable,
        warm_start=warm,
    )


def law_estimates(fit: Approach3Fit, k: float, target: float) -> dict[str, float]:
    """Law parameters, a, b, G and the compute-optimal N*, D*, L* at ``target`` FLOPs."""
    law = fit.law
    with np.errstate(all="ignore"):  # A or B -> 0 (no trend in N or D) gives inf, kept as is
        return {
            **law.as_dict(),
            "N_opt": float(law.optimal_params(target, k)),
            "D_opt": float(law.optimal_tokens(target, k)),
            "loss_at_target": float(law.frontier_loss(target, k)),
        }


def _estimates(
    sample: ScalingPoints,
    options: FitOptions,
    k: float,
    target: float,
    start: ChinchillaLaw | None,
    with_approach1: bool,
    approach2: Approach2Result | None,
) -> dict[str, float]:
    """Bootstrap estimator: approach 3 (refitted from ``start``, the law of all the points,
    where :mod:`srt_jax.scaling.warm_start` allows; else a full search) always; approach 1/2
    exponents where they apply."""
    n = sample.params(options.params)
    fit = fit_approach3(n, sample.tokens, sample.loss, delta=options.delta, start=start)
    out = law_estimates(fit, k, target)
    if with_approach1:
        found = _try({}, "approach1", lambda: _approach1(sample, n, options))
        if found is not None:
            out["approach1_a"], out["approach1_b"] = found.n_law.exponent, found.d_law.exponent
    if approach2 is not None:
        budgets = tuple(p.compute for p in approach2.profiles) if approach2.from_curves else None
        found = _try(
            {}, "approach2", lambda: _approach2(sample, n, k, options, budgets, with_spline=False)
        )
        if found is not None and found.n_law is not None:
            out["approach2_a"], out["approach2_b"] = found.n_law.exponent, found.d_law.exponent
    return out


def _approach1(points: ScalingPoints, n: np.ndarray, options: FitOptions) -> Approach1Result:
    if not points.has_curves:
        raise DataError("no training curves in the source")
    return fit_approach1(
        points.curves, n, points.run_id, n_compute=options.envelope_points, smooth=options.smooth
    )


def _approach2(
    points: ScalingPoints,
    n: np.ndarray,
    k: float,
    options: FitOptions,
    budgets: tuple[float, ...] | None = None,
    with_spline: bool = True,
) -> Approach2Result:
    return fit_approach2(
        n,
        points.compute,
        points.loss,
        points.curves if points.curves else [None] * len(points),
        k,
        budgets=budgets or options.isoflop_budgets,
        with_spline=with_spline,
    )


def _alternatives(
    points: ScalingPoints, n: np.ndarray, options: FitOptions, not_applicable: dict[str, str]
) -> dict:
    """Kaplan's law, L(C) on the loss frontier and m(C) on each metric's frontier."""
    out = {"kaplan": fit_kaplan(n, points.tokens, points.loss, options.delta)}
    on_frontier = pareto_frontier(points.compute, points.loss, lower_is_better=True)
    compute_law = _try(
        not_applicable,
        "compute_law",
        lambda: fit_compute_law(
            points.compute[on_frontier], points.loss[on_frontier], options.delta
        ),
    )
    if compute_law is not None:
        out["compute_law"] = compute_law
    metric_laws = {}
    for name, values in sorted(points.metrics.items()):
        best = pareto_frontier(points.compute, values, lower_is_better=False)
        law = _try(
            not_applicable,
            f"metric_law {name}",
            lambda best=best, values=values: fit_metric_law(points.compute[best], values[best]),
        )
        if law is not None:
            metric_laws[name] = law
    out["metric_laws"] = metric_laws
    return out


def _try(not_applicable: dict[str, str], name: str, compute):
    """``compute()``, or None with the reason recorded when the data do not allow it."""
    try:
        return compute()
    except SrtJaxError as err:
        not_applicable[name] = str(err)
        return None

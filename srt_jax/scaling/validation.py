"""Does the data support the fit? The extrapolation check and the grade of every fit.

Extrapolation check (Besiroglu et al. 2024's advice, and what a user buying compute needs):
the runs at the largest budget (compute within :data:`BUDGET_TOLERANCE` of the largest
run's) are predicted by approach 3 refitted only on the runs at budgets at most
``C_max / factor``; the report gives each prediction's relative error and its bootstrap
interval (resampling the fitted runs), and whether the observed loss lies inside.

Grade: a fit is *supported* when

- ``converged``: approach 3's optimiser converged;
- ``identifiable``: both exponents have a bootstrap interval narrower than their estimate
  (relative width ``(hi - lo) / estimate`` at most :data:`MAX_EXPONENT_WIDTH`), and both
  terms matter: ``A / N^alpha`` and ``B / D^beta`` each reach at least
  :data:`MIN_TERM_SHARE` of the fitted loss at some run (a term fitted to about 0 leaves
  its exponent anywhere: the optimiser stops wherever it started);
- ``extrapolates``: the extrapolation check ran and its mean absolute relative error is at
  most ``max_error``.

A check that cannot run (no bootstrap, too few small-budget runs) fails with its reason; the
reasons of every failed check are listed first in the report and in ``fit.json``.

The check also predicts each ranking metric (``metrics``): the metric law of the compute
frontier (:func:`srt_jax.scaling.frontier.fit_metric_law`, saturating where identified,
else log-linear), refitted on the same small-budget runs, against the best value observed
at the largest budget. It is reported, not graded: the grade is about the loss law.
"""

from __future__ import annotations

import functools

import numpy as np

from srt_jax.scaling.approach3 import Approach3Fit, fit_approach3
from srt_jax.scaling.bootstrap import BootstrapResult, bootstrap_runs
from srt_jax.scaling.frontier import fit_metric_law, law_values, pareto_frontier
from srt_jax.scaling.needs import data_needs
from srt_jax.scaling.points import ParamsKind, ScalingPoints
from srt_jax.scaling.predict import MIN_FIT_RUNS

BUDGET_TOLERANCE = 1.5
"""Runs whose compute is at least ``C_max / BUDGET_TOLERANCE`` are at the largest budget."""
MAX_EXPONENT_WIDTH = 1.0
MIN_TERM_SHARE = 1e-3
"""Share of the fitted loss below which a term of the law is taken to be absent."""
EXTRAPOLATION_RESAMPLES = 200
"""Bootstrap resamples of the extrapolation check's refit (fewer than the headline's)."""


def extrapolation_check(
    points: ScalingPoints,
    params: ParamsKind,
    *,
    factor: float,
    delta: float,
    resamples: int,
    seed: int,
    workers: int = 1,
    show_progress: bool = False,
) -> dict:
    """Refit on the runs at budgets <= C_max / ``factor``; predict the largest budget's runs.

    Args:
      points: every run; ``params``: which parameter count is N.
      factor: how far (in compute) the refit extrapolates, >= 1.
      delta: Huber threshold of approach 3.
      resamples: bootstrap resamples of the refit for the prediction intervals (0: none).
      seed: their seed; workers: processes fitting them; show_progress: a progress bar.

    Returns:
      JSON-ready: ``skipped`` with the reason, or the runs used, the per-run predictions
      with intervals and the mean / max absolute relative error.
    """
    compute, n = points.compute, points.params(params)
    split = extrapolation_split(compute, factor)
    if isinstance(split, str):
        return {"skipped": split, "factor": factor}
    train, held = split
    fit = fit_approach3(n[train], points.tokens[train], points.loss[train], delta=delta)
    predicted = fit.law.loss(n[held], points.tokens[held])
    relative = predicted / points.loss[held] - 1.0
    intervals = None
    if resamples:
        predict = functools.partial(
            _held_losses,
            params=params,
            delta=delta,
            n_held=n[held],
            d_held=points.tokens[held],
        )
        result = bootstrap_runs(
            points.take(train),
            predict,
            resamples,
            seed,
            workers=workers,
            show_progress=show_progress,
            label="extrapolation check",
        )
        intervals = [result.interval(str(j)) for j in range(held.size)]
    per_run = []
    for j, i in enumerate(held):
        row = {
            "run_id": str(points.run_id[i]),
            "compute": float(compute[i]),
            "observed": float(points.loss[i]),
            "predicted": float(predicted[j]),
            "relative_error": float(relative[j]),
        }
        if intervals is not None:
            lo, hi = intervals[j]
            row["interval"] = [lo, hi]
            row["inside"] = bool(lo <= points.loss[i] <= hi)
        per_run.append(row)
    return {
        "factor": factor,
        "fit_on_runs": int(train.size),
        "fit_compute_max": float(compute[train].max()),
        "predicted_runs": int(held.size),
        "largest_compute": float(compute.max()),
        "refit": fit.law.as_dict(),
        "refit_converged": fit.converged,
        "mean_abs_relative_error": float(np.mean(np.abs(relative))),
        "max_abs_relative_error": float(np.max(np.abs(relative))),
        "resamples": resamples,
        "per_run": per_run,
        "metrics": metric_predictions(points, train, held),
    }


def budget_groups(compute: np.ndarray) -> list[np.ndarray]:
    """Indices of ``compute`` [runs] grouped by budget: sorted, a new group wherever the
    compute grows by more than :data:`BUDGET_TOLERANCE` over the group's first run."""
    order = np.argsort(compute, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and compute[i] <= compute[groups[-1][0]] * BUDGET_TOLERANCE:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.array(group) for group in groups]


def metric_predictions(points: ScalingPoints, train: np.ndarray, held: np.ndarray) -> dict:
    """Each ranking metric's best value at the largest budget (runs ``held``) predicted by
    its law through the best value of each budget among the runs ``train`` (at the budget's
    geometric-mean compute): observed, predicted, relative error, form (JSON-ready; a metric
    with fewer than 2 budgets on its frontier is left out)."""
    out = {}
    largest = float(points.compute[held].max())
    budgets = [train[group] for group in budget_groups(points.compute[train])]
    for name, values in sorted(points.metrics.items()):
        if "@" not in name and "_at_" not in name:  # ndcg@10, ndcg_at_5; not "step"
            continue
        compute, best = [], []
        for runs in budgets:
            finite = runs[np.isfinite(values[runs])]
            if finite.size:
                compute.append(float(np.exp(np.log(points.compute[finite]).mean())))
                best.append(float(values[finite].max()))
        compute, best = np.array(compute), np.array(best)
        frontier = pareto_frontier(compute, best, lower_is_better=False)
        observed = np.nanmax(values[held]) if np.isfinite(values[held]).any() else np.nan
        if frontier.size < 2 or not np.isfinite(observed):
            continue
        law = fit_metric_law(compute[frontier], best[frontier])
        saturating = law["saturating"]
        if saturating.get("identified"):
            predicted = float(law_values(saturating["law"], np.array([largest]))[0])
            form = "M_inf - A (C/C0)^-alpha"
        else:
            predicted = float(law["a"] + law["b"] * np.log(largest))
            form = law["form"]
        out[name] = {
            "observed": float(observed),
            "predicted": predicted,
            "relative_error": predicted / float(observed) - 1.0,
            "form": form,
        }
    return out


def extrapolation_split(compute: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray] | str:
    """The runs [runs] a check refits on (budgets <= C_max / ``factor``) and those it
    predicts (the largest budget), as index arrays; or why there are too few to refit."""
    fitted = np.flatnonzero(compute <= compute.max() / factor)
    if fitted.size < MIN_FIT_RUNS:
        return (
            f"only {fitted.size} runs at budgets <= C_max / {factor:g} = "
            f"{compute.max() / factor:.3g} FLOPs (need {MIN_FIT_RUNS})"
        )
    return fitted, np.flatnonzero(compute >= compute.max() / BUDGET_TOLERANCE)


def _held_losses(
    sample: ScalingPoints,
    params: ParamsKind,
    delta: float,
    n_held: np.ndarray,
    d_held: np.ndarray,
) -> dict[str, float]:
    """Bootstrap estimator of the extrapolation check: the held runs' losses [held] predicted
    by approach 3 refitted to ``sample``, keyed by their position ("0", "1", ...)."""
    law = fit_approach3(sample.params(params), sample.tokens, sample.loss, delta=delta).law
    return {str(j): float(v) for j, v in enumerate(law.loss(n_held, d_held))}


def grade(
    fit: Approach3Fit,
    bootstrap: BootstrapResult | None,
    extrapolation: dict,
    max_error: float,
    *,
    n: np.ndarray,
    tokens: np.ndarray,
    compute: np.ndarray,
    unique_tokens: np.ndarray | None = None,
) -> dict:
    """``{"supported", "checks": {name: {"ok", "detail"}}, "reasons", "needs"}`` (module
    docstring); ``n``, ``tokens``, ``compute`` and ``unique_tokens`` [runs] are the fitted
    runs' N, D, C and unique target tokens. ``needs`` says, for an unsupported fit, what
    more runs or data would fix it (:func:`srt_jax.scaling.needs.data_needs`)."""
    checks = {
        "converged": {
            "ok": bool(fit.converged),
            "detail": "the optimiser converged"
            if fit.converged
            else "approach 3's optimiser did not converge",
        },
        "identifiable": _identifiable(fit, bootstrap, n, tokens),
        "extrapolates": _extrapolates(extrapolation, max_error),
    }
    reasons = [check["detail"] for check in checks.values() if not check["ok"]]
    needs = (
        data_needs(
            checks,
            n=n,
            tokens=tokens,
            compute=compute,
            unique_tokens=unique_tokens,
            max_width=MAX_EXPONENT_WIDTH,
            min_share=MIN_TERM_SHARE,
            factor=extrapolation["factor"],
            min_fit_runs=MIN_FIT_RUNS,
        )
        if reasons
        else []
    )
    return {"supported": not reasons, "checks": checks, "reasons": reasons, "needs": needs}


def _identifiable(
    fit: Approach3Fit, bootstrap: BootstrapResult | None, n: np.ndarray, tokens: np.ndarray
) -> dict:
    law = fit.law
    fitted = law.loss(n, tokens)
    shares = {
        "alpha": float(np.max(law.A * n**-law.alpha / fitted)),
        "beta": float(np.max(law.B * tokens**-law.beta / fitted)),
    }
    absent = [
        f"the {'N' if name == 'alpha' else 'D'} term is at most {share:.2%} of the fitted "
        f"loss, so {name} is not identified"
        for name, share in shares.items()
        if share < MIN_TERM_SHARE
    ]
    if bootstrap is None:
        return {
            "ok": False,
            "detail": "; ".join(["no bootstrap (--bootstrap 0): exponents not checked", *absent]),
            "term_shares": shares,
        }
    widths = {}
    for name in ("alpha", "beta"):
        lo, hi = bootstrap.interval(name)
        estimate = float(fit.law.as_dict()[name])
        widths[name] = (hi - lo) / estimate if estimate > 0 and np.isfinite(hi - lo) else np.inf
    shown = ", ".join(f"{k}'s 95% interval is {w:.0%} of its estimate" for k, w in widths.items())
    ok = all(w <= MAX_EXPONENT_WIDTH for w in widths.values()) and not absent
    shown = "; ".join([shown, *absent])
    detail = shown if ok else f"exponents not identified by the data: {shown}"
    return {"ok": ok, "detail": detail, "relative_widths": widths, "term_shares": shares}


def _extrapolates(extrapolation: dict, max_error: float) -> dict:
    if "skipped" in extrapolation:
        return {"ok": False, "detail": f"extrapolation not checked: {extrapolation['skipped']}"}
    error = extrapolation["mean_abs_relative_error"]
    ok = error <= max_error
    return {
        "ok": ok,
        "detail": (
            f"fitted on budgets <= C_max / {extrapolation['factor']:g}, the largest budget's "
            f"loss is predicted within {error:.2%} (limit {max_error:.0%})"
        ),
    }

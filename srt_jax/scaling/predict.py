"""Predictions: the held-out check and bootstrap bands of the compute-optimal frontier.

Held-out check: the runs are ordered by training compute; the top ``fraction`` of them (at
least one) are held out, approach 3 is refitted on the rest, and the refitted law predicts
the held-out losses from their N and D. Errors are relative: predicted / observed - 1.

Bands: every bootstrap law gives N*(C), D*(C), L*(C) along a compute grid; the percentile
band of those curves is the interval drawn around the frontier.
"""

from __future__ import annotations

import warnings

import numpy as np

from srt_jax.scaling.approach3 import fit_approach3
from srt_jax.scaling.laws import ChinchillaLaw

MIN_FIT_RUNS = 6


def holdout_check(
    run_id: np.ndarray,
    n: np.ndarray,
    d: np.ndarray,
    compute: np.ndarray,
    loss: np.ndarray,
    *,
    fraction: float,
    delta: float,
) -> dict:
    """Refit on all but the largest-compute runs (arrays [runs]); JSON-ready prediction errors."""
    count = max(1, round(fraction * compute.size))
    order = np.argsort(compute, kind="stable")
    kept, held = order[:-count], order[-count:]
    if kept.size < MIN_FIT_RUNS:
        return {"skipped": f"only {kept.size} runs would remain to fit (need {MIN_FIT_RUNS})"}
    fit = fit_approach3(n[kept], d[kept], loss[kept], delta=delta)
    predicted = fit.law.loss(n[held], d[held])
    relative = predicted / loss[held] - 1.0
    return {
        "held_out_runs": int(count),
        "fraction": fraction,
        "compute_from": float(compute[held].min()),
        "fit_on_runs": int(kept.size),
        "refit": fit.law.as_dict(),
        "refit_converged": fit.converged,
        "mean_abs_relative_error": float(np.mean(np.abs(relative))),
        "max_abs_relative_error": float(np.max(np.abs(relative))),
        "per_run": [
            {
                "run_id": str(run_id[i]),
                "compute": float(compute[i]),
                "observed": float(loss[i]),
                "predicted": float(p),
                "relative_error": float(r),
            }
            for i, p, r in zip(held, predicted, relative, strict=True)
        ],
    }


def allocation_bands(
    samples: dict[str, np.ndarray], k: float, compute: np.ndarray, level: float = 0.95
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bootstrap bands of N*(C), D*(C) and L*(C) along ``compute`` [grid].

    ``samples`` holds per-resample law parameters (E, A, B, alpha, beta, arrays
    [resamples]); the result maps "N_opt", "D_opt" and "loss" to (low [grid], high [grid])
    percentile bands over the resamples whose value there is finite (NaN where none is).
    """
    keep = np.all([np.isfinite(samples[p]) for p in ("E", "A", "B", "alpha", "beta")], axis=0)
    laws = [
        ChinchillaLaw(*(float(samples[p][i]) for p in ("E", "A", "B", "alpha", "beta")))
        for i in np.flatnonzero(keep)
    ]
    with np.errstate(all="ignore"):  # degenerate resamples (A or B -> 0) give inf: dropped
        curves = {
            "N_opt": np.array([law.optimal_params(compute, k) for law in laws]),
            "D_opt": np.array([law.optimal_tokens(compute, k) for law in laws]),
            "loss": np.array([law.frontier_loss(compute, k) for law in laws]),
        }
    tail = 50.0 * (1.0 - level)
    bands = {}
    for name, values in curves.items():
        values = np.where(np.isfinite(values), values, np.nan).reshape(-1, compute.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            bands[name] = tuple(np.nanpercentile(values, [tail, 100.0 - tail], axis=0))
    return bands

"""Data-constrained scaling (Muennighoff et al. 2023): repeated tokens are worth less.

A run that trains D target tokens on data holding U unique ones repeats the data
R = D / U - 1 times beyond its first epoch. Its effective data is

    D' = min(D, U) + U R* (1 - exp(-R / R*)),

the first epoch in full and each further repetition a little less, so that no amount of
repetition is worth more than U (1 + R*) fresh tokens. The law is Chinchilla's with D' in
place of D: L(N, D, U) = E + A / N^alpha + B / D'^beta. R* (repetitions at which their
value has decayed by 1/e) is fitted beside the five law parameters: for each R* on a log
grid approach 3 fits the law to (N, D'); a bounded scalar search then refines the best grid
value. R* at the top of its range means repeated tokens were worth as much as fresh ones
(the plain law), at the bottom that they were worth nothing; neither is an identified R*.
Muennighoff's second correction, for parameters in excess of what U unique tokens can use
(R_N*), is not fitted: it needs sweeps that vary N far beyond the data's optimal size.

The fit is validated like the plain law (:mod:`srt_jax.scaling.validation`): refitted on the
runs at budgets <= C_max / factor, it predicts the runs at the largest budget, and the
errors of both laws are reported side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from srt_jax.scaling.approach3 import fit_approach3
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.points import ScalingPoints
from srt_jax.scaling.validation import extrapolation_split

R_STAR_BOUNDS = (0.1, 1000.0)
"""The range searched for R*, in repetitions."""
R_STAR_GRID = np.geomspace(*R_STAR_BOUNDS, 13)
AT_BOUND = 1.05
"""R* within this factor of either bound is reported as not identified."""
EPOCHS_SPREAD = 1.5
"""R* is identified only if the runs' epochs span at least this factor."""


def effective_tokens(
    tokens: np.ndarray | float, unique: np.ndarray | float, r_star: float
) -> np.ndarray:
    """D' [runs]: the fresh-token worth of ``tokens`` trained on ``unique`` unique tokens."""
    tokens, unique = np.asarray(tokens, float), np.asarray(unique, float)
    repeats = np.maximum(tokens / unique - 1.0, 0.0)
    return np.minimum(tokens, unique) - unique * r_star * np.expm1(-repeats / r_star)


@dataclass(frozen=True)
class DataConstrainedFit:
    """The data-constrained law: ``law`` on (N, D'(``r_star``)); ``objective`` is approach
    3's summed Huber loss, to compare with the plain law's on the same points."""

    law: ChinchillaLaw
    r_star: float
    objective: float = float("nan")
    converged: bool = True

    @classmethod
    def from_record(cls, record: dict) -> DataConstrainedFit:
        """From :meth:`as_dict` (fit.json's ``data_constrained.law``)."""
        law = ChinchillaLaw(*(float(record[key]) for key in ("E", "A", "B", "alpha", "beta")))
        return cls(law, float(record["R_star"]), record["objective"], record["converged"])

    @property
    def identified(self) -> bool:
        low, high = R_STAR_BOUNDS
        return low * AT_BOUND < self.r_star < high / AT_BOUND

    def loss(self, n: np.ndarray | float, tokens: np.ndarray | float, unique) -> np.ndarray:
        """Predicted loss of N parameters trained on ``tokens`` over ``unique`` tokens."""
        return self.law.loss(n, effective_tokens(tokens, unique, self.r_star))

    def optimal(self, compute: float, k: float, unique: float) -> dict[str, float]:
        """The allocation C = k N D minimising this law's loss when only ``unique`` tokens
        exist: ``N_opt``, ``D_opt``, ``epochs``, ``effective_tokens``, ``loss``."""

        def loss_at(log_n: float) -> float:
            n = np.exp(log_n)
            return float(self.loss(n, compute / (k * n), unique))

        plain = float(np.log(self.law.optimal_params(compute, k)))
        result = minimize_scalar(loss_at, bounds=(plain - 12.0, plain + 12.0), method="bounded")
        n = float(np.exp(result.x))
        d = compute / (k * n)
        return {
            "N_opt": n,
            "D_opt": d,
            "epochs": d / unique,
            "effective_tokens": float(effective_tokens(d, unique, self.r_star)),
            "loss": float(result.fun),
        }

    def as_dict(self) -> dict:
        return {
            **self.law.as_dict(),
            "R_star": self.r_star,
            "R_star_identified": self.identified,
            "objective": self.objective,
            "converged": self.converged,
        }


def repeats_data(points: ScalingPoints) -> str | None:
    """None if the data-constrained law can be fitted to ``points``, else why not."""
    if points.unique_tokens is None:
        return "the runs do not record their unique tokens (U)"
    if not np.isfinite(points.unique_tokens).all():
        missing = int((~np.isfinite(points.unique_tokens)).sum())
        return f"{missing} run(s) do not record their unique tokens (U)"
    if not (points.tokens > points.unique_tokens * 1.001).any():
        return "no run repeats its data (D <= U everywhere)"
    return None


def fit_data_constrained(
    n: np.ndarray, tokens: np.ndarray, unique: np.ndarray, loss: np.ndarray, *, delta: float
) -> DataConstrainedFit:
    """Fit R* and the law L(N, D'(R*)) to runs [runs] (module docstring)."""

    def objective(log_r: float) -> float:
        d_eff = effective_tokens(tokens, unique, float(np.exp(log_r)))
        return fit_approach3(n, d_eff, loss, delta=delta).objective

    logs = np.log(R_STAR_GRID)
    values = [objective(v) for v in logs]
    best = int(np.argmin(values))
    low, high = logs[max(best - 1, 0)], logs[min(best + 1, len(logs) - 1)]
    refined = minimize_scalar(objective, bounds=(low, high), method="bounded")
    log_r = float(refined.x) if refined.fun <= values[best] else float(logs[best])
    r_star = float(np.exp(log_r))
    fit = fit_approach3(n, effective_tokens(tokens, unique, r_star), loss, delta=delta)
    return DataConstrainedFit(fit.law, r_star, fit.objective, fit.converged)


def analyse_data_constrained(
    points: ScalingPoints, n: np.ndarray, *, delta: float, factor: float, plain_objective: float
) -> dict:
    """The data-constrained fit of ``points`` and its extrapolation check (JSON-ready).

    Keys: ``law`` (E, A, B, alpha, beta, R_star, R_star_identified with R_star_reason when
    the runs' epochs span less than :data:`EPOCHS_SPREAD`, objective, converged),
    ``plain_objective``, ``max_epochs``, ``runs_repeating``, ``extrapolation`` (refit on
    the runs at budgets <= C_max / ``factor``; mean / max absolute relative error of the
    largest budget's runs, or ``skipped`` with the reason).
    """
    unique = points.unique_tokens
    dc = fit_data_constrained(n, points.tokens, unique, points.loss, delta=delta)
    epochs = points.tokens / unique
    law = dc.as_dict()
    if epochs.max() < EPOCHS_SPREAD * epochs.min():
        law["R_star_identified"] = False
        law["R_star_reason"] = (
            f"every run reads its data {epochs.min():.3g} to {epochs.max():.3g} times: with "
            "one repetition count R* only rescales B"
        )
    return {
        "form": "L = E + A / N^alpha + B / D'^beta, D' = min(D, U) + U R* (1 - exp(-R / R*)), "
        "R = D / U - 1",
        "law": law,
        "plain_objective": plain_objective,
        "max_epochs": float(epochs.max()),
        "runs_repeating": int((epochs > 1.001).sum()),
        "extrapolation": _extrapolation(points, n, delta, factor),
    }


def _extrapolation(points: ScalingPoints, n: np.ndarray, delta: float, factor: float) -> dict:
    split = extrapolation_split(points.compute, factor)
    if isinstance(split, str):
        return {"skipped": split}
    fitted, held = split
    unique = points.unique_tokens
    refit = fit_data_constrained(
        n[fitted], points.tokens[fitted], unique[fitted], points.loss[fitted], delta=delta
    )
    predicted = refit.loss(n[held], points.tokens[held], unique[held])
    relative = predicted / points.loss[held] - 1.0
    return {
        "factor": factor,
        "fit_on_runs": int(fitted.size),
        "predicted_runs": int(held.size),
        "refit_R_star": refit.r_star,
        "mean_abs_relative_error": float(np.mean(np.abs(relative))),
        "max_abs_relative_error": float(np.max(np.abs(relative))),
    }

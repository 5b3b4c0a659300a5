"""L-BFGS-B on Huber objectives: one start, or the best of many starts.

Tolerances are explicit. scipy's defaults (ftol 2.2e-9 relative, gtol 1e-5 absolute) are
too loose for objectives of order 1e-3 whose gradients are of order 1e-4 near a start;
:data:`TIGHT` makes the optimiser stop on a stalled objective, not on a small gradient.

L-BFGS-B calls BLAS on matrices of a few rows; with OpenBLAS's worker threads competing
with other processes for the cores each call can stall for milliseconds, so every fit here
runs inside :func:`single_threaded_blas`.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from threadpoolctl import ThreadpoolController

from srt_jax.errors import DataError
from srt_jax.progress import progress_bar
from srt_jax.scaling.objective import Reduction, ResidualFn, huber_objective

TIGHT = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}
"""L-BFGS-B options used for every fit in this package (maxiter is a safety stop)."""


@dataclass(frozen=True)
class LbfgsResult:
    """The end point of one L-BFGS-B run.

    ``converged`` is scipy's success flag: it stopped on a tolerance, not on the iteration
    limit or a failed line search. ``grad_norm`` is the infinity norm of the final gradient.
    """

    theta: np.ndarray
    objective: float
    converged: bool
    message: str
    iterations: int
    grad_norm: float

    @classmethod
    def from_scipy(cls, result: OptimizeResult) -> LbfgsResult:
        """From the result of ``scipy.optimize.minimize(..., jac=True)``."""
        return cls(
            theta=np.asarray(result.x, float),
            objective=float(result.fun),
            converged=bool(result.success),
            message=str(result.message),
            iterations=int(result.nit),
            grad_norm=float(np.max(np.abs(result.jac))),
        )

    def summary(self) -> dict:
        """JSON-ready summary (without theta)."""
        return {
            "converged": self.converged,
            "message": self.message,
            "iterations": self.iterations,
            "objective": self.objective,
            "grad_norm": self.grad_norm,
        }


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # created after scipy.optimize loaded its BLAS


def single_threaded_blas() -> AbstractContextManager:
    """Context in which the BLAS libraries loaded by numpy and scipy use one thread."""
    return _blas_controller().limit(limits=1, user_api="blas")


def minimize_huber(
    residual_fn: ResidualFn,
    theta0: np.ndarray,
    delta: float,
    *,
    reduction: Reduction = "sum",
    bounds: list[tuple[float | None, float | None]] | None = None,
    options: dict | None = None,
) -> LbfgsResult:
    """Minimise the Huber objective of ``residual_fn`` from ``theta0`` with L-BFGS-B.

    ``options`` defaults to :data:`TIGHT`; pass ``{}`` for scipy's own defaults.
    """
    with single_threaded_blas():
        result = minimize(
            lambda theta: huber_objective(residual_fn, theta, delta, reduction),
            np.asarray(theta0, float),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=TIGHT if options is None else options,
        )
    return LbfgsResult.from_scipy(result)


def many_start_fit(
    residual_fn: ResidualFn,
    starts: np.ndarray,
    delta: float,
    *,
    reduction: Reduction = "sum",
    bounds: list[tuple[float | None, float | None]] | None = None,
    options: dict | None = None,
    show_progress: bool = False,
) -> LbfgsResult:
    """Run :func:`minimize_huber` from every row of ``starts`` [starts, p]; keep the best."""
    best: LbfgsResult | None = None
    starts = np.asarray(starts, float)
    with progress_bar(len(starts), "L-BFGS starts", disable=not show_progress) as bar:
        for theta0 in starts:
            result = minimize_huber(
                residual_fn, theta0, delta, reduction=reduction, bounds=bounds, options=options
            )
            if np.isfinite(result.objective) and (
                best is None or result.objective < best.objective
            ):
                best = result
            bar.update(1)
    if best is None:
        raise DataError("every start of the fit gave a non-finite objective")
    return best


def start_grid(*axes: np.ndarray) -> np.ndarray:
    """Cartesian product of per-parameter start values, shape [prod(len(axis)), n_axes]."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.column_stack([m.ravel() for m in mesh])

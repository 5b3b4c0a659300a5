"""Approach 3: the Chinchilla law fitted by summed Huber loss with variable projection.

For fixed exponents (alpha, beta) the law L_hat = E + A x + B y with x = N^-alpha,
y = D^-beta is linear in (E, A, B), so the five-parameter search reduces to two:

1. Inner problem, for a batch of exponent pairs at once (numpy, no Python loop per pair):
   minimise sum_i Huber(log(E + A x_i + B y_i) - log L_i) over (E, A, B) >= 0. It starts
   from the least-squares fit of the relative error (E + A x + B y) / L - 1 (non-negative
   least squares where the plain solve goes negative), then takes Newton steps on the exact
   log residual r_i: the Huber gradient, and a Gauss-Newton curvature with weight 1 for
   points inside the threshold and a tenth of the IRLS weight delta/|r_i| outside it (the
   IRLS weight alone converges slowly, zero makes the system singular). A step that raises
   the objective is undone and the next one halved, so the objective never rises.
2. Outer search: the profile f(alpha, beta) = min over (E, A, B) is evaluated on a grid of
   exponent pairs; L-BFGS-B then minimises it from the best grid pair, using the envelope
   theorem for its gradient (the partial derivatives of the full objective at the inner
   optimum).
3. Polish: a five-parameter L-BFGS-B on (e, a, b, alpha, beta) from that point, in centred
   coordinates (a - alpha mean(log N), b - beta mean(log D)) that decouple each amplitude
   from its exponent; the reported objective and convergence flags are this run's.

A refit of resampled points (the bootstrap) may pass the law fitted to all of them as
``start``: then only the polish runs, from that law, which is five times faster. If it does
not converge or ends with an exponent on a bound, the full search runs after all. On the
Chinchilla set's resamples the two reach the same objective (tests/test_scaling_fit.py); on
data that barely constrain the law they may not, so the bootstrap checks first
(:mod:`srt_jax.scaling.warm_start`).

Exponents stay within EXPONENT_BOUNDS in both searches (an exponent on a bound is
reported: the data then show no power-law trend in that variable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, nnls

from srt_jax.errors import DataError
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.lbfgs import TIGHT, LbfgsResult, minimize_huber, single_threaded_blas
from srt_jax.scaling.objective import chinchilla_residuals, huber, huber_objective

EXPONENT_GRID = np.linspace(0.05, 1.5, 8)
"""Default grid of starting values for alpha and for beta (their product is searched)."""
EXPONENT_BOUNDS = (1e-3, 4.0)
"""Range of alpha and beta allowed in the profile search."""
OUTSIDE_CURVATURE = 0.1
"""Inner Gauss-Newton weight of a point outside the Huber threshold, as a fraction of its
IRLS weight delta/|r| (its true curvature is 0; the full IRLS weight converges slowly)."""
GRID_ITERATIONS = 12
"""Inner iterations per grid pair: enough to rank the pairs, not to converge them all."""
PROFILE_RTOL = 1e-11
"""Relative objective change at which an inner solve inside the exponent search stops."""
MIN_POINTS = 5
"""Fewest points a fit accepts: one per parameter of the law."""


@dataclass(frozen=True)
class Approach3Fit:
    """A fitted Chinchilla law with the record of how the optimiser got there.

    ``objective`` is the summed Huber loss (delta) of log residuals over ``n_points``;
    ``grid_best`` the best (alpha, beta) of the exponent grid; ``profile`` the 2-D L-BFGS
    over exponents and ``polish`` the final 5-parameter L-BFGS (its theta is centred).
    A refit from a ``start`` law that needed no search has ``grid_best`` and ``profile``
    None and ``started_from`` that law.
    """

    law: ChinchillaLaw
    objective: float
    delta: float
    n_points: int
    grid_best: tuple[float, float] | None
    profile: LbfgsResult | None
    polish: LbfgsResult
    started_from: ChinchillaLaw | None = None

    @property
    def converged(self) -> bool:
        """The exponent search (if it ran) and the polish stopped on a tolerance."""
        return (self.profile is None or self.profile.converged) and self.polish.converged

    @property
    def exponents_at_bound(self) -> list[str]:
        """Names of the exponents that ended on an end of EXPONENT_BOUNDS."""
        return [
            name
            for name, value in (("alpha", self.law.alpha), ("beta", self.law.beta))
            if np.isclose(value, EXPONENT_BOUNDS, rtol=1e-6, atol=0).any()
        ]

    def convergence(self) -> dict:
        """JSON-ready record of the optimiser stages that ran."""
        record = {"converged": self.converged, "exponents_at_bound": self.exponents_at_bound}
        if self.started_from is not None:
            record["started_from"] = self.started_from.as_dict()
        else:
            record["grid_best"] = {"alpha": self.grid_best[0], "beta": self.grid_best[1]}
            record["exponent_search"] = self.profile.summary()
        return {**record, "polish": self.polish.summary()}


def inner_fit(
    alpha: np.ndarray,
    beta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
    *,
    start: np.ndarray | None = None,
    max_iter: int = 60,
    rtol: float = 1e-13,
) -> tuple[np.ndarray, np.ndarray]:
    """Best (E, A, B) >= 0 for each exponent pair by damped Newton steps (module doc, step 1).

    Args:
      alpha, beta: exponent pairs, shape [pairs].
      log_n, log_d, log_loss: logs of N, D and loss of the points, shape [n].
      start: optional (E, A, B) per pair [pairs, 3] to start from instead of least squares.
    Returns:
      coefficients [pairs, 3] as (E, A, B) and the summed Huber objective [pairs].
    """
    # Features divided by the observed loss, so that features @ (E, A, B) = L_hat / L.
    features = np.stack(
        [
            np.broadcast_to(np.exp(-log_loss), (alpha.size, log_n.size)),
            np.exp(-alpha[:, None] * log_n - log_loss),
            np.exp(-beta[:, None] * log_d - log_loss),
        ]
    )  # [3, G, n]
    coef = _relative_least_squares(features) if start is None else np.array(start, float)
    floor = 1e-9 * coef.max(axis=1, keepdims=True) + 1e-300
    coef = np.maximum(coef, floor)
    scale = np.ones(alpha.size)
    best_coef, best_obj = coef.copy(), np.full(alpha.size, np.inf)
    for _ in range(max_iter):
        ratio = np.einsum("jgn,gj->gn", features, coef)
        r = np.log(ratio)
        obj = huber(r, delta).sum(axis=1)
        worse = obj > best_obj
        improved = np.where(worse, 0.0, best_obj - obj)
        if worse.any():  # undo the step and halve the next one
            coef[worse], obj[worse] = best_coef[worse], best_obj[worse]
            ratio[worse] = np.einsum("jgn,gj->gn", features[:, worse], coef[worse])
            r[worse] = np.log(ratio[worse])
        if not worse.any() and np.all(improved <= rtol * obj):
            best_coef, best_obj = coef, obj
            break
        scale = np.where(worse, 0.5 * scale, np.minimum(1.0, 2.0 * scale))
        best_coef, best_obj = coef.copy(), obj
        abs_r = np.abs(r)
        weight = np.where(abs_r <= delta, 1.0, OUTSIDE_CURVATURE * delta / np.maximum(abs_r, delta))
        jac = features / ratio  # d r / d (E, A, B), [3, G, n]
        hess = np.einsum("jgn,gn,kgn->gjk", jac, weight, jac)
        hess += (1e-12 * np.trace(hess, axis1=1, axis2=2) + 1e-300)[:, None, None] * np.eye(3)
        grad = np.einsum("jgn,gn->gj", jac, np.clip(r, -delta, delta))
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        coef = np.maximum(coef - scale[:, None] * step, floor)
    return best_coef, best_obj


def _relative_least_squares(features: np.ndarray) -> np.ndarray:
    """Per pair, (E, A, B) minimising sum((features @ coef - 1)^2), clipped non-negative.

    The normal equations are solved for all pairs at once; pairs whose solution has a
    negative entry are re-solved with non-negative least squares.
    """
    gram = np.einsum("jgn,kgn->gjk", features, features)
    gram += 1e-12 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(3)
    coef = np.linalg.solve(gram, features.sum(axis=2).T[..., None])[..., 0]
    for g in np.flatnonzero((coef < 0).any(axis=1)):
        coef[g] = nnls(features[:, g].T, np.ones(features.shape[2]))[0]
    return coef


def fit_approach3(
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    *,
    delta: float = 1e-3,
    exponent_grid: np.ndarray = EXPONENT_GRID,
    start: ChinchillaLaw | None = None,
) -> Approach3Fit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to points [n] by summed Huber loss.

    Args:
      n: parameters per point; d: trained tokens per point; loss: loss in nats per token.
      delta: Huber threshold on the log residual (1e-3 as in Hoffmann et al.).
      exponent_grid: starting values tried for alpha and for beta (all pairs).
      start: a law fitted to points these resample; the refit polishes it and searches
        only if that fails or a parameter of ``start`` is 0 (module doc).
    """
    log_n, log_d, log_loss = _checked_logs(n, d, loss)
    with single_threaded_blas():
        if start is not None and can_refit_from(start):
            refit = _refit(start, log_n, log_d, log_loss, delta)
            if refit.converged and not refit.exponents_at_bound:
                return refit
        return _fit(log_n, log_d, log_loss, delta, exponent_grid)


def can_refit_from(law: ChinchillaLaw) -> bool:
    """Whether a refit can start from ``law``: its E, A and B are positive (the polish
    works on their logs)."""
    return min(law.E, law.A, law.B) > 0


def _refit(
    start: ChinchillaLaw,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
) -> Approach3Fit:
    """The polish alone, from ``start``'s parameters."""
    polish = _polish(start.theta, log_n, log_d, log_loss, delta)
    return _polished_fit(polish, log_n, log_d, delta, None, None, started_from=start)


def _polished_fit(
    polish: LbfgsResult,
    log_n: np.ndarray,
    log_d: np.ndarray,
    delta: float,
    grid_best: tuple[float, float] | None,
    profile: LbfgsResult | None,
    started_from: ChinchillaLaw | None = None,
) -> Approach3Fit:
    """The fit whose law is the polish's end point (uncentred), with the stages before it."""
    return Approach3Fit(
        law=ChinchillaLaw.from_theta(_uncentre(polish.theta, log_n.mean(), log_d.mean())),
        objective=polish.objective,
        delta=delta,
        n_points=log_n.size,
        grid_best=grid_best,
        profile=profile,
        polish=polish,
        started_from=started_from,
    )


def _fit(
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
    exponent_grid: np.ndarray,
) -> Approach3Fit:
    """Grid, exponent search and polish of :func:`fit_approach3` on validated logs."""
    alphas, betas = (g.ravel() for g in np.meshgrid(exponent_grid, exponent_grid, indexing="ij"))
    coef, obj = inner_fit(alphas, betas, log_n, log_d, log_loss, delta, max_iter=GRID_ITERATIONS)
    best = int(np.argmin(obj))
    grid_best = (float(alphas[best]), float(betas[best]))
    residual_fn = chinchilla_residuals(log_n, log_d, log_loss)

    warm = {"coef": coef[best : best + 1]}

    def profile(exponents: np.ndarray) -> tuple[float, np.ndarray]:
        inner, _ = inner_fit(
            exponents[:1],
            exponents[1:],
            log_n,
            log_d,
            log_loss,
            delta,
            start=warm["coef"],
            rtol=PROFILE_RTOL,
        )
        warm["coef"] = inner
        theta = np.concatenate([np.log(inner[0]), exponents])
        value, grad = huber_objective(residual_fn, theta, delta)
        return value, grad[3:]

    search = minimize(
        profile,
        np.array(grid_best),
        jac=True,
        method="L-BFGS-B",
        bounds=[EXPONENT_BOUNDS] * 2,
        options={**TIGHT, "ftol": 1e-12},
    )
    profile_result = LbfgsResult.from_scipy(search)
    polish = _polish(
        np.concatenate([np.log(warm["coef"][0]), search.x]), log_n, log_d, log_loss, delta
    )
    return _polished_fit(polish, log_n, log_d, delta, grid_best, profile_result)


def _polish(
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float
) -> LbfgsResult:
    """Five-parameter L-BFGS-B from theta, in centred coordinates (module doc, step 3)."""
    mean_n, mean_d = log_n.mean(), log_d.mean()
    centred = theta.copy()
    centred[1] -= theta[3] * mean_n
    centred[2] -= theta[4] * mean_d
    residual_fn = chinchilla_residuals(log_n - mean_n, log_d - mean_d, log_loss)
    return minimize_huber(
        residual_fn, centred, delta, bounds=[(None, None)] * 3 + [EXPONENT_BOUNDS] * 2
    )


def _uncentre(centred: np.ndarray, mean_log_n: float, mean_log_d: float) -> np.ndarray:
    """Map centred (e, a_c, b_c, alpha, beta) back to (e, a, b, alpha, beta)."""
    theta = centred.copy()
    theta[1] += centred[3] * mean_log_n
    theta[2] += centred[4] * mean_log_d
    return theta


def _checked_logs(
    n: np.ndarray, d: np.ndarray, loss: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Natural logs of N, D, loss as float64 [n], after checking they can be fitted."""
    arrays = [np.asarray(x, np.float64) for x in (n, d, loss)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise DataError("approach 3 needs N, D and loss as 1-D arrays of one length")
    if arrays[0].size < MIN_POINTS:
        raise DataError(
            f"approach 3 needs at least {MIN_POINTS} points (5 parameters); got {arrays[0].size}"
        )
    for name, values in zip(("N", "D", "loss"), arrays, strict=True):
        if not np.all(np.isfinite(values) & (values > 0)):
            raise DataError(f"approach 3 needs finite positive {name} for every point")
    return tuple(np.log(a) for a in arrays)

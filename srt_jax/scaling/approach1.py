"""Approach 1: the lower envelope of training curves gives N_opt(C) and D_opt(C).

Each run's evaluation curve (loss against cumulative training FLOPs) is smoothed with a
moving average over ``smooth`` consecutive evaluations and interpolated linearly in log C.
At each of ``n_compute`` log-spaced compute values covered by at least two runs, the run
with the lowest loss is on the envelope: its N and its tokens at that compute are the
optimal allocation there. Power laws N_opt = G_N C^a and D_opt = G_D C^b are then fitted
by least squares in log-log space (Hoffmann et al. 2022, section 3.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from srt_jax.errors import DataError
from srt_jax.scaling.laws import PowerLaw
from srt_jax.scaling.points import Curve


@dataclass(frozen=True)
class Approach1Result:
    """Envelope points (arrays [envelope], one entry per compute value) and the power laws
    fitted to them.

    ``compute`` in FLOPs; ``loss`` the envelope loss; ``n_opt`` / ``d_opt`` the parameters
    and tokens of the envelope run at that compute; ``run_id`` which run it is.
    """

    compute: np.ndarray
    loss: np.ndarray
    n_opt: np.ndarray
    d_opt: np.ndarray
    run_id: np.ndarray
    n_law: PowerLaw
    d_law: PowerLaw

    def summary(self) -> dict:
        """JSON-ready exponents, coefficients and envelope size."""
        return {
            "a": self.n_law.exponent,
            "b": self.d_law.exponent,
            "N_opt_coefficient": self.n_law.coefficient,
            "D_opt_coefficient": self.d_law.coefficient,
            "envelope_points": int(self.compute.size),
            "envelope_runs": sorted(set(self.run_id.tolist())),
        }


def fit_approach1(
    curves: Sequence[Curve | None],
    n_params: np.ndarray,
    run_id: np.ndarray,
    *,
    n_compute: int = 40,
    smooth: int = 3,
) -> Approach1Result:
    """Envelope of the curves of runs with ``n_params`` [runs] parameters (see module doc)."""
    have = [i for i, c in enumerate(curves) if c is not None]
    if len(have) < 2:
        raise DataError("approach 1 needs training curves of at least 2 runs")
    log_flops = [np.log(curves[i].flops) for i in have]
    losses = [_smoothed(curves[i].loss, smooth) for i in have]
    grid = np.linspace(min(x[0] for x in log_flops), max(x[-1] for x in log_flops), n_compute)
    loss_at = np.full((len(have), grid.size), np.inf)
    log_tokens_at = np.zeros_like(loss_at)
    for row, i in enumerate(have):
        inside = (grid >= log_flops[row][0]) & (grid <= log_flops[row][-1])
        loss_at[row, inside] = np.interp(grid[inside], log_flops[row], losses[row])
        log_tokens_at[row, inside] = np.interp(
            grid[inside], log_flops[row], np.log(curves[i].tokens)
        )
    covered = np.isfinite(loss_at).sum(axis=0) >= 2
    best = np.argmin(loss_at[:, covered], axis=0)
    columns = np.flatnonzero(covered)
    n_opt = np.asarray(n_params, float)[np.array(have)[best]]
    if np.unique(n_opt).size < 2:
        raise DataError("approach 1: one model size is best at every compute; no trend to fit")
    compute = np.exp(grid[covered])
    d_opt = np.exp(log_tokens_at[best, columns])
    return Approach1Result(
        compute=compute,
        loss=loss_at[best, columns],
        n_opt=n_opt,
        d_opt=d_opt,
        run_id=np.asarray(run_id)[np.array(have)[best]],
        n_law=PowerLaw.fit(compute, n_opt),
        d_law=PowerLaw.fit(compute, d_opt),
    )


def _smoothed(loss: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` consecutive evaluations (edges repeat the end value)."""
    if window <= 1 or loss.size < window:
        return np.asarray(loss, float)
    return uniform_filter1d(np.asarray(loss, float), size=window, mode="nearest")

"""May the bootstrap's refits start from the law fitted to all the runs? Checked, not assumed.

A refit from the point law (:func:`srt_jax.scaling.approach3.fit_approach3` with ``start``)
is five times faster than a full search, and on well-posed data it reaches the same optimum.
On data that barely constrain the law, a resample's best fit can lie in another basin, which
the refit would not leave: its intervals would come out too narrow, and the grade's
identifiability check reads those intervals. So before the bootstrap, :func:`warm_start`
fits :data:`CHECK_RESAMPLES` resamples (drawn with their own seed) both ways; only if every
refit reaches the full search's objective (within :data:`OBJECTIVE_TOLERANCE`) do the
bootstrap's refits start from the point law. Otherwise every resample gets a full search.
A bootstrap of fewer than :data:`MIN_BOOTSTRAP` resamples is not checked (the check would
cost more than the refits save), nor is a law with E, A or B at 0 (no refit starts from it):
every resample gets a full search.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from srt_jax.scaling.approach3 import can_refit_from, fit_approach3
from srt_jax.scaling.bootstrap import bootstrap_runs
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.points import ParamsKind, ScalingPoints

CHECK_RESAMPLES = 100
"""Resamples fitted both ways (a basin missed by 3% of the refits is caught 95% of the time)."""
OBJECTIVE_TOLERANCE = 1e-6
"""Relative excess of a refit's objective over the full search's that counts as a miss."""
CHECK_SEED_OFFSET = 7919
"""Added to the bootstrap seed to draw the check's resamples."""
MIN_BOOTSTRAP = 3 * CHECK_RESAMPLES
"""Fewest bootstrap resamples for which refits from the point law are considered."""


@dataclass(frozen=True)
class WarmStart:
    """The verdict: ``start`` (the point law, or None: full searches) and its evidence
    (``checked`` resamples fitted both ways, of which ``missed`` fell short)."""

    start: ChinchillaLaw | None
    checked: int = 0
    missed: int = 0
    largest_excess: float = float("nan")

    def summary(self) -> dict:
        """JSON-ready record for fit.json's ``bootstrap`` section."""
        return {
            "refits": "from the point law" if self.start is not None else "full search",
            "checked_resamples": self.checked,
            "missed": self.missed,
            "largest_relative_excess": self.largest_excess,
        }


def warm_start(
    points: ScalingPoints,
    params: ParamsKind,
    law: ChinchillaLaw,
    *,
    bootstrap: int,
    delta: float,
    seed: int,
    workers: int = 1,
    show_progress: bool = False,
) -> WarmStart:
    """For a bootstrap of ``bootstrap`` resamples, check refits from ``law`` (fitted to
    ``points``) against full searches (module doc)."""
    if bootstrap < MIN_BOOTSTRAP or not can_refit_from(law):
        return WarmStart(start=None)  # not worth checking, or a law no refit starts from
    excess = functools.partial(_refit_excess, params=params, law=law, delta=delta)
    check = bootstrap_runs(
        points,
        excess,
        CHECK_RESAMPLES,
        seed + CHECK_SEED_OFFSET,
        workers=workers,
        show_progress=show_progress,
        label="refit check",
    )
    values = check.samples.get("excess", np.zeros(0))
    finite = values[np.isfinite(values)]
    missed = int(np.count_nonzero(finite > OBJECTIVE_TOLERANCE))
    return WarmStart(
        start=law if missed == 0 and finite.size else None,
        checked=int(finite.size),
        missed=missed,
        largest_excess=float(finite.max()) if finite.size else float("nan"),
    )


def _refit_excess(
    sample: ScalingPoints, params: ParamsKind, law: ChinchillaLaw, delta: float
) -> dict[str, float]:
    """Relative objective excess of the refit from ``law`` over a full search of ``sample``."""
    n = sample.params(params)
    refit = fit_approach3(n, sample.tokens, sample.loss, delta=delta, start=law)
    search = fit_approach3(n, sample.tokens, sample.loss, delta=delta)
    return {"excess": refit.objective / search.objective - 1.0}

"""Bootstrap over runs: refit on resamples of whole runs, percentile intervals.

A resample draws R runs with replacement from the R runs of a :class:`ScalingPoints`; a
run carries its final point and its whole curve, so curve-based fits resample runs too.
The estimator maps a resample to named scalars; a resample on which it fails (or returns
non-finite values) counts as failed for those values and is left out of their intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from srt_jax.errors import SrtJaxError
from srt_jax.progress import progress_bar
from srt_jax.scaling.points import ScalingPoints

Estimator = Callable[[ScalingPoints], dict[str, float]]


@dataclass(frozen=True)
class BootstrapResult:
    """Estimates per resample: name -> array [n_resamples] (NaN where the fit failed)."""

    samples: dict[str, np.ndarray]
    n_resamples: int
    seed: int

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """Central percentile interval of ``name`` at confidence ``level``."""
        values = self.samples[name][np.isfinite(self.samples[name])]
        if values.size == 0:
            return (float("nan"), float("nan"))
        tail = 50.0 * (1.0 - level)
        lo, hi = np.percentile(values, [tail, 100.0 - tail])
        return (float(lo), float(hi))

    def summary(self, level: float = 0.95) -> dict:
        """JSON-ready intervals, standard errors and failure counts of every estimate."""
        out = {}
        for name, values in self.samples.items():
            ok = values[np.isfinite(values)]
            with np.errstate(over="ignore"):  # a degenerate law's N* can be ~1e300
                se = float(ok.std(ddof=1)) if ok.size > 1 else float("nan")
            out[name] = {
                "interval": list(self.interval(name, level)),
                "se": se,
                "failed": int(values.size - ok.size),
            }
        return out


def bootstrap_runs(
    points: ScalingPoints,
    estimator: Estimator,
    n_resamples: int,
    seed: int,
    *,
    show_progress: bool = True,
) -> BootstrapResult:
    """Apply ``estimator`` to ``n_resamples`` run-resamples of ``points`` drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(points), size=(n_resamples, len(points)))
    rows: list[dict[str, float]] = []
    with progress_bar(n_resamples, "bootstrap", unit="fit", disable=not show_progress) as bar:
        for indices in draws:
            try:
                rows.append(estimator(points.take(indices)))
            except (SrtJaxError, ArithmeticError, ValueError, np.linalg.LinAlgError):
                rows.append({})
            bar.update(1)
    names = sorted({name for row in rows for name in row})
    samples = {
        name: np.array([row.get(name, np.nan) for row in rows], dtype=float) for name in names
    }
    return BootstrapResult(samples=samples, n_resamples=n_resamples, seed=seed)

"""Bootstrap over runs: refit on resamples of whole runs, percentile intervals.

A resample draws R runs with replacement from the R runs of a :class:`ScalingPoints`; a
run carries its final point and its whole curve, so curve-based fits resample runs too.
The estimator maps a resample to named scalars; a resample on which it fails (or returns
non-finite values) counts as failed for those values and is left out of their intervals.

With ``workers`` > 1 the resamples are fitted by that many processes (started with
``spawn``, so the estimator must be picklable: a module-level function or a
``functools.partial`` of one). The estimates are the same, resample for resample, as with
one worker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
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


CHUNK = 25
"""Resamples per task sent to a worker process (the progress bar moves by chunks)."""


def default_workers(n_resamples: int) -> int:
    """Worker processes for ``n_resamples``: one per CPU (at most 8), but one below 200
    resamples, where starting processes (about a second each) would cost more than it
    saves."""
    return 1 if n_resamples < 200 else max(1, min(os.cpu_count() or 1, 8))


def bootstrap_runs(
    points: ScalingPoints,
    estimator: Estimator,
    n_resamples: int,
    seed: int,
    *,
    workers: int = 1,
    show_progress: bool = True,
    label: str = "bootstrap",
) -> BootstrapResult:
    """Apply ``estimator`` to ``n_resamples`` run-resamples of ``points`` drawn with
    ``seed``, in ``workers`` processes (module docstring); ``label`` names the progress bar."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(points), size=(n_resamples, len(points)))
    rows: list[dict[str, float]] = []
    with progress_bar(n_resamples, label, unit="fit", disable=not show_progress) as bar:
        for chunk in _estimated(points, estimator, draws, workers):
            rows.extend(chunk)
            bar.update(len(chunk))
    names = sorted({name for row in rows for name in row})
    samples = {
        name: np.array([row.get(name, np.nan) for row in rows], dtype=float) for name in names
    }
    return BootstrapResult(samples=samples, n_resamples=n_resamples, seed=seed)


def _estimated(
    points: ScalingPoints, estimator: Estimator, draws: np.ndarray, workers: int
) -> Iterator[list[dict[str, float]]]:
    """The estimates of the resamples ``draws`` [resamples, runs], chunk by chunk, in order."""
    chunks = [draws[start : start + CHUNK] for start in range(0, len(draws), CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _estimate_chunk(chunk, points, estimator)
        return
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_worker_task,
        initargs=(points, estimator),
    ) as pool:
        yield from pool.map(_estimate_in_worker, chunks)


_WORKER_TASK: tuple[ScalingPoints, Estimator] | None = None
"""A worker process's points and estimator, set once when it starts."""


def _set_worker_task(points: ScalingPoints, estimator: Estimator) -> None:
    global _WORKER_TASK
    _WORKER_TASK = (points, estimator)


def _estimate_in_worker(chunk: np.ndarray) -> list[dict[str, float]]:
    """:func:`_estimate_chunk` with the points and estimator the worker was started with."""
    return _estimate_chunk(chunk, *_WORKER_TASK)


def _estimate_chunk(
    chunk: np.ndarray, points: ScalingPoints, estimator: Estimator
) -> list[dict[str, float]]:
    """The estimates of the resamples [resamples, runs] of ``chunk`` ({} where one failed)."""
    rows = []
    for indices in chunk:
        try:
            rows.append(estimator(points.take(indices)))
        except (SrtJaxError, ArithmeticError, ValueError, np.linalg.LinAlgError):
            rows.append({})
    return rows

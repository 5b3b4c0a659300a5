"""Benchmark: approach 3 with 1,000 bootstrap resamples on the 240-point Chinchilla set.

Prints, all measured in this process:
- a reference rate: float64 numpy matmul GFLOP/s (to compare runs on loaded machines);
- one variable-projection fit (grid + exponent L-BFGS + polish) and one naive fit (L-BFGS
  from every start of Epoch AI's 4,500-point grid, the same summed Huber objective with
  its analytic gradient), their objectives and the speed ratio;
- the wall time of the full fit, the check of refits from its law
  (:mod:`srt_jax.scaling.warm_start`) and ``--resamples`` bootstrap refits, as ``srt-jax
  fit`` runs them, in ``--workers`` processes (issue 13's bar: at most 10 s for 1,000 on a
  2-core machine), ``--repeats`` times;
- how the refits started from the full fit compare with full searches (grid, exponent
  search, polish) on the first ``--compare`` resamples: the largest relative objective
  difference and the largest exponent difference.

    python benchmarks/bench_fit.py [--resamples 1000] [--repeats 2] [--naive-starts 4500]
        [--workers N]

``--naive-starts`` below 4,500 times an evenly spaced subset of the grid and scales the
time up to the full grid (said so in the output).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from srt_jax.scaling.analysis import law_estimates
from srt_jax.scaling.approach3 import fit_approach3
from srt_jax.scaling.bootstrap import bootstrap_runs, default_workers
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.lbfgs import many_start_fit, start_grid
from srt_jax.scaling.loaders import ColumnNames, load_points
from srt_jax.scaling.objective import chinchilla_residuals
from srt_jax.scaling.points import ScalingPoints
from srt_jax.scaling.warm_start import warm_start

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_svg_extracted.csv"
EPOCH_GRID = start_grid(  # (e, a, b, alpha, beta) as in Epoch AI's data_analysis notebook
    np.arange(-1.0, 1.5, 0.5),
    np.arange(0.0, 30.0, 5.0),
    np.arange(0.0, 30.0, 5.0),
    np.arange(0.0, 2.5, 0.5),
    np.arange(0.0, 2.5, 0.5),
)


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` float64 matmul rate in GFLOP/s (the in-process reference)."""
    a = np.random.default_rng(0).standard_normal((size, size))
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def chinchilla_estimates(
    sample: ScalingPoints, k: float, target: float, start: ChinchillaLaw | None
) -> dict[str, float]:
    """The bootstrap estimator: approach 3's law, refitted from ``start`` where the check of
    :mod:`srt_jax.scaling.warm_start` allows (as ``srt-jax fit`` does), and its predictions
    at ``target`` FLOPs."""
    fit = fit_approach3(sample.n_total, sample.tokens, sample.loss, start=start)
    return law_estimates(fit, k, target)


def compare_refits(points: ScalingPoints, start: ChinchillaLaw, resamples: int) -> None:
    """Print how refits from ``start`` compare with full searches on ``resamples`` resamples."""
    rng = np.random.default_rng(0)
    seconds = {"refit": 0.0, "search": 0.0}
    objective_gap = exponent_gap = 0.0
    for _ in range(resamples):
        sample = points.take(rng.integers(0, len(points), len(points)))
        fits = {}
        for way, begin in (("refit", start), ("search", None)):
            started = time.perf_counter()
            fits[way] = fit_approach3(sample.n_total, sample.tokens, sample.loss, start=begin)
            seconds[way] += time.perf_counter() - started
        refit, search = fits["refit"], fits["search"]
        objective_gap = max(objective_gap, refit.objective / search.objective - 1.0)
        exponent_gap = max(
            exponent_gap,
            abs(refit.law.alpha - search.law.alpha),
            abs(refit.law.beta - search.law.beta),
        )
    print(
        f"{resamples} resamples refitted from the full fit: "
        f"{seconds['refit'] / resamples * 1e3:.1f} ms a fit against "
        f"{seconds['search'] / resamples * 1e3:.1f} ms for a full search; largest relative "
        f"objective excess {objective_gap:.1e}, largest exponent difference {exponent_gap:.1e}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--naive-starts", type=int, default=len(EPOCH_GRID))
    parser.add_argument("--compare", type=int, default=100, help="resamples fitted both ways")
    parser.add_argument(
        "--workers",
        type=int,
        help="bootstrap processes (default: srt-jax fit's, one per CPU up to 8)",
    )
    args = parser.parse_args(argv)

    points = load_points(
        args.data, columns=ColumnNames(n="Model Size", c="Training FLOP")
    ).without_highest_loss(5)
    n, d, loss = points.n_total, points.tokens, points.loss
    print(f"reference: float64 matmul {matmul_gflops():.1f} GFLOP/s")

    fit_approach3(n, d, loss)  # warm-up
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        fit = fit_approach3(n, d, loss)
        timings.append(time.perf_counter() - started)
    varpro_s = float(np.median(timings))
    print(
        f"variable projection: {varpro_s * 1e3:.1f} ms per fit (median of 5), "
        f"objective {fit.objective:.7g}, alpha {fit.law.alpha:.4f}, beta {fit.law.beta:.4f}"
    )

    step = max(1, len(EPOCH_GRID) // args.naive_starts)
    starts = EPOCH_GRID[::step]
    residual_fn = chinchilla_residuals(np.log(n), np.log(d), np.log(loss))
    started = time.perf_counter()
    naive = many_start_fit(residual_fn, starts, 1e-3, show_progress=True)
    naive_s = (time.perf_counter() - started) * len(EPOCH_GRID) / len(starts)
    law = ChinchillaLaw.from_theta(naive.theta)
    scaled = "" if len(starts) == len(EPOCH_GRID) else f" (scaled from {len(starts)} starts)"
    print(
        f"naive many-start L-BFGS: {naive_s:.1f} s for {len(EPOCH_GRID)} starts{scaled}, "
        f"objective {naive.objective:.7g}, alpha {law.alpha:.4f}, beta {law.beta:.4f}"
    )
    print(f"speed-up of variable projection over the naive fit: {naive_s / varpro_s:.0f}x")

    compare_refits(points, fit.law, args.compare)

    workers = args.workers or default_workers(args.resamples)
    for repeat in range(1, args.repeats + 1):
        started = time.perf_counter()
        fit = fit_approach3(n, d, loss)
        warm = warm_start(
            points,
            "total",
            fit.law,
            bootstrap=args.resamples,
            delta=1e-3,
            seed=repeat,
            workers=workers,
        )
        result = bootstrap_runs(
            points,
            functools.partial(chinchilla_estimates, k=6.0, target=5.88e23, start=warm.start),
            args.resamples,
            seed=repeat,
            workers=workers,
        )
        wall = time.perf_counter() - started
        failed = max(v["failed"] for v in result.summary().values())
        lo, hi = result.interval("alpha")
        print(
            f"run {repeat}: fit + {args.resamples} bootstrap resamples in {wall:.1f} s "
            f"({wall / (args.resamples + 1) * 1e3:.1f} ms per fit, {workers} processes; "
            f"{failed} failed; refits {warm.summary()['refits']}, {warm.missed} of "
            f"{warm.checked} checks missed; "
            f"alpha 95% [{lo:.4f}, {hi:.4f}]); bar 10 s: {'met' if wall <= 10 else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

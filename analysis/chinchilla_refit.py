"""Golden refit of Chinchilla's L(N, D) with bootstrap intervals, printed as a table.

Reproduces Besiroglu et al. 2024 (Epoch AI) on the 240 points they extracted from
Hoffmann et al. 2022, Figure 4: summed Huber loss (delta 1e-3) of log residuals, fitted by
srt-jax's approach 3, and a bootstrap over runs; the table sets our estimates beside
Epoch's grid-search refit, Epoch's bootstrap intervals and Hoffmann's published values,
then the compute-optimal allocation at Chinchilla's budget (5.88e23 FLOPs).

    python analysis/chinchilla_refit.py [--bootstrap 1000] [--seed 42]

(with srt-jax installed, e.g. ``pip install -e .``; the data default to the golden copies in
``tests/data/``, whose README gives their provenance and licences).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from srt_jax.scaling.analysis import law_estimates
from srt_jax.scaling.approach3 import fit_approach3
from srt_jax.scaling.bootstrap import bootstrap_runs
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.loaders import ColumnNames, load_points
from srt_jax.scaling.warm_start import warm_start

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CHINCHILLA_COMPUTE = 5.88e23
K = 6.0
PARAMS = ("E", "A", "B", "alpha", "beta", "a", "b")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "chinchilla_svg_extracted.csv")
    parser.add_argument("--reference", type=Path, default=DATA / "chinchilla_refit_reference.json")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples (1000)")
    parser.add_argument("--seed", type=int, default=42, help="bootstrap seed (42, as Epoch)")
    args = parser.parse_args(argv)

    points = load_points(
        args.data, columns=ColumnNames(n="Model Size", c="Training FLOP")
    ).without_highest_loss(5)
    reference = json.loads(args.reference.read_text())
    started = time.perf_counter()
    fit = fit_approach3(points.n_total, points.tokens, points.loss, delta=1e-3)
    ours = law_estimates(fit, K, CHINCHILLA_COMPUTE)
    warm = warm_start(
        points, "total", fit.law, bootstrap=args.bootstrap, delta=1e-3, seed=args.seed
    )
    result = bootstrap_runs(
        points,
        lambda s: law_estimates(
            fit_approach3(s.n_total, s.tokens, s.loss, start=warm.start), K, CHINCHILLA_COMPUTE
        ),
        args.bootstrap,
        args.seed,
    )
    elapsed = time.perf_counter() - started

    grid, mle = reference["epoch2024_grid_sum_huber"], reference["epoch2024_huber_mle_point"]
    epoch_grid = _law(grid).as_dict()
    hoffmann = _law(reference["hoffmann2022_unrounded_tex"]).as_dict()
    print(
        f"Chinchilla refit: {len(points)} points, {args.bootstrap} bootstrap resamples "
        f"(seed {args.seed}), {elapsed:.1f} s"
    )
    print(
        f"{'param':<8}{'srt-jax':>12}{'95% interval':>26}{'Epoch grid':>12}"
        f"{'Epoch MLE 95% interval':>26}{'Hoffmann':>10}"
    )
    for name in PARAMS:
        lo, hi = result.interval(name)
        epoch_ci = mle["bootstrap_95ci"].get(name)
        epoch_text = f"[{epoch_ci[0]:.4g}, {epoch_ci[1]:.4g}]" if epoch_ci else "-"
        print(
            f"{name:<8}{ours[name]:>12.5g}{f'[{lo:.4g}, {hi:.4g}]':>26}"
            f"{epoch_grid[name]:>12.5g}{epoch_text:>26}{hoffmann[name]:>10.4g}"
        )
    print(
        f"objective (summed Huber): {fit.objective:.6g}  (Epoch grid: "
        f"{grid['objective_sum_huber']:.6g}); converged: {fit.converged}"
    )
    derived = reference["derived_at_chinchilla_compute_5.88e23"]["epoch_mle"]
    for name, label in (("N_opt", "N*"), ("D_opt", "D*")):
        lo, hi = result.interval(name)
        print(
            f"{label} at 5.88e23 FLOPs: {ours[name]:.4g} [{lo:.4g}, {hi:.4g}] "
            f"(Epoch MLE point: {derived[name]:.4g})"
        )
    lo, hi = result.interval("loss_at_target")
    print(f"L* at 5.88e23 FLOPs: {ours['loss_at_target']:.4f} [{lo:.4f}, {hi:.4f}]")
    return 0


def _law(params: dict) -> ChinchillaLaw:
    return ChinchillaLaw(*(params[name] for name in ("E", "A", "B", "alpha", "beta")))


if __name__ == "__main__":
    raise SystemExit(main())

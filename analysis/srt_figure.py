"""The SRT scaling sweep from its MLflow database: loss and NDCG@5 against compute.

One row per number of sampled negatives (the sampled-softmax loss depends on it, so
losses are comparable only within a row); left: validation loss, right: validation NDCG@5
(10,000 sampled candidates, the SRT protocol), both along training against cumulative
training compute, one curve per run coloured by model size, with the running-best frontier
and, on the NDCG frontier, the log-linear law m(C) = a + b ln C. Compute follows the SRT
authors' accounting (forward multiply-accumulates per batch x batches per epoch x epochs,
see srt_jax.scaling.mlflow_sqlite). Writes ``srt_scaling.png`` and ``.svg``.

    python analysis/srt_figure.py [DB] [--out DIR]

(with srt-jax installed; DB defaults to the golden copy ``tests/data/srt_mlruns.sqlite.bz2``,
whose README gives its provenance and licence).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from srt_jax.scaling.frontier import curve_frontier, fit_metric_law
from srt_jax.scaling.laws import log_linear_metric
from srt_jax.scaling.loaders import load_points
from srt_jax.scaling.mlflow_sqlite import MlflowNames
from srt_jax.scaling.plots import draw_curves, save

DEFAULT_DB = Path(__file__).resolve().parents[1] / "tests" / "data" / "srt_mlruns.sqlite.bz2"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", nargs="?", type=Path, default=DEFAULT_DB, help="MLflow SQLite")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output directory")
    parser.add_argument("--metric", default="ndcg_at_5", help="valid/ metric to plot")
    parser.add_argument(
        "--negatives", default="100,300", help="values of nce_num_negatives, one row each"
    )
    parser.add_argument(
        "--params", choices=("total", "non_embedding"), default="total", help="size colour"
    )
    args = parser.parse_args(argv)
    negatives = [v.strip() for v in args.negatives.split(",") if v.strip()]

    fig, axes = plt.subplots(len(negatives), 2, figsize=(12, 4.5 * len(negatives)), squeeze=False)
    for row, value in zip(axes, negatives, strict=True):
        points = load_points(
            args.db, fmt="mlflow", mlflow=MlflowNames(where=(("nce_num_negatives", value),))
        )
        n = points.params(args.params)
        for ax, metric in zip(row, (None, args.metric), strict=True):
            mappable = draw_curves(ax, points, n, metric, lower_is_better=metric is None)
            ax.set(
                xlabel="training compute C (FLOPs, SRT accounting)",
                ylabel="validation loss (nats/token)" if metric is None else f"validation {metric}",
                title=f"{len(points)} runs, {value} sampled negatives: "
                + ("validation loss" if metric is None else metric),
            )
            fig.colorbar(mappable, ax=ax, label=f"parameters N ({args.params})")
        compute, best = curve_frontier(points.curves, args.metric, lower_is_better=False)
        law = fit_metric_law(compute, best)
        grid = np.geomspace(compute.min(), compute.max(), 100)
        row[1].plot(
            grid,
            log_linear_metric(grid, law["a"], law["b"]),
            "k--",
            lw=1,
            label=f"{args.metric} = {law['a']:.3f} + {law['b']:.4f} ln C",
        )
        row[1].legend(fontsize=8)
        print(
            f"{value} negatives: {len(points)} runs; {args.metric} frontier "
            f"{law['a']:.4f} + {law['b']:.5f} ln C (R^2 {law['r2']:.3f}, {law['points']} points)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for path in save(fig, args.out, "srt_scaling"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

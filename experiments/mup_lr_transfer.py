"""Does μP let one learning rate serve every width?

Claim (Yang et al. 2021, *Tensor Programs V*, "μTransfer"): under the maximal update
parametrisation the best learning rate stays put as the model widens, while under the
standard parametrisation it drifts (usually down), so a width sweep tuned at a small width
is well tuned at every width only with μP.

Protocol: MovieLens-100K, ``configs/ml100k_sasrec_fast.yaml`` shortened to 3 epochs
(:data:`SCHEDULE`; leave-one-out, full ranking, held-out users' per-token loss) at widths
d_model 32, 64 and 128 (2 layers, 2 heads; a 4x width range) and AdamW peak learning rates
1e-3 to 3.2e-2 in factors of 2, each with the standard parametrisation and with μP
(``model.mup_base_width: 32``), seeds 0, 1, 2. The best learning rate of a width is the
grid point with the lowest held-out loss (mean over seeds; the checkpoint of best
validation NDCG@10), refined by a parabola through it and its neighbours in log rate. A run
that diverges (a non-finite loss) has the worst loss: its grid point is never the best.

    python experiments/mup_lr_transfer.py [--quick] [--out DIR] [--seeds 0 1 2]

Writes ``results.json``, ``mup_lr_transfer.png`` / ``.svg`` and ``table.md`` into ``--out``
(default ``experiments_out/mup_lr_transfer``). ``--quick`` runs two widths and two rates on
a tiny synthetic log (what the test runs); its numbers mean nothing. The conclusions are in
docs/experiments/mup_lr_transfer.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    REPO,
    TINY_LOG,
    mean_std,
    plt,
    run_experiment,
    save_figure,
    seeds_of,
)

from srt_jax.config import load_config
from srt_jax.errors import RunFailedError
from srt_jax.progress import progress_bar
from srt_jax.train.loop import train

CONFIG = "configs/ml100k_sasrec_fast.yaml"
SCHEDULE = ["train.epochs=3", "train.eval_every_tokens=45000"]
WIDTHS = (32, 64, 128)
RATES = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)
BASE_WIDTH = 32
PARAMETRISATIONS = ("standard", "mup")
QUICK = [
    "data.dataset=synthetic",
    *TINY_LOG,
    "model.n_layers=1",
    "train.batch_size=16",
    "train.epochs=null",
    "train.tokens=1000",
    "train.eval_every_tokens=500",
]
QUICK_WIDTHS, QUICK_RATES = (16, 32), (1e-3, 1e-2)


def best_rate(rates: list[float], losses: list[float]) -> float:
    """The rate of the lowest loss, refined by a parabola in log rate through it and its two
    neighbours (the grid point itself at an edge of the grid or beside a diverged point)."""
    i = int(np.argmin(losses))
    if i == 0 or i == len(rates) - 1 or not np.all(np.isfinite(losses[i - 1 : i + 2])):
        return rates[i]
    x = np.log([rates[i - 1], rates[i], rates[i + 1]])
    a, b, _ = np.polyfit(x, losses[i - 1 : i + 2], 2)
    return float(np.exp(-b / (2 * a))) if a > 0 else rates[i]


def loss_summary(losses: list[float]) -> dict[str, float]:
    """:func:`mean_std` of the seeds' losses; with a diverged seed (an infinite loss), mean
    infinity and ``diverged``, the number of such seeds."""
    diverged = sum(not math.isfinite(loss) for loss in losses)
    if diverged:
        return {"mean": math.inf, "std": math.nan, "diverged": diverged}
    return mean_std(losses)


def run_grid(out: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    widths, rates = (QUICK_WIDTHS, QUICK_RATES) if quick else (WIDTHS, RATES)
    base_width = widths[0]
    runs = []
    bar = progress_bar(len(PARAMETRISATIONS) * len(widths) * len(rates) * len(seeds), "runs")
    for parametrisation in PARAMETRISATIONS:
        for width in widths:
            for rate in rates:
                for seed in seeds:
                    keys = [
                        *(QUICK if quick else SCHEDULE),
                        f"model.d_model={width}",
                        "model.n_heads=2",
                        f"train.learning_rate={rate}",
                        f"train.seed={seed}",
                    ]
                    if parametrisation == "mup":
                        keys.append(f"model.mup_base_width={base_width}")
                    config = load_config(REPO / CONFIG, keys)
                    name = f"{parametrisation}-d{width}-lr{rate:g}-seed{seed}"
                    try:
                        summary = train(config, out / "runs" / name, progress=False)
                        loss, ndcg = summary["eval"]["loss"], summary["eval"]["ndcg@10"]
                    except RunFailedError:  # diverged: the worst loss, no ranking quality
                        loss, ndcg = math.inf, 0.0
                    runs.append(
                        {
                            "parametrisation": parametrisation,
                            "width": width,
                            "rate": rate,
                            "seed": seed,
                            "loss": loss,
                            "ndcg@10": ndcg,
                        }
                    )
                    bar.update(1)
    bar.close()
    curves: dict[str, dict[str, Any]] = {}
    for parametrisation in PARAMETRISATIONS:
        curves[parametrisation] = {}
        for width in widths:
            by_rate = [
                [
                    r
                    for r in runs
                    if (r["parametrisation"], r["width"], r["rate"])
                    == (parametrisation, width, rate)
                ]
                for rate in rates
            ]
            losses = [loss_summary([r["loss"] for r in rows]) for rows in by_rate]
            ndcg = [mean_std([r["ndcg@10"] for r in rows]) for rows in by_rate]
            means = [m["mean"] for m in losses]
            curves[parametrisation][str(width)] = {
                "loss": losses,
                "ndcg@10": ndcg,
                "best_rate": best_rate(list(rates), means),
                "best_grid_rate": rates[int(np.argmin(means))],
            }
    drift = {
        p: max(c["best_rate"] for c in curves[p].values())
        / min(c["best_rate"] for c in curves[p].values())
        for p in PARAMETRISATIONS
    }
    return {
        "widths": list(widths),
        "rates": list(rates),
        "base_width": base_width,
        "runs": runs,
        "curves": curves,
        "best_rate_drift": drift,
    }


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Held-out loss against learning rate per width, standard and μP side by side (a
    diverged point is left out of its curve)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, parametrisation in zip(axes, PARAMETRISATIONS, strict=True):
        for width, curve in results["curves"][parametrisation].items():
            means = [m["mean"] if "diverged" not in m else math.nan for m in curve["loss"]]
            stds = [m["std"] if "diverged" not in m else math.nan for m in curve["loss"]]
            line = ax.errorbar(results["rates"], means, yerr=stds, marker="o", label=f"d{width}")
            ax.axvline(curve["best_rate"], color=line[0].get_color(), linestyle=":", alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate (AdamW)")
        title = (
            "standard"
            if parametrisation == "standard"
            else f"μP (base width {results['base_width']})"
        )
        ax.set_title(f"{title}: best rate drift {results['best_rate_drift'][parametrisation]:.2f}x")
        ax.legend()
    axes[0].set_ylabel("held-out loss (nats/token)")
    fig.tight_layout()
    return save_figure(fig, out, "mup_lr_transfer")


def table(results: dict[str, Any]) -> str:
    rates = results["rates"]
    header = " | ".join(f"lr {r:g}" for r in rates)
    lines = [
        f"| parametrisation | width | {header} | best rate |",
        "| --- | --- | " + " | ".join("---" for _ in rates) + " | --- |",
    ]
    for parametrisation, curves in results["curves"].items():
        for width, curve in curves.items():
            cells = [
                f"diverged ({m['diverged']} seeds)"
                if "diverged" in m
                else f"{m['mean']:.4f} ± {m['std']:.4f}"
                for m in curve["loss"]
            ]
            lines.append(
                f"| {parametrisation} | {width} | {' | '.join(cells)} | {curve['best_rate']:.2g} |"
            )
    drift = results["best_rate_drift"]
    lines.append("")
    lines.append(
        "Best-rate drift over the widths (max / min): "
        + ", ".join(f"{p} {d:.2f}x" for p, d in drift.items())
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    run_experiment(
        __doc__,
        "mup_lr_transfer",
        "under μP the best learning rate does not move with width",
        lambda args: run_grid(args.out, seeds_of(args), args.quick),
        figure,
        table,
    )


if __name__ == "__main__":
    main()

"""Do adaptive step sizes reach tuned AdamW's quality without a tuned learning rate?

Claim (Obozov et al. 2024, arXiv 2408.05606; its step size is USGM, a universal gradient
method): an adaptive step size trains a sequential recommender to the quality of a tuned
fixed-rate optimiser at no more cost, so the learning rate need not be tuned per run.

Protocol: MovieLens-100K, ``configs/ml100k_sasrec_fast.yaml`` (batch 32, 10 epochs,
leave-one-out, full ranking, validation every 45k trained tokens), seeds 0, 1, 2, every
optimiser at its defaults (nothing retuned for this experiment):

- ``adamw``: the recipe as it is (AdamW, peak 1e-3, warmup-cosine; the baseline);
- ``prodigy``, ``dadapt_adamw``: learning-rate-free AdamW (optax.contrib; scale 1.0 times
  the same warmup-cosine multiplier);
- ``schedule_free_adamw``: schedule-free AdamW at 1e-3, evaluated at its averaged
  parameters;
- ``usgm``: the universal stochastic gradient method (step 1/L from a line search, ε 0.01).

Reported per arm: optimiser updates, trained tokens and training-loop seconds at the
first validation reaching the target (95% of AdamW's mean best validation NDCG@10); test
NDCG@10 at the best-validation checkpoint, held-out loss, wall seconds.

    python experiments/adaptive_step_size.py [--quick] [--out DIR] [--seeds 0 1 2]

Writes ``results.json``, ``adaptive_step_size.png`` / ``.svg`` and ``table.md`` into
``--out`` (default ``experiments_out/adaptive_step_size``). ``--quick`` runs on a tiny
synthetic log (what the test runs); its numbers mean nothing. Conclusions:
docs/experiments/adaptive_step_size.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arms import arms_table, plot_curves, time_to_target, train_arm
from common import TINY_LOG, plt, run_experiment, save_figure, seeds_of

CONFIG = "configs/ml100k_sasrec_fast.yaml"
OPTIMIZERS = ("adamw", "prodigy", "dadapt_adamw", "schedule_free_adamw", "usgm")
QUICK = [
    "data.dataset=synthetic",
    *TINY_LOG,
    "model.d_model=16",
    "model.n_layers=1",
    "train.epochs=null",
    "train.tokens=2000",
    "train.eval_every_tokens=1000",
]


def run_arms(out: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in OPTIMIZERS}
    for name in OPTIMIZERS:
        for seed in seeds:
            overrides = [*(QUICK if quick else ()), f"train.optimizer={name}", f"train.seed={seed}"]
            run = train_arm(CONFIG, overrides, out / "runs" / f"{name}-seed{seed}", not quick)
            runs[name].append({"seed": seed, **run})
    return {"runs": runs, **time_to_target(runs, "adamw")}


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Validation NDCG@10 against trained tokens and against training-loop seconds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(zip(OPTIMIZERS, plt.get_cmap("tab10").colors, strict=False))
    plot_curves(left, results, "tokens", colours)
    left.set_xlabel("trained tokens")
    plot_curves(right, results, "loop_s", colours)
    right.set_xlabel("training-loop seconds (shared 2-core CPU)")
    fig.tight_layout()
    return save_figure(fig, out, "adaptive_step_size")


def main() -> None:
    run_experiment(
        __doc__,
        "adaptive_step_size",
        "an adaptive step size reaches tuned AdamW's quality at no more cost",
        lambda args: run_arms(args.out, seeds_of(args), args.quick),
        figure,
        arms_table,
    )


if __name__ == "__main__":
    main()

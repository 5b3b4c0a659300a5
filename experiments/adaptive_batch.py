"""Does an adaptive batch size reach the fixed batch's quality in fewer optimiser steps?

Claim (Obozov et al. 2024, after McCandlish et al. 2018 and the norm-test literature):
growing the batch during training as the gradient noise scale grows reaches the quality of
a tuned fixed-batch run with fewer optimiser steps and no more training tokens.

Protocol: MovieLens-100K, ``configs/ml100k_sasrec_fast.yaml`` (batch 32, 10 epochs, AdamW
1e-3, leave-one-out, full ranking, validation every 45k trained tokens), seeds 0, 1, 2:

- ``fixed_32``: the recipe as it is (the tuned baseline);
- ``fixed_128``: batch 128, the same tokens (a fixed large batch: a quarter of the steps);
- ``adaptive``: micro-batch 32, accumulation grown from the measured noise scale up to 16
  (``train.adaptive_batch``; everything else, the learning rate included, unchanged).

Reported per arm: optimiser updates and trained tokens at the first validation reaching
the target (95% of the baseline's mean best validation NDCG@10), final test NDCG@10 at the
best-validation checkpoint, held-out loss, total updates and wall seconds; and the measured
noise scale (the critical batch, in trained tokens) against the training loss.

    python experiments/adaptive_batch.py [--quick] [--out DIR] [--seeds 0 1 2]

Writes ``results.json``, ``adaptive_batch.png`` / ``.svg`` and ``table.md`` into ``--out``
(default ``experiments_out/adaptive_batch``). ``--quick`` runs on a tiny synthetic log
(what the test runs); its numbers mean nothing. Conclusions:
docs/experiments/adaptive_batch.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arms import arms_table, plot_curves, records, time_to_target, train_arm
from common import TINY_LOG, plt, run_experiment, save_figure, seeds_of

CONFIG = "configs/ml100k_sasrec_fast.yaml"
ARMS: dict[str, list[str]] = {
    "fixed_32": [],
    "fixed_128": ["train.batch_size=128"],
    "adaptive": ["train.adaptive_batch.max_accumulation=16"],
}
QUICK = [
    "data.dataset=synthetic",
    *TINY_LOG,
    "model.d_model=16",
    "train.epochs=null",
    "train.tokens=3000",
    "train.eval_every_tokens=750",
    "train.log_every=5",
]


def run_arms(out: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for arm, keys in ARMS.items():
        for seed in seeds:
            run_dir = out / "runs" / f"{arm}-seed{seed}"
            overrides = [*(QUICK if quick else ()), *keys, f"train.seed={seed}"]
            run = train_arm(CONFIG, overrides, run_dir, progress=not quick)
            run["seed"] = seed
            run["noise"] = [
                {"loss": r["loss"], "noise_scale": r["noise_scale"], "tokens": r["tokens"]}
                for r in records(run_dir, "train")
                if r.get("noise_scale") is not None
            ]
            runs[arm].append(run)
    return {"runs": runs, **time_to_target(runs, "fixed_32")}


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Validation NDCG@10 against optimiser updates per arm, and the noise scale against
    the training loss (adaptive runs)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(zip(ARMS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    plot_curves(left, results, "updates", colours)
    left.set_xscale("log")
    left.set_xlabel("optimiser updates")
    for run in results["runs"]["adaptive"]:
        noise = run["noise"]
        right.plot([n["loss"] for n in noise], [n["noise_scale"] for n in noise], marker=".")
    right.set_xlabel("training loss (nats/token)")
    right.set_ylabel("gradient noise scale B_noise (trained tokens)")
    right.set_yscale("log")
    right.invert_xaxis()
    right.set_title("critical batch as training proceeds (adaptive runs)")
    fig.tight_layout()
    return save_figure(fig, out, "adaptive_batch")


def main() -> None:
    run_experiment(
        __doc__,
        "adaptive_batch",
        "an adaptive batch reaches the fixed batch's quality in fewer optimiser steps",
        lambda args: run_arms(args.out, seeds_of(args), args.quick),
        figure,
        arms_table,
    )


if __name__ == "__main__":
    main()

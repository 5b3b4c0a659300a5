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

import json
from pathlib import Path
from typing import Any

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
from srt_jax.train.loop import train

CONFIG = "configs/ml100k_sasrec_fast.yaml"
ARMS: dict[str, list[str]] = {
    "fixed_32": [],
    "fixed_128": ["train.batch_size=128"],
    "adaptive": ["train.adaptive_batch.max_accumulation=16"],
}
TARGET_FRACTION = 0.95
QUICK = [
    "data.dataset=synthetic",
    *TINY_LOG,
    "model.d_model=16",
    "train.epochs=null",
    "train.tokens=3000",
    "train.eval_every_tokens=750",
    "train.log_every=5",
]


def records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def first_reaching(run: dict[str, Any], target: float) -> dict[str, Any] | None:
    """The first evaluation of ``run`` whose validation NDCG@10 reaches ``target``."""
    return next((e for e in run["evals"] if e["valid_ndcg@10"] >= target), None)


def run_arms(out: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for arm, keys in ARMS.items():
        for seed in seeds:
            config = load_config(
                REPO / CONFIG, [*(QUICK if quick else ()), *keys, f"train.seed={seed}"]
            )
            run_dir = out / "runs" / f"{arm}-seed{seed}"
            summary = train(config, run_dir, progress=not quick)
            evals = records(run_dir, "eval")
            for r in evals:
                r.setdefault("updates", r["step"])  # a fixed batch updates at every step
            runs[arm].append(
                {
                    "seed": seed,
                    "summary": {
                        "ndcg@10": summary["eval"]["ndcg@10"],
                        "loss": summary["eval"]["loss"],
                        "updates": summary["updates"],
                        "train_tokens": summary["train_tokens"],
                        "wall_s": summary["wall_s"],
                        "final_accumulation": summary["accumulation"],
                    },
                    "evals": [
                        {k: r[k] for k in ("step", "updates", "tokens")}
                        | {"valid_ndcg@10": r["metrics"]["ndcg@10"]}
                        for r in evals
                    ],
                    "noise": [
                        {"loss": r["loss"], "noise_scale": r["noise_scale"], "tokens": r["tokens"]}
                        for r in records(run_dir, "train")
                        if r.get("noise_scale") is not None
                    ],
                }
            )
    baseline_best = [max(e["valid_ndcg@10"] for e in run["evals"]) for run in runs["fixed_32"]]
    target = TARGET_FRACTION * mean_std(baseline_best)["mean"]
    summary: dict[str, Any] = {}
    for arm, arm_runs in runs.items():
        reached = [first_reaching(run, target) for run in arm_runs]
        summary[arm] = {
            key: mean_std([run["summary"][key] for run in arm_runs])
            for key in ("ndcg@10", "loss", "updates", "wall_s")
        }
        summary[arm]["reached"] = sum(r is not None for r in reached)
        hits = [r for r in reached if r is not None]
        summary[arm]["updates_to_target"] = mean_std([r["updates"] for r in hits]) if hits else None
        summary[arm]["tokens_to_target"] = mean_std([r["tokens"] for r in hits]) if hits else None
    return {"target_valid_ndcg@10": target, "runs": runs, "summary": summary}


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Validation NDCG@10 against optimiser updates per arm, and the noise scale against
    the training loss (adaptive runs)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(zip(ARMS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for arm, arm_runs in results["runs"].items():
        for i, run in enumerate(arm_runs):
            left.plot(
                [e["updates"] for e in run["evals"]],
                [e["valid_ndcg@10"] for e in run["evals"]],
                marker="o",
                markersize=3,
                color=colours[arm],
                label=arm if i == 0 else None,
            )
    left.axhline(results["target_valid_ndcg@10"], color="gray", linestyle=":", label="target")
    left.set_xscale("log")
    left.set_xlabel("optimiser updates")
    left.set_ylabel("validation NDCG@10")
    left.legend()
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


def table(results: dict[str, Any]) -> str:
    def shown(value: dict[str, float] | None, digits: int) -> str:
        return "—" if value is None else f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"

    lines = [
        f"Target: validation NDCG@10 >= {results['target_valid_ndcg@10']:.4f}",
        "",
        "| arm | reached | updates to target | tokens to target | total updates | "
        "test NDCG@10 | held-out loss | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, s in results["summary"].items():
        n = len(results["runs"][arm])
        lines.append(
            f"| {arm} | {s['reached']}/{n} | {shown(s['updates_to_target'], 0)} | "
            f"{shown(s['tokens_to_target'], 0)} | {shown(s['updates'], 0)} | "
            f"{shown(s['ndcg@10'], 4)} | {shown(s['loss'], 4)} | {shown(s['wall_s'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    run_experiment(
        __doc__,
        "adaptive_batch",
        "an adaptive batch reaches the fixed batch's quality in fewer optimiser steps",
        lambda args: run_arms(args.out, seeds_of(args), args.quick),
        figure,
        table,
    )


if __name__ == "__main__":
    main()

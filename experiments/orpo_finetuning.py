"""Does ORPO fine-tuning improve a trained next-item model more than continued training?

Claim (Obozov et al. 2024, arXiv 2408.05606, after Hong et al. 2024's ORPO): adding the
odds-ratio preference term to the next-item loss in a fine-tuning stage improves a
sequential recommender's ranking quality beyond what the same extra training with the
next-item loss alone gives.

Protocol: MovieLens-100K, ``configs/ml100k_sasrec_fast.yaml`` (leave-one-out, full
ranking, test figures at the best-validation checkpoint) trained from scratch with seeds
0, 1, 2 (the *base* runs). From each base run's best-validation checkpoint
(``train.init_from``), fine-tuning stages of the same length and schedule
(:data:`FINE_TUNE`: 2 epochs, peak learning rate 3e-4, chosen before any result was seen
and not tuned) differing only in the objective:

- ``ce``: the next-item loss alone (continued training, the control);
- ``orpo_disliked``: + λ = 0.1 x ORPO, rejected = an item the user rated <= 2 in the window;
- ``orpo_hard``: + λ = 0.1 x ORPO, rejected = the highest-scored other item;
- ``orpo_uniform``: + λ = 0.1 x ORPO, rejected = a uniformly drawn other item.

Reported: test NDCG@10, HR@10 and held-out loss per stage and seed, their mean and
standard deviation over seeds, and each ORPO stage's paired difference from ``ce`` on the
same base run.

    python experiments/orpo_finetuning.py [--quick] [--out DIR] [--seeds 0 1 2] [--weight 0.1]

``--weight`` sets λ of every ORPO stage (0.1 by default, as above) for a sensitivity run.

Writes ``results.json``, ``orpo_finetuning.png`` / ``.svg`` and ``table.md`` into ``--out``
(default ``experiments_out/orpo_finetuning``). ``--quick`` runs every stage on a tiny
synthetic log (with random ratings, so that the ``disliked`` rule has something to read)
in about a minute (what the test runs); its numbers mean nothing. The conclusions are in
docs/experiments/orpo_finetuning.md.
"""

from __future__ import annotations

import argparse
import json
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

from srt_jax.config import RunConfig, load_config, replace
from srt_jax.data.sources import open_dataset
from srt_jax.data.store import write_store
from srt_jax.train.loop import train

CONFIG = "configs/ml100k_sasrec_fast.yaml"
FINE_TUNE = ["train.epochs=2", "train.learning_rate=3e-4", "train.warmup_fraction=0.05"]
STAGES: dict[str, list[str]] = {
    "ce": [],
    "orpo_disliked": ["train.objective=orpo", "train.orpo.rejected=disliked"],
    "orpo_hard": ["train.objective=orpo", "train.orpo.rejected=hard"],
    "orpo_uniform": ["train.objective=orpo", "train.orpo.rejected=uniform"],
}
FIGURES = ("ndcg@10", "hr@10", "loss")
QUICK = [
    *TINY_LOG,
    "model.d_model=16",
    "model.n_layers=1",
    "train.batch_size=16",
    "train.epochs=null",
    "train.tokens=1500",
    "train.eval_every_tokens=750",
]
QUICK_FINE_TUNE = ["train.epochs=null", "train.tokens=750", "train.learning_rate=3e-4"]


def rated_synthetic_store(out: Path) -> Path:
    """A tiny synthetic log with ratings drawn uniformly from 1..5 (``--quick`` only)."""
    config = load_config(None, ["data.dataset=synthetic", *QUICK, f"data.cache_dir={out}"])
    store = open_dataset(config.data, progress=False)
    ratings = np.random.default_rng(0).integers(1, 6, store.n_interactions)
    path = out / "rated-synthetic"
    if not path.exists():
        write_store(
            path,
            np.asarray(store.items),
            np.asarray(store.timestamps),
            store.offsets,
            store.item_ids(),
            store.user_ids(),
            {"source": "synthetic with random ratings (experiment --quick)"},
            ratings=ratings.astype(np.float32),
        )
    return path


def base_config(out: Path, quick: bool) -> RunConfig:
    if not quick:
        return load_config(REPO / CONFIG)
    return load_config(
        REPO / CONFIG, [f"data.dataset={rated_synthetic_store(out)}", *QUICK, "model.n_heads=2"]
    )


def figures_of(summary: dict[str, Any]) -> dict[str, float]:
    return {key: summary["eval"][key] for key in FIGURES}


def run_stages(out: Path, seeds: list[int], quick: bool, weight: float) -> dict[str, Any]:
    """Every base run and fine-tuning stage (ORPO at λ = ``weight``); per-seed figures and
    summaries."""
    base = base_config(out, quick)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], **{stage: [] for stage in STAGES}}
    protocol = None
    for seed in seeds:
        seeded = replace(base, [f"train.seed={seed}"])
        base_dir = out / "runs" / f"base-seed{seed}"
        summary = train(seeded, base_dir, progress=not quick)
        runs["base"].append({"seed": seed, **figures_of(summary), "wall_s": summary["wall_s"]})
        for stage, keys in STAGES.items():
            more = [*(QUICK_FINE_TUNE if quick else FINE_TUNE), *keys]
            if keys:
                more.append(f"train.orpo.weight={weight}")
            config = replace(seeded, [f"train.init_from={base_dir}", *more])
            summary = train(config, out / "runs" / f"{stage}-seed{seed}", progress=not quick)
            last_train = [
                json.loads(line)
                for line in (out / "runs" / f"{stage}-seed{seed}" / "metrics.jsonl")
                .read_text()
                .splitlines()
                if '"kind": "train"' in line
            ][-1]
            runs[stage].append(
                {
                    "seed": seed,
                    **figures_of(summary),
                    "wall_s": summary["wall_s"],
                    "log_odds_ratio": last_train.get("log_odds_ratio"),
                }
            )
            protocol = summary["protocol"]
    summary = {
        stage: {key: mean_std([r[key] for r in rows]) for key in FIGURES}
        for stage, rows in runs.items()
    }
    paired = {
        stage: {
            key: mean_std([r[key] - c[key] for r, c in zip(runs[stage], runs["ce"], strict=True)])
            for key in FIGURES
        }
        for stage in STAGES
        if stage != "ce"
    }
    return {
        "protocol": protocol,
        "orpo_weight": weight,
        "fine_tune": QUICK_FINE_TUNE if quick else FINE_TUNE,
        "runs": runs,
        "summary": summary,
        "paired_vs_ce": paired,
    }


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Test NDCG@10 per stage (seeds as points, mean as bars) and paired differences."""
    runs, stages = results["runs"], list(results["runs"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for x, stage in enumerate(stages):
        values = [r["ndcg@10"] for r in runs[stage]]
        left.bar(x, np.mean(values), color="lightgray", edgecolor="black")
        left.scatter([x] * len(values), values, color="black", zorder=3, s=12)
    left.set_xticks(range(len(stages)), stages, rotation=20)
    left.set_ylabel("test NDCG@10")
    left.set_title("after each stage (bars: mean; points: seeds)")
    orpo = [s for s in STAGES if s != "ce"]
    for x, stage in enumerate(orpo):
        deltas = [r["ndcg@10"] - c["ndcg@10"] for r, c in zip(runs[stage], runs["ce"], strict=True)]
        right.scatter([x] * len(deltas), deltas, color="black", s=12)
        right.errorbar(x, np.mean(deltas), yerr=np.std(deltas), fmt="o", color="tab:red")
    right.axhline(0, color="gray", linewidth=0.8)
    right.set_xticks(range(len(orpo)), orpo, rotation=20)
    right.set_ylabel("test NDCG@10 minus ce (same base run)")
    right.set_title("ORPO stages against continued training")
    fig.tight_layout()
    return save_figure(fig, out, "orpo_finetuning")


def table(results: dict[str, Any]) -> str:
    summary, paired = results["summary"], results["paired_vs_ce"]
    lines = [
        "| stage | test NDCG@10 | test HR@10 | held-out loss | NDCG@10 - ce (paired) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage, figures in summary.items():
        delta = paired.get(stage)
        cells = [f"{figures[k]['mean']:.4f} ± {figures[k]['std']:.4f}" for k in FIGURES]
        shown = "—" if delta is None else f"{delta['ndcg@10']['mean']:+.4f} ± "
        shown += "" if delta is None else f"{delta['ndcg@10']['std']:.4f}"
        lines.append(f"| {stage} | {' | '.join(cells)} | {shown} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    def weight(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--weight", type=float, default=0.1, help="λ of the ORPO stages")

    run_experiment(
        __doc__,
        "orpo_finetuning",
        "ORPO fine-tuning improves ranking beyond continued next-item training",
        lambda args: run_stages(args.out, seeds_of(args), args.quick, args.weight),
        figure,
        table,
        options=weight,
    )


if __name__ == "__main__":
    main()

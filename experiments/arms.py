"""Training *arms* (one recipe with different overrides) compared by the time each takes to
reach a target validation NDCG@10: what the adaptive batch and adaptive step size
experiments share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import REPO, mean_std

from srt_jax.config import load_config
from srt_jax.train.loop import train
from srt_jax.train.run_dir import RunDirectory

TARGET_FRACTION = 0.95
"""The target is this fraction of the baseline arm's mean best validation NDCG@10."""


def records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The ``kind`` records (``train``, ``eval``) of a run's ``metrics.jsonl``."""
    return [r for r in RunDirectory(run_dir).read_metrics() if r["kind"] == kind]


def train_arm(config: str, overrides: list[str], run_dir: Path, progress: bool) -> dict[str, Any]:
    """Train ``config`` (relative to the repository) with ``overrides`` into ``run_dir``.

    Returns ``summary`` (test NDCG@10 and held-out loss at the best-validation checkpoint,
    optimiser updates, trained tokens, wall seconds) and ``evals``: per validation, the
    step, optimiser updates, trained tokens, seconds in the training loop (``loop_s``, no
    evaluation or compilation of evaluation) and validation NDCG@10.
    """
    summary = train(load_config(REPO / config, overrides), run_dir, progress=progress)
    return {
        "summary": {
            "ndcg@10": summary["eval"]["ndcg@10"],
            "loss": summary["eval"]["loss"],
            "updates": summary["updates"],
            "train_tokens": summary["train_tokens"],
            "wall_s": summary["wall_s"],
            "accumulation": summary["accumulation"],
        },
        "evals": [
            {
                "step": r["step"],
                "updates": r.get("updates", r["step"]),  # a fixed batch updates every step
                "tokens": r["tokens"],
                "loop_s": r["loop_s"],
                "valid_ndcg@10": r["metrics"]["ndcg@10"],
            }
            for r in records(run_dir, "eval")
        ],
    }


def time_to_target(runs: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, Any]:
    """Per arm, mean ± std over seeds of the final figures, and of the updates, trained
    tokens and loop seconds at the first validation reaching the target
    (:data:`TARGET_FRACTION` of ``baseline``'s mean best validation NDCG@10), with the
    number of seeds that reached it."""
    best = [max(e["valid_ndcg@10"] for e in run["evals"]) for run in runs[baseline]]
    target = TARGET_FRACTION * mean_std(best)["mean"]
    summary: dict[str, Any] = {}
    for arm, arm_runs in runs.items():
        reached = [
            next((e for e in run["evals"] if e["valid_ndcg@10"] >= target), None)
            for run in arm_runs
        ]
        hits = [e for e in reached if e is not None]
        summary[arm] = {
            key: mean_std([run["summary"][key] for run in arm_runs])
            for key in ("ndcg@10", "loss", "updates", "wall_s")
        }
        summary[arm]["reached"] = len(hits)
        for key in ("updates", "tokens", "loop_s"):
            summary[arm][f"{key}_to_target"] = mean_std([h[key] for h in hits]) if hits else None
    return {"target_valid_ndcg@10": target, "summary": summary}


def plot_curves(ax: Any, results: dict[str, Any], x: str, colours: dict[str, str]) -> None:
    """Validation NDCG@10 against ``x`` (``updates``, ``tokens``) of every run, one colour
    per arm, with the target as a dotted line."""
    for arm, arm_runs in results["runs"].items():
        for i, run in enumerate(arm_runs):
            ax.plot(
                [e[x] for e in run["evals"]],
                [e["valid_ndcg@10"] for e in run["evals"]],
                marker="o",
                markersize=3,
                color=colours[arm],
                label=arm if i == 0 else None,
            )
    ax.axhline(results["target_valid_ndcg@10"], color="gray", linestyle=":", label="target")
    ax.set_ylabel("validation NDCG@10")
    ax.legend()


def arms_table(results: dict[str, Any]) -> str:
    """The markdown table of :func:`time_to_target`'s summary."""

    def shown(value: dict[str, float] | None, digits: int) -> str:
        return "—" if value is None else f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"

    lines = [
        f"Target: validation NDCG@10 >= {results['target_valid_ndcg@10']:.4f}",
        "",
        "| arm | reached | updates to target | tokens to target | loop s to target | "
        "total updates | test NDCG@10 | held-out loss | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, s in results["summary"].items():
        n = len(results["runs"][arm])
        lines.append(
            f"| {arm} | {s['reached']}/{n} | {shown(s['updates_to_target'], 0)} | "
            f"{shown(s['tokens_to_target'], 0)} | {shown(s['loop_s_to_target'], 1)} | "
            f"{shown(s['updates'], 0)} | {shown(s['ndcg@10'], 4)} | {shown(s['loss'], 4)} | "
            f"{shown(s['wall_s'], 0)} |"
        )
    return "\n".join(lines) + "\n"

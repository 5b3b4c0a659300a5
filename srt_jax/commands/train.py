"""``srt-jax train`` (train or resume one run) and ``srt-jax eval`` (evaluate a run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from srt_jax.commands.output import finish
from srt_jax.config import config_hash, load_config

DEFAULT_RUNS_DIR = "runs"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``eval`` commands."""
    train = subparsers.add_parser(
        "train",
        help="train one model (resumes when RUN_DIR holds a checkpoint)",
        description="Train the run of CONFIG.yaml (plus --set overrides): evaluate held-out "
        "loss and validation ranking every train.eval_every_tokens, checkpoint, and take the "
        "test figures at the best-validation checkpoint. Writes RUN_DIR/config.yaml, "
        "metrics.jsonl, checkpoints/ and summary.json; an interrupted run resumes exactly.",
    )
    train.add_argument("config", metavar="CONFIG.yaml", help="run config (YAML)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set model.d_model=128 (repeatable)",
    )
    train.add_argument(
        "--out", metavar="RUN_DIR", help=f"run directory (default {DEFAULT_RUNS_DIR}/<run_id>)"
    )
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "eval",
        help="evaluate a run's best-validation checkpoint",
        description="Rank the valid or test targets with the run's best-validation checkpoint "
        "(full ranking unless the run's eval.sampled_candidates is set; unfiltered and "
        "seen-item-filtered) and compute the held-out loss.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    evaluate.add_argument(
        "--split", choices=("valid", "test"), default="test", help="targets to rank (test)"
    )
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``srt-jax train``."""
    from srt_jax.train.distributed import initialize_from_env
    from srt_jax.train.loop import train

    config = load_config(args.config, args.overrides)
    initialize_from_env()
    run_dir = Path(args.out) if args.out else Path(DEFAULT_RUNS_DIR) / config_hash(config)
    summary = train(config, run_dir, progress=not args.quiet)
    text = "\n".join(
        [
            f"run {summary['run_id']}: {summary['status']} in {run_dir}",
            metrics_table(summary["eval"], summary["protocol"]["cutoffs"]),
            f"held-out loss {_fmt(summary['eval']['loss'])} nats/token; test figures at step "
            f"{summary['eval']['step']} (best validation ndcg@10)",
        ]
    )
    finish(args, {"run_dir": str(run_dir), **summary}, text)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``srt-jax eval``."""
    from srt_jax.train.run_eval import evaluate_run

    result = evaluate_run(args.run_dir, args.split)
    text = "\n".join(
        [
            f"run {result['run_id']}, {args.split} split, checkpoint step {result['step']}, "
            f"{result['protocol']['ranking']} ranking",
            metrics_table(result["metrics"], result["protocol"]["cutoffs"]),
            f"held-out loss {_fmt(result['loss'])} nats/token",
        ]
    )
    finish(args, result, text)
    return 0


def metrics_table(metrics: dict[str, Any], cutoffs: list[int]) -> str:
    """Rows metric@k, columns unfiltered and seen-filtered."""
    from srt_jax.train.evaluate import FILTERED
    from srt_jax.train.metrics import METRIC_NAMES

    lines = [f"{'metric':<10} {'unfiltered':>10} {'filtered':>10}"]
    for name in METRIC_NAMES:
        for k in cutoffs:
            key = f"{name}@{k}"
            lines.append(
                f"{key:<10} {_fmt(metrics.get(key)):>10} {_fmt(metrics.get(key + FILTERED)):>10}"
            )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

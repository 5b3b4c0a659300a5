"""A fast stand-in for ``srt_jax.train.loop.train`` for the sweep executor tests.

It keeps the run-directory contract that the sweep relies on: ``metrics.jsonl`` lines
(train and eval), a checkpoint every few steps, resuming from it (lines past the checkpoint
dropped), ``summary.json`` written atomically at the end, status ``failed`` plus a
TrainingError for a learning rate above 1, and an immediate return for a finished run. Each
start appends ``run_id start_step pid gpus mem_fraction`` to the file named by
``$FAKE_RUN_LOG`` (the last two: ``$CUDA_VISIBLE_DEVICES`` and
``$XLA_PYTHON_CLIENT_MEM_FRACTION``, ``-`` when unset), so tests can count executions, see
resumes and see the GPUs a run was given. ``$FAKE_STEP_S`` sets the seconds per step (default 0.05).
The loss follows a known law ``E + A / N^a + B / D^b``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from srt_jax.config import RunConfig, config_hash, dump_config
from srt_jax.errors import TrainingError

TOKENS_PER_STEP = 100
CHECKPOINT_EVERY = 3
EVAL_EVERY = 4


def law_loss(n: float, d: float) -> float:
    return 2.0 + 30.0 / n**0.3 + 60.0 / d**0.3


def params(config: RunConfig) -> tuple[int, int]:
    d = config.model.d_model
    non_embedding = config.model.n_layers * 12 * d * d
    return non_embedding + 41 * d, non_embedding


def train(config: RunConfig, run_dir: str | Path, *, progress: bool = True) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["status"] == "done":
            return summary
    (run_dir / "config.yaml").write_text(dump_config(config))
    run_id = config_hash(config)
    checkpoint = run_dir / "checkpoint.json"
    start = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else 0
    with open(os.environ["FAKE_RUN_LOG"], "a") as log:
        gpus, fraction = (
            os.environ.get(name) or "-"
            for name in ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION")
        )
        log.write(f"{run_id} {start} {os.getpid()} {gpus} {fraction}\n")
    metrics = run_dir / "metrics.jsonl"
    kept = []
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= start:
                    kept.append(line + "\n")
            except (ValueError, KeyError):
                pass
    metrics.write_text("".join(kept))
    total, non_embedding = params(config)
    steps = max(1, config.train.tokens // TOKENS_PER_STEP)
    per_token = 6.0 * total
    step_s = float(os.environ.get("FAKE_STEP_S", "0.05"))
    began = time.time()
    for step in range(start + 1, steps + 1):
        time.sleep(step_s)
        tokens = step * TOKENS_PER_STEP
        loss = law_loss(total, tokens)
        lines = [
            {
                "kind": "train",
                "step": step,
                "tokens": tokens,
                "flops": tokens * per_token,
                "loss": loss,
                "lr": 1e-3,
                "wall_s": time.time() - began,
            }
        ]
        if step % EVAL_EVERY == 0 or step == steps:
            lines.append(
                {
                    "kind": "eval",
                    "step": step,
                    "tokens": tokens,
                    "flops": tokens * per_token,
                    "loss": loss,
                    "wall_s": 0.0,
                    "metrics": {"ndcg@10": 1.0 / loss},
                }
            )
        with metrics.open("a") as handle:
            handle.writelines(json.dumps(x) + "\n" for x in lines)
        if step % CHECKPOINT_EVERY == 0:
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step}))
            tmp.replace(checkpoint)
    tokens = steps * TOKENS_PER_STEP
    summary = {
        "run_id": run_id,
        "status": "done",
        "error": None,
        "params_total": total,
        "params_embedding": total - non_embedding,
        "params_non_embedding": non_embedding,
        "flops_per_token": per_token,
        "train_flops": tokens * per_token,
        "train_tokens": tokens,
        "wall_s": time.time() - began,
        "eval": {"loss": law_loss(total, tokens), "ndcg@10": 1.0 / law_loss(total, tokens)},
    }
    if config.train.learning_rate > 1.0:
        summary.update(status="failed", error=f"non-finite loss at step {steps}")
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary))
    tmp.replace(summary_path)
    if summary["status"] == "failed":
        raise TrainingError(summary["error"])
    return summary

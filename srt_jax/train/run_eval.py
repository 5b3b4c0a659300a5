"""Evaluation of a run's best checkpoint: the test figures at the end of training, and
``srt-jax eval`` of a saved run."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from srt_jax.config import config_hash
from srt_jax.errors import TrainingError
from srt_jax.train.build import RunParts, build_run
from srt_jax.train.checkpoint import BEST_METRIC, Checkpoints
from srt_jax.train.evaluate import SplitName
from srt_jax.train.loop_state import LoopState
from srt_jax.train.run_dir import RunDirectory


def checkpoint_params(parts: RunParts, checkpoints: Checkpoints, step: int) -> nnx.State:
    """The model parameters saved at ``step``, on the run's mesh."""
    state, _ = checkpoints.restore(step, parts.step.abstract_state())
    return state["params"]


def evaluate_run(run_dir: str | Path, which: SplitName, *, progress: bool = False) -> dict:
    """Metrics of a run's best-validation checkpoint on ``which`` (valid or test); the latest
    checkpoint when no evaluation has run yet.

    Returns ``{"run_id", "split", "step", "loss", "metrics", "protocol"}``.
    """
    run = RunDirectory(run_dir)
    config = run.read_config()
    if not run.checkpoint_dir.is_dir() or not any(run.checkpoint_dir.iterdir()):
        raise TrainingError(f"{run.checkpoint_dir}: no checkpoint to evaluate")
    parts = build_run(config, progress=progress)
    checkpoints = Checkpoints(run.checkpoint_dir, config.train.keep_checkpoints)
    try:
        latest = checkpoints.latest_step()
        if latest is None:
            raise TrainingError(f"{run.checkpoint_dir}: no checkpoint to evaluate")
        best = LoopState.from_json(checkpoints.restore_loop(latest)).best
        step = latest if best is None else best["step"]
        params = checkpoint_params(parts, checkpoints, step)
    finally:
        checkpoints.close()
    which_checkpoint = (
        f"latest (step {step}; no validation yet)"
        if best is None
        else f"best validation {BEST_METRIC} (step {step})"
    )
    return {
        "run_id": config_hash(config),
        "split": which,
        "step": step,
        "loss": parts.evaluator.heldout_loss(params),
        "metrics": parts.evaluator.metrics(params, which),
        "protocol": {**parts.evaluator.protocol(), "checkpoint": which_checkpoint},
    }

"""Evaluation of a run's best checkpoint: the test figures at the end of training, and
``srt-jax eval`` of a saved run (:func:`restore_best` rebuilds a saved run and restores
that checkpoint; serving, :mod:`srt_jax.serve`, starts there too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from srt_jax.config import config_hash
from srt_jax.errors import TrainingError
from srt_jax.train.build import RunParts, build_run
from srt_jax.train.checkpoint import Checkpoints, best_step, checkpoint_params
from srt_jax.train.evaluate import SplitName
from srt_jax.train.run_dir import RunDirectory


@dataclass
class RestoredRun:
    """A saved run rebuilt from its config, with the parameters of its best checkpoint.

    Attributes:
      run_id: the config hash.
      parts: the run's data, split, model, step and evaluator (:func:`build_run`).
      step: the restored checkpoint's step.
      params: its parameters to evaluate (:func:`checkpoint_params`), on the run's mesh.
      checkpoint: which checkpoint it is and why, in words.
    """

    run_id: str
    parts: RunParts
    step: int
    params: nnx.State
    checkpoint: str


def restore_best(
    run_dir: str | Path, *, purpose: str = "evaluate", progress: bool = False
) -> RestoredRun:
    """Rebuild the run in ``run_dir`` and restore its best-validation checkpoint (the latest
    one when no evaluation has run yet), on the run's mesh or, where this machine has too
    few devices for it, on one (:func:`~srt_jax.train.build.run_mesh`). Writes nothing in
    the run directory.

    Raises:
      TrainingError: the run has no checkpoint (``no checkpoint to <purpose>``), or its
        checkpoint does not match its config's model.
    """
    run = RunDirectory(run_dir)
    config = run.read_config()
    if not run.checkpoint_dir.is_dir() or not any(run.checkpoint_dir.iterdir()):
        raise TrainingError(f"{run.checkpoint_dir}: no checkpoint to {purpose}")
    parts = build_run(config, progress=progress, fit_devices=True)
    checkpoints = Checkpoints(run.checkpoint_dir, config.train.keep_checkpoints)
    try:
        step, which_checkpoint = best_step(checkpoints, purpose)
        params = checkpoint_params(parts.step, checkpoints, step)
    finally:
        checkpoints.close()
    return RestoredRun(config_hash(config), parts, step, params, which_checkpoint)


def evaluate_run(run_dir: str | Path, which: SplitName, *, progress: bool = False) -> dict:
    """Metrics of a run's best-validation checkpoint on ``which`` (valid or test); the latest
    checkpoint when no evaluation has run yet.

    Returns ``{"run_id", "split", "step", "loss", "metrics", "protocol"}``.
    """
    restored = restore_best(run_dir, progress=progress)
    evaluator, params = restored.parts.evaluator, restored.params
    return {
        "run_id": restored.run_id,
        "split": which,
        "step": restored.step,
        "loss": evaluator.heldout_loss(params),
        "metrics": evaluator.metrics(params, which),
        "protocol": {**evaluator.protocol(), "checkpoint": restored.checkpoint},
    }

"""Checkpoints of a run with orbax: the last k, and the best by validation NDCG@10.

One :class:`orbax.checkpoint.CheckpointManager` keeps a step's checkpoint when either of two
preservation policies keeps it (``AnyPreservationPolicy``): ``LatestN(k)`` — the k most
recent — and ``BestN(n=1)`` over the metrics saved with evaluation checkpoints (checkpoints
saved without metrics are not candidates for best; on ties the later one is kept). The
loop tracks which step is best itself (in the loop state below). A checkpoint holds

- ``state``: the train state (model parameters and optimiser state), restored onto the
  caller's shardings;
- ``loop``: the loop state as JSON (step, tokens, wall seconds, best validation figures,
  the unlogged part of the loss interval). It has no RNG state: batch k and the step's keys
  derive from (seed, k).

Saves are synchronous and atomic (orbax writes a temporary directory and renames it), so a
process killed at any moment leaves the previous checkpoints intact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "ndcg@10"
"""The validation metric (unfiltered) that picks the best checkpoint; higher is better."""


def _best_metric(metrics: dict[str, float]) -> float:
    return metrics[BEST_METRIC]


class _NoMissingMetricWarning(logging.Filter):
    """Checkpoints between evaluations are saved without metrics on purpose; orbax warns
    about each of them once ``best_fn`` is set."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMissingMetricWarning())


class Checkpoints:
    """The checkpoints of one run directory.

    Args:
      directory: where the step directories live (created if missing).
      keep_last: how many of the most recent checkpoints to keep (besides the best).
    """

    def __init__(self, directory: str | Path, keep_last: int) -> None:
        preservation = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep_last),
                policies.BestN(
                    get_metric_fn=_best_metric,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                preservation_policy=preservation,
                # best_fn makes orbax write the metrics to disk, so a resumed run's manager
                # still knows which earlier checkpoint is best (BestN reads them back)
                best_fn=_best_metric,
                best_mode="max",
                enable_async_checkpointing=False,
            ),
            item_names=("state", "loop"),
        )

    def save(
        self,
        step: int,
        state: Any,
        loop_state: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Save ``state`` and ``loop_state`` as step ``step`` (``metrics`` for best-keeping)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop_state)
            ),
            metrics=metrics,
            force=True,
        )
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        """The most recent saved step, or None."""
        return self.manager.latest_step()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """``(state, loop_state)`` of ``step``; ``abstract_state`` gives shapes and shardings."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()
            ),
        )
        return restored.state, dict(restored.loop)

    def restore_loop(self, step: int) -> dict[str, Any]:
        """The loop state of ``step`` alone (no array is read)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
        return dict(restored.loop)

    def close(self) -> None:
        """Finish pending work and release the manager."""
        self.manager.close()

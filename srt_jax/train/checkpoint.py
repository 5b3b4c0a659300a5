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

Restoring checks the saved state's tree (leaf paths and shapes, from the checkpoint's
metadata) against the caller's target first: a checkpoint of another model (another
backbone, width, catalog, ...) is a :class:`~srt_jax.errors.TrainingError` naming the
checkpoint and the first differing parameters, never orbax's raw exception. A checkpoint
whose files cannot be read (truncated or corrupted by a crash of the disk, not of the
process) is a :class:`~srt_jax.errors.CheckpointUnreadableError`;
:meth:`Checkpoints.restore_latest` then falls back to the previous checkpoint.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers as policies

from srt_jax.errors import CheckpointUnreadableError, TrainingError, first_line
from srt_jax.train.loop_state import LoopState

if TYPE_CHECKING:
    from srt_jax.train.step import TrainStep

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
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "loop": ocp.JsonCheckpointHandler(),
            },
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
        """``(state, loop_state)`` of ``step``; ``abstract_state`` gives shapes and shardings.

        Raises:
          TrainingError: the saved state does not fit ``abstract_state`` (another model's
            checkpoint): names the checkpoint and the differing parameters.
        """
        where = f"checkpoint {self.manager.directory / str(step)}"

        def unreadable(err: Exception) -> CheckpointUnreadableError:
            return CheckpointUnreadableError(f"{where}: unreadable ({first_line(err)})")

        try:
            saved = self.manager.item_metadata(step).state
        except Exception as err:  # unreadable metadata: a damaged checkpoint
            raise unreadable(err) from None
        difference = state_difference(saved, abstract_state)
        if difference:
            raise TrainingError(
                f"{where}: the saved parameters do not match the run's model ({difference}); "
                "it was saved by another model config (e.g. another model.backbone or size)"
            )
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()
                ),
            )
        except ValueError as err:
            if saved is None:  # a mismatch the metadata could not show
                raise TrainingError(
                    f"{where}: the saved parameters do not match the run's model "
                    f"({first_line(err)})"
                ) from None
            raise unreadable(err) from None
        except Exception as err:  # missing or damaged files
            raise unreadable(err) from None
        return restored.state, dict(restored.loop)

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """``(step, state, loop_state)`` of the most recent readable checkpoint (None when
        there is none). An unreadable later one is deleted, with a warning on stderr naming
        it and the step resumed from, so the run can save that step again.

        Raises:
          TrainingError: a checkpoint of another model, or no readable checkpoint at all.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                state, loop_state = self.restore(step, abstract_state)
            except CheckpointUnreadableError as err:
                fallback = f"step {steps[i + 1]}" if i + 1 < len(steps) else "nothing"
                print(
                    f"srt-jax: warning: {err}; deleted it and falling back to {fallback}",
                    file=sys.stderr,
                    flush=True,
                )
                self.manager.delete(step)
                continue
            return step, state, loop_state
        if steps:
            raise TrainingError(
                f"{self.manager.directory}: no readable checkpoint is left (all "
                f"{len(steps)} were damaged); remove the run directory to start over"
            )
        return None

    def restore_loop(self, step: int) -> dict[str, Any]:
        """The loop state of ``step`` alone (no array is read)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
        return dict(restored.loop)

    def close(self) -> None:
        """Finish pending work and release the manager."""
        self.manager.close()


def best_step(checkpoints: Checkpoints, purpose: str) -> tuple[int, str]:
    """The step of the best-validation checkpoint (the latest one when no evaluation has run
    yet) and which one it is, in words.

    Raises:
      TrainingError: there is no checkpoint (``no checkpoint to <purpose>``).
    """
    latest = checkpoints.latest_step()
    if latest is None:
        raise TrainingError(f"{checkpoints.manager.directory}: no checkpoint to {purpose}")
    best = LoopState.from_json(checkpoints.restore_loop(latest)).best
    if best is None:
        return latest, f"latest (step {latest}; no validation yet)"
    return best["step"], f"best validation {BEST_METRIC} (step {best['step']})"


def checkpoint_params(train_step: TrainStep, checkpoints: Checkpoints, step: int) -> nnx.State:
    """The parameters to evaluate of the checkpoint saved at ``step``, on the step's mesh
    (:meth:`~srt_jax.train.step.TrainStep.eval_params`: schedule-free's averaged ones)."""
    state, _ = checkpoints.restore(step, train_step.abstract_state())
    return train_step.eval_params(state)


def state_difference(saved: Any, target: Any, shown: int = 3) -> str | None:
    """How the saved tree ``saved`` (checkpoint metadata; None when there is none) differs
    from the restore target ``target`` in leaf paths and shapes, in words; None when they
    agree. Parameter paths (``params.…``) are named before optimiser-state ones."""
    if saved is None:
        return None
    have, want = _shapes_by_path(saved), _shapes_by_path(target)

    def listing(paths: list[str]) -> str:
        paths = sorted(paths, key=lambda p: (not p.startswith("params."), p))
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        return ", ".join(paths[:shown]) + more

    parts = []
    missing = [p for p in want if p not in have]
    unexpected = [p for p in have if p not in want]
    reshaped = [p for p in want if p in have and have[p] != want[p]]
    if missing:
        parts.append(f"not in the checkpoint: {listing(missing)}")
    if unexpected:
        parts.append(f"not in the model: {listing(unexpected)}")
    if reshaped:
        first = sorted(reshaped, key=lambda p: (not p.startswith("params."), p))[0]
        parts.append(
            f"{len(reshaped)} shape(s) differ, e.g. {first}: saved {have[first]}, "
            f"model {want[first]}"
        )
    return "; ".join(parts) or None


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"params.blocks.0.attn.out.kernel": shape, ...}`` of a state tree, abstract or
    concrete or orbax metadata (Variable ``value`` wrappers dropped from the path)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [_key_name(key) for key in path]
        if names and names[-1] == "value":
            names.pop()
        out[".".join(names)] = tuple(getattr(leaf, "shape", ()) or ())
    return out


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)

"""The loop state: what the training loop carries between steps and through checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class LoopState:
    """What the loop carries between steps and through checkpoints (JSON; no RNG state).

    ``interval_loss_sum`` / ``interval_count`` hold the steps since the last train line;
    ``best`` and ``last_eval`` are eval records (step, tokens, loss, metrics);
    ``batch_controller`` is the adaptive batch's controller
    (:class:`~srt_jax.train.adaptive_batch.BatchController`), null with a fixed batch.
    """

    step: int = 0
    tokens: int = 0
    next_eval_tokens: int | None = None
    wall_s: float = 0.0
    loop_s: float = 0.0
    interval_loss_sum: float = 0.0
    interval_count: float = 0.0
    best: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None
    batch_controller: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (exact: Python floats round-trip through JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LoopState:
        """Inverse of :meth:`to_json`."""
        return cls(**raw)

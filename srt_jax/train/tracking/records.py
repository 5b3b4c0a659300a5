"""What the trackers log, taken from the records the run writes anyway: ``metrics.jsonl``
lines become scalars, ``summary.json`` the final test figures, summary parameters and tags.

Names follow MLflow's rules (letters, digits, ``_ - . / : space``): ``ndcg@10`` is logged
as ``ndcg_at_10``, as in the SRT sweep's MLflow store; :func:`srt_jax.scaling.mlflow_sqlite`
maps it back when it reads a store srt-jax wrote.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_SKIP = ("kind", "step")
"""Keys of a train line that are not scalars of it."""
EVAL_SKIP = ("kind", "step", "metrics")
SUMMARY_PARAMS = (
    "params_total",
    "params_non_embedding",
    "params_embedding",
    "train_tokens",
    "train_flops",
    "flops_per_token",
    "token_budget",
)
"""``summary.json`` figures logged as parameters when a run finishes (what the scaling fit
reads back: N, D and C of the run)."""


def metric_name(name: str) -> str:
    """A name MLflow accepts: ``@`` becomes ``_at_``; any other character outside
    letters, digits and ``_ - . / : space`` becomes ``_``."""
    return re.sub(r"[^\w\-./: ]", "_", name.replace("@", "_at_"))


def _numbers(record: dict[str, Any], prefix: str, skip: tuple[str, ...]) -> dict[str, float]:
    """``prefix/key -> value`` of the record's finite numbers (booleans and nulls left out)."""
    out = {}
    for key, value in record.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[metric_name(f"{prefix}/{key}")] = float(value)
    return out


class ScalarStream:
    """Turns ``metrics.jsonl`` lines into ``(step, {name: value})`` for the trackers.

    Train lines give ``train/<key>`` for every number of the line, plus
    ``train/batch_size`` (sequences per optimiser update: ``batch_size`` x the adaptive
    batch's accumulation) and ``train/tokens_per_s`` (trained tokens per wall second since
    the previous train line of this session). Eval lines give ``eval/<key>`` and
    ``eval/<metric>`` for the validation ranking metrics.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.previous: tuple[float, float] | None = None  # (tokens, wall_s) of the last train

    def scalars(self, record: dict[str, Any]) -> tuple[int, dict[str, float]]:
        """The step and the scalars of one ``metrics.jsonl`` record."""
        step = int(record["step"])
        if record["kind"] == "eval":
            values = _numbers(record, "eval", EVAL_SKIP)
            values |= _numbers(record.get("metrics") or {}, "eval", ())
            return step, values
        values = _numbers(record, "train", TRAIN_SKIP)
        values["train/batch_size"] = float(self.batch_size * record.get("accumulation", 1))
        tokens, wall = float(record["tokens"]), float(record["wall_s"])
        if self.previous is not None and wall > self.previous[1]:
            values["train/tokens_per_s"] = (tokens - self.previous[0]) / (wall - self.previous[1])
        self.previous = (tokens, wall)
        return step, values


@dataclass(frozen=True)
class FinalRecord:
    """What a finished run adds: ``scalars`` (:func:`final_scalars`) at optimiser ``step``,
    ``params`` (:func:`summary_params`), ``tags`` (:func:`protocol_tags`), the learning-curve
    ``figure`` (PNG) and other files to keep (``artifacts``: config, summary)."""

    step: int
    scalars: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    figure: Path
    artifacts: tuple[Path, ...]


def final_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """``test/<figure>`` of a finished run: the held-out loss and the test ranking metrics at
    the best-validation checkpoint (``summary.eval``; the run's N, D and C are parameters,
    :func:`summary_params`)."""
    evaluation = {k: v for k, v in summary["eval"].items() if k not in ("step", "valid")}
    return _numbers(evaluation, "test", ())


def summary_params(summary: dict[str, Any]) -> dict[str, str]:
    """The :data:`SUMMARY_PARAMS` of a finished run's summary, as text."""
    return {key: str(summary[key]) for key in SUMMARY_PARAMS if summary.get(key) is not None}


def protocol_tags(summary: dict[str, Any]) -> dict[str, str]:
    """``protocol.<key> -> text`` of the run's evaluation protocol (``summary.protocol``)."""
    return {
        metric_name(f"protocol.{key}"): str(value)
        for key, value in (summary.get("protocol") or {}).items()
    }

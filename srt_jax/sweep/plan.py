"""The plan of a sweep: every run's shape, N, D, C, 6ND and estimated time, and the totals.

N (total, embedding, non-embedding) is counted on an abstract model (``nnx.eval_shape``: no
parameter is allocated). D and C come from :mod:`srt_jax.sweep.spec`. The time estimate is
``steps x seconds per step``, where ``steps = ceil(D / expected target tokens per batch)`` and
the seconds per step are MEASURED: a few real jitted training steps
(:func:`srt_jax.train.timing.time_steps`, compilation excluded) of each distinct step shape
(model, window length, batch size, loss, catalog). Calibrations are cached in
``<root>/calibration.json`` (per host), so planning again costs nothing. The estimate leaves
out compilation, evaluation and process start (see ``benchmarks/bench_sweep.py`` for those).
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flax import nnx

from srt_jax.config import ModelConfig, RunConfig, config_hash, to_dict
from srt_jax.data.sampler import WindowSampler
from srt_jax.data.store import SequenceStore
from srt_jax.models.counting import ParamCounts, count_params, six_n_d
from srt_jax.models.factory import build_model, model_item_features, shape_label
from srt_jax.progress import progress_bar
from srt_jax.sweep.spec import PlannedRun, SkippedRun, SweepSpec, expand
from srt_jax.train.run_dir import write_atomic
from srt_jax.train.timing import time_steps

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class PlanRow:
    """A run with its parameter counts and estimated training seconds (None: not measured)."""

    run: PlannedRun
    params: ParamCounts
    seconds: float | None

    @property
    def six_nd(self) -> float:
        """Kaplan's 6 N D with N the total parameter count."""
        return six_n_d(self.params.total, self.run.tokens)


@dataclass(frozen=True)
class Plan:
    """Every run of a sweep with its figures, the skipped combinations and the totals."""

    spec: SweepSpec
    rows: tuple[PlanRow, ...]
    skipped: tuple[SkippedRun, ...]
    merged: int

    @property
    def total_compute(self) -> float:
        """Sum of the runs' analytic training FLOPs."""
        return sum(row.run.compute for row in self.rows)

    @property
    def total_seconds(self) -> float | None:
        """Sum of the runs' estimated training seconds (None without calibration)."""
        if any(row.seconds is None for row in self.rows):
            return None
        return sum(row.seconds for row in self.rows)


def make_plan(
    spec: SweepSpec,
    *,
    root: str | Path | None = None,
    calibrate: bool = True,
    calibration_steps: int = 5,
    progress: bool = True,
) -> Plan:
    """The plan of ``spec``; with ``calibrate``, time ``calibration_steps`` real steps per
    distinct step shape (cached in ``<root>/calibration.json`` when ``root`` is given), with
    a progress bar unless ``progress`` is False."""
    expansion = expand(spec)
    seconds: dict[str, float] = {}
    if calibrate:
        seconds = _calibrated_seconds(expansion.runs, root, calibration_steps, progress)
    rows = tuple(
        PlanRow(
            run=run,
            params=param_counts(run.config.model, run.facts.store, run.config.data.max_len),
            seconds=seconds.get(run.run_id),
        )
        for run in expansion.runs
    )
    return Plan(spec, rows, expansion.skipped, expansion.merged)


@functools.lru_cache(maxsize=256)
def param_counts(model_cfg: ModelConfig, store: SequenceStore, max_len: int) -> ParamCounts:
    """Parameter counts of the model ``model_cfg`` builds on ``store`` (abstract: nothing is
    allocated)."""
    features = model_item_features(model_cfg, store)
    abstract = nnx.eval_shape(
        lambda: build_model(model_cfg, store.n_items, max_len, nnx.Rngs(0), item_features=features)
    )
    return count_params(abstract)


# --------------------------------------------------------------------------- calibration


def step_shape_key(config: RunConfig, n_items: int) -> str:
    """Id of what a training step's time depends on (model, window, batch, loss, catalog)."""
    train = config.train
    shape = {
        "model": to_dict(config.model),
        "max_len": config.data.max_len,
        "batch_size": train.batch_size,
        "loss": train.loss,
        "num_negatives": train.num_negatives,
        "negatives": train.negatives,
        "data_parallel": train.data_parallel,
        "n_items": n_items,
        "host": platform.node(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    if train.item_shards > 1:  # keys of unsharded shapes predate the option
        shape["item_shards"] = train.item_shards
    return config_hash(shape, length=16)


def _calibrated_seconds(
    runs: tuple[PlannedRun, ...], root: str | Path | None, steps: int, progress: bool
) -> dict[str, float]:
    """Estimated training seconds of each run (by run id), measuring new step shapes."""
    cache_path = None if root is None else Path(root) / CALIBRATION_FILE
    cache: dict[str, dict[str, Any]] = {}
    if cache_path is not None and cache_path.is_file():
        cache = json.loads(cache_path.read_text())
    keys = {run.run_id: step_shape_key(run.config, run.facts.n_items) for run in runs}
    todo = {}
    for run in runs:
        if keys[run.run_id] not in cache:
            todo.setdefault(keys[run.run_id], run)
    if todo:
        bar = progress_bar(len(todo), "calibrating step shapes", unit="shape", disable=not progress)
        for key, run in todo.items():
            cache[key] = {
                "seconds_per_step": float(time_steps(run.config, steps)),
                "steps": steps,
                "shape": shape_label(run.config.model),
            }
            bar.update(1)
            if cache_path is not None:
                write_atomic(cache_path, json.dumps(cache, indent=1, sort_keys=True))
        bar.close()
    return {
        run.run_id: math.ceil(run.tokens / tokens_per_step(run))
        * cache[keys[run.run_id]]["seconds_per_step"]
        for run in runs
    }


def tokens_per_step(run: PlannedRun) -> float:
    """Expected trained target tokens of one batch of ``run`` (its sampler's exact mean)."""
    train = run.config.train
    sampler = WindowSampler.from_config(
        run.facts.store.items,
        run.facts.split.train,
        run.config.data,
        train.batch_size,
        train.seed,
        token_budget=run.tokens,  # the epoch-mixed schedule places its switch by it
    )
    return sampler.expected_tokens_per_batch()


# --------------------------------------------------------------------------- display


def format_plan(plan: Plan) -> str:
    """The plan as a text table with the skipped combinations and the totals."""
    varying = _varying_keys(plan)
    header = ["run_id", "shape", *varying, "N", "N_non_emb", "D", "C", "6ND", "est. time"]
    table = [header]
    for row in plan.rows:
        table.append(
            [
                row.run.run_id,
                shape_label(row.run.config.model),
                *(_short(row.run.assignments.get(k)) for k in varying),
                _si(row.params.total),
                _si(row.params.non_embedding),
                _si(row.run.tokens),
                f"{row.run.compute:.3g}",
                f"{row.six_nd:.3g}",
                "-" if row.seconds is None else _duration(row.seconds),
            ]
        )
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    lines = [f"sweep {plan.spec.name} ({plan.spec.path}): {len(plan.rows)} runs"]
    if plan.spec.description:
        lines.append(plan.spec.description)
    lines.append("")
    for i, r in enumerate(table):
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += skipped_lines((s.assignments, s.budget, s.reason) for s in plan.skipped)
    if plan.merged:
        lines.append(f"\n{plan.merged} combinations resolved to a config already listed")
    total = plan.total_seconds
    lines += [
        "",
        f"total compute: {plan.total_compute:.4g} FLOPs (analytic training FLOPs, sum over runs)",
        "estimated time: "
        + (
            "not measured (--no-calibrate)"
            if total is None
            else f"{_duration(total)} of training, one run at a time on the "
            f"{len(os.sched_getaffinity(0))} cores of this process (measured step times x "
            "steps; compilation, evaluation and process start not included)"
        ),
    ]
    return "\n".join(lines)


def _varying_keys(plan: Plan) -> list[str]:
    """Non-model axis keys whose value differs between runs (shown as their own columns)."""
    keys: dict[str, set[str]] = {}
    for row in plan.rows:
        for key, value in row.run.assignments.items():
            if not key.startswith("model."):
                keys.setdefault(key, set()).add(json.dumps(value))
    return [k for k, values in keys.items() if len(values) > 1]


def skipped_lines(skipped: Iterable[tuple[dict[str, Any], float | None, str]]) -> list[str]:
    """Text lines listing ``(assignments, budget, reason)`` combinations that cannot run
    (none when there are none), for ``sweep plan`` and ``sweep status``."""
    lines = []
    for assignments, budget, reason in skipped:
        shown = " ".join(f"{k}={_short(v)}" for k, v in assignments.items())
        lines.append(f"  {'' if budget is None else f'C={budget:.3g} '}{shown}: {reason}")
    if not lines:
        return []
    return ["", f"skipped ({len(lines)} combinations that cannot run):", *lines]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(int(value))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.2f}h"

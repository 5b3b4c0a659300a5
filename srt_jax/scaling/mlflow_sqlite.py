"""Importer for MLflow tracking databases (SQLite, plain or bzip2-compressed).

MLflow's schema keeps run parameters as strings in ``params`` and metric histories in
``metrics`` (key, step, value, timestamp). Which names hold what is set by
:class:`MlflowNames`; the defaults read the SRT sweep (Zivic et al. 2024, RecBole):

- N: ``model_total_params`` (or ``model_non_emb_params``).
- Compute: ``total_flops`` is the profiler's count for ONE training batch (forward
  multiply-accumulates of the modules, loss included), so, as in the SRT authors' own
  ``load_flops_metrics``, one epoch costs ``total_flops * n_inters / train_batch_size`` and
  the run ``(step + 1)`` times that after epoch ``step`` (``compute_unit="batch"``). With
  ``compute_unit="run"`` the parameter is taken as the run's total training FLOPs.
- D: trained target positions, ``n_inters * (step + 1)``: RecBole's sequential training
  makes every interaction one supervised target per epoch (prefix augmentation; the
  interactions held out for validation and test are counted too, an overestimate of 2 per
  user). MLflow records no token counter, so this is the best the database allows.
- Loss: the final (last-step) value of ``valid/eval_loss``, falling back to
  ``test/eval_loss``; ranking metrics are the final ``valid/*`` values, named without the
  prefix (``ndcg_at_5``); curves are the per-step histories of the same metrics.

A store written by srt-jax's MLflow tracker (:mod:`srt_jax.train.tracking`; its runs carry
the tag ``srt_jax.run_id``) is read with :data:`SRT_JAX_NAMES`: N from ``params_total`` and
``params_non_embedding``, D and C from the run's ``train_tokens`` and ``train_flops``, the
loss and ranking metrics from the ``test/`` figures at the best-validation checkpoint
(``test/ndcg_at_10`` read back as ``ndcg@10``) — the points ``srt-jax sweep export`` gives.
:func:`names_for` picks the names a store needs.
"""

from __future__ import annotations

import bz2
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from srt_jax.errors import ConfigError, DataError
from srt_jax.scaling.points import Curve, ScalingPoints, skipped_note

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class MlflowNames:
    """Which MLflow parameter and metric names hold N, C, D, loss and metrics.

    ``experiment`` selects an experiment by name or id (None: all); ``where`` keeps only
    runs whose parameters have the given (name, value) pairs (e.g. the SRT sweep mixes
    100 and 300 sampled negatives, whose losses are not comparable). ``data_unit``:
    ``data_size`` counts one epoch's tokens (``epoch``: also the run's unique tokens U, for
    the data-constrained law) or the whole run's (``run``), as ``compute_unit`` does for
    FLOPs; ``at_sign``: metric names' ``_at_`` read as ``@``
    (``ndcg_at_10`` -> ``ndcg@10``). See the module doc.
    """

    experiment: str | None = None
    n_total: str = "model_total_params"
    n_non_embedding: str = "model_non_emb_params"
    compute: str = "total_flops"
    compute_unit: Literal["batch", "run"] = "batch"
    data_size: str = "n_inters"
    data_unit: Literal["epoch", "run"] = "epoch"
    batch_size: str = "train_batch_size"
    loss: str = "valid/eval_loss"
    fallback_loss: str = "test/eval_loss"
    metric_prefix: str = "valid/"
    at_sign: bool = False
    where: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.compute_unit == "batch" and self.data_unit != "epoch":
            raise ConfigError(
                "MLflow compute per batch needs the data size per epoch "
                f"(compute_unit 'batch' with data_unit {self.data_unit!r})"
            )


SRT_JAX_NAMES = MlflowNames(
    n_total="params_total",
    n_non_embedding="params_non_embedding",
    compute="train_flops",
    compute_unit="run",
    data_size="train_tokens",
    data_unit="run",
    loss="test/loss",
    fallback_loss="test/loss",
    metric_prefix="test/",
    at_sign=True,
)
"""The names of a store written by srt-jax's MLflow tracker (see the module doc)."""
SRT_JAX_TAG = "srt_jax.run_id"
PRESETS = {"srt": MlflowNames(), "srt-jax": SRT_JAX_NAMES}
"""``srt-jax fit --mlflow-preset``: the SRT sweep's names, or srt-jax's own."""


def names_for(path: Path) -> MlflowNames:
    """:data:`SRT_JAX_NAMES` for a store whose runs srt-jax logged (tag ``srt_jax.run_id``),
    else the SRT sweep's names."""
    connection = open_database(path)
    try:
        _check_schema(connection, path)
        tables = {r[0] for r in connection.execute("select name from sqlite_master")}
        query = "select count(*) from tags where key = ?"
        written_by_srt_jax = (
            "tags" in tables and connection.execute(query, (SRT_JAX_TAG,)).fetchone()[0] > 0
        )
    finally:
        connection.close()
    return SRT_JAX_NAMES if written_by_srt_jax else MlflowNames()


def is_sqlite_source(path: Path) -> bool:
    """Whether ``path`` is a SQLite file, bzip2-compressed or not (judged by its header)."""
    try:
        opener = bz2.open if path.suffix.lower() == ".bz2" else open
        with opener(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def open_database(path: Path) -> sqlite3.Connection:
    """A read-only connection to the database (a .bz2 file is unpacked into memory)."""
    if not is_sqlite_source(path):
        raise DataError(f"{path}: not a SQLite database (plain or .bz2)")
    if path.suffix.lower() == ".bz2":
        connection = sqlite3.connect(":memory:")
        connection.deserialize(bz2.decompress(path.read_bytes()))
        return connection
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def load_mlflow(path: Path, names: MlflowNames) -> ScalingPoints:
    """Points and curves of every finished run in the database at ``path``."""
    connection = open_database(path)
    try:
        _check_schema(connection, path)
        runs, skipped = _selected_runs(connection, path, names)
        params = _params(connection, runs)
        histories = _histories(connection, runs, names)
    finally:
        connection.close()

    columns: dict[str, list] = {
        k: [] for k in ("run", "n", "n_ne", "d", "c", "loss", "unique", "curve")
    }
    metric_values: dict[str, list[float]] = {}
    for run in runs:
        history = histories.get(run, {})
        loss_key = names.loss if names.loss in history else names.fallback_loss
        if loss_key not in history:
            skipped["no loss metric"] += 1
            continue
        p = params.get(run, {})
        mismatch = [f"{key} != {value}" for key, value in names.where if p.get(key) != value]
        if mismatch:
            skipped[f"parameter {mismatch[0]}"] += 1
            continue
        curve = _curve(path, run, p, history, loss_key, names)
        columns["run"].append(run)
        columns["n"].append(_param(path, run, p, names.n_total))
        columns["n_ne"].append(_param(path, run, p, names.n_non_embedding))
        columns["d"].append(curve.tokens[-1])
        columns["c"].append(curve.flops[-1])
        columns["loss"].append(curve.loss[-1])
        columns["unique"].append(  # one epoch's tokens: the run's unique data
            _param(path, run, p, names.data_size) if names.data_unit == "epoch" else math.nan
        )
        columns["curve"].append(curve)
        for name, values in curve.metrics.items():
            metric_values.setdefault(name, []).append(values[-1])
    if not columns["run"]:
        raise DataError(f"{path}: no finished run with a {names.loss!r} metric")
    complete = {k: v for k, v in metric_values.items() if len(v) == len(columns["run"])}
    notes = [skipped_note(skipped)] if skipped else []
    notes.append(
        f"D = {names.data_size}"
        + (" x epochs" if names.data_unit == "epoch" else " (whole run)")
        + "; C = "
        + (
            f"{names.compute} x {names.data_size} / {names.batch_size} x epochs"
            if names.compute_unit == "batch"
            else f"{names.compute} (whole run)"
        )
    )
    return ScalingPoints.from_columns(
        columns["run"],
        columns["n"],
        columns["n_ne"],
        columns["d"],
        columns["c"],
        columns["loss"],
        metrics=complete,
        unique_tokens=columns["unique"],
        curves=columns["curve"],
        source=str(path),
        notes=notes,
    )


def load_run_params(path: Path, names: MlflowNames) -> dict[str, dict[str, str]]:
    """run id -> {parameter: value} of the runs :func:`load_mlflow` selects (experiment,
    status and lifecycle; the ``where`` filter and the loss check are not applied)."""
    connection = open_database(path)
    try:
        _check_schema(connection, path)
        runs, _ = _selected_runs(connection, path, names)
        params = _params(connection, runs)
    finally:
        connection.close()
    return {run: params.get(run, {}) for run in runs}


def _check_schema(connection: sqlite3.Connection, path: Path) -> None:
    tables = {r[0] for r in connection.execute("select name from sqlite_master")}
    missing = {"runs", "params", "metrics", "experiments"} - tables
    if missing:
        raise DataError(f"{path}: not an MLflow database (no table {sorted(missing)})")


def _selected_runs(
    connection: sqlite3.Connection, path: Path, names: MlflowNames
) -> tuple[list[str], Counter]:
    """Finished, active runs of the chosen experiment, and counts of the others by reason."""
    experiments = dict(connection.execute("select experiment_id, name from experiments"))
    wanted = None
    if names.experiment is not None:
        wanted = {i for i, n in experiments.items() if names.experiment in (n, str(i))}
        if not wanted:
            listing = ", ".join(f"{i}: {n}" for i, n in experiments.items())
            raise DataError(f"{path}: no experiment {names.experiment!r} (have {listing})")
    kept, skipped = [], Counter()
    query = "select run_uuid, experiment_id, status, lifecycle_stage from runs order by run_uuid"
    for run, experiment, status, stage in connection.execute(query):
        if wanted is not None and experiment not in wanted:
            continue
        if stage != "active":
            skipped[f"lifecycle {stage!r}"] += 1
        elif status != "FINISHED":
            skipped[f"status {status!r}"] += 1
        else:
            kept.append(run)
    return kept, skipped


def _params(connection: sqlite3.Connection, runs: list[str]) -> dict[str, dict[str, str]]:
    wanted = set(runs)
    params: dict[str, dict[str, str]] = {}
    for run, key, value in connection.execute("select run_uuid, key, value from params"):
        if run in wanted:
            params.setdefault(run, {})[key] = value
    return params


def _histories(
    connection: sqlite3.Connection, runs: list[str], names: MlflowNames
) -> dict[str, dict[str, dict[int, float]]]:
    """run -> metric key -> {step: value} for the loss keys and the metric-prefix keys.

    MLflow can log a value twice for one step; the latest timestamp wins.
    """
    wanted = set(runs)
    histories: dict[str, dict[str, dict[int, float]]] = {}
    query = "select run_uuid, key, step, value from metrics order by timestamp"
    for run, key, step, value in connection.execute(query):
        if run in wanted and (
            key in (names.loss, names.fallback_loss) or key.startswith(names.metric_prefix)
        ):
            histories.setdefault(run, {}).setdefault(key, {})[int(step)] = float(value)
    return histories


def _curve(
    path: Path,
    run: str,
    params: dict[str, str],
    history: dict[str, dict[int, float]],
    loss_key: str,
    names: MlflowNames,
) -> Curve:
    """The run's loss curve with cumulative tokens and FLOPs after each epoch ``step``."""
    steps = np.array(sorted(history[loss_key]), dtype=float)
    epochs = steps + 1.0
    data_size = _param(path, run, params, names.data_size)
    compute = _param(path, run, params, names.compute)
    tokens = data_size * epochs if names.data_unit == "epoch" else data_size * epochs / epochs[-1]
    if names.compute_unit == "batch":
        flops = compute * data_size / _param(path, run, params, names.batch_size) * epochs
    else:
        flops = compute * epochs / epochs[-1]
    metrics = {}
    for key, values in history.items():
        is_metric = key.startswith(names.metric_prefix) and key not in (loss_key, names.loss)
        if is_metric and all(int(s) in values for s in steps):
            name = key[len(names.metric_prefix) :]
            name = name.replace("_at_", "@") if names.at_sign else name
            metrics[name] = np.array([values[int(s)] for s in steps])
    return Curve(
        step=steps,
        tokens=tokens,
        flops=flops,
        loss=np.array([history[loss_key][int(s)] for s in steps]),
        metrics=metrics,
    )


def _param(path: Path, run: str, params: dict[str, str], key: str) -> float:
    if key not in params:
        raise DataError(f"{path}: run {run} has no parameter {key!r}")
    try:
        value = float(params[key])
    except ValueError:
        raise DataError(
            f"{path}: run {run} parameter {key!r} is {params[key]!r}, expected a number"
        ) from None
    if not value > 0:
        raise DataError(f"{path}: run {run} parameter {key!r} is {value}, expected > 0")
    return value

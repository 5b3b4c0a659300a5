"""Importers: results of any supported kind -> :class:`ScalingPoints`.

Formats (``load_points(source, fmt=...)``; "auto" picks one from what SOURCE is):

- ``runs``: a directory searched recursively for run directories (``summary.json`` +
  ``metrics.jsonl``, the run-directory contract of docs/architecture.md). Runs whose status
  is not "done" are skipped and counted in the notes. N from ``params_total`` /
  ``params_non_embedding``, D from ``train_tokens``, C from ``train_flops``, the loss from
  ``eval.loss``; the curve from the ``"kind": "eval"`` lines of ``metrics.jsonl``.
- ``export``: ``runs.csv`` / ``runs.parquet`` written by ``srt-jax sweep export`` (columns
  run_id, status, N, N_non_embedding, N_embedding, D, C, loss, metric columns, flattened
  config columns with dots), with an optional ``curves.csv`` / ``curves.parquet`` beside it
  (run_id, step, tokens, flops, loss, optional metric columns).
- ``csv``: a plain CSV or Parquet table, one row per point, with N, loss and D or C
  (column names by :class:`ColumnNames`); the missing one of D and C follows C = k N D.
- ``mlflow``: an MLflow tracking database (SQLite, plain or .bz2), see
  :mod:`srt_jax.scaling.mlflow_sqlite`.

:func:`srt_jax.scaling.run_values.load_run_values` reads one value per run beside the
points, for ``srt-jax fit --group-by``; :mod:`srt_jax.scaling.files` reads the tables and
JSON files with errors that name the file and line.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from srt_jax.errors import DataError
from srt_jax.scaling.files import (
    is_number,
    jsonl_lines,
    number_at,
    positive_key,
    read_json,
    read_table,
    require_column,
    required_key,
)
from srt_jax.scaling.mlflow_sqlite import MlflowNames, is_sqlite_source, load_mlflow, names_for
from srt_jax.scaling.points import Curve, ScalingPoints, skipped_note

SourceFormat = Literal["auto", "runs", "export", "csv", "mlflow"]
EXPORT_COLUMNS = ("run_id", "status", "N", "N_non_embedding", "N_embedding", "D", "C", "loss")
CURVE_COLUMNS = ("run_id", "step", "tokens", "flops", "loss")
UNIQUE_COLUMN = "U"
"""Optional column of an export or a plain table: the unique tokens of a run's data."""


@dataclass(frozen=True)
class ColumnNames:
    """Column names of a plain results table (``csv`` format).

    ``d`` or ``c`` may be absent from the table, not both; ``run_id``,
    ``n_non_embedding`` and ``unique_tokens`` (the unique tokens of the run's data, for the
    data-constrained law) are optional (rows are then named by their line number).
    """

    n: str = "N"
    d: str = "D"
    c: str = "C"
    loss: str = "loss"
    run_id: str = "run_id"
    n_non_embedding: str = "N_non_embedding"
    unique_tokens: str = UNIQUE_COLUMN


def load_points(
    source: str | Path,
    *,
    fmt: SourceFormat = "auto",
    columns: ColumnNames | None = None,
    mlflow: MlflowNames | None = None,
    flops_per_param_token: float = 6.0,
) -> ScalingPoints:
    """Load the points of ``source`` (a file or directory) in format ``fmt``.

    ``flops_per_param_token`` (k) completes a plain table that has only one of D and C.
    """
    path, fmt = resolve_source(source, fmt)
    if fmt == "runs":
        return load_run_dirs(path)
    if fmt == "export":
        return load_sweep_export(path)
    if fmt == "csv":
        return load_table(path, columns or ColumnNames(), flops_per_param_token)
    return load_mlflow(path, mlflow or names_for(path))


def resolve_source(source: str | Path, fmt: SourceFormat) -> tuple[Path, SourceFormat]:
    """``source`` as a path that exists, and its format (detected when ``fmt`` is "auto")."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path, detect_format(path) if fmt == "auto" else fmt


def detect_format(path: Path) -> SourceFormat:
    """The format of ``path`` judged from its name, layout and header."""
    if path.is_dir():
        if export_table(path) is not None:
            return "export"
        if next(path.rglob("summary.json"), None) is not None:
            return "runs"
        raise DataError(
            f"{path}: directory holds neither run directories (summary.json) nor a sweep "
            "export (runs.csv / runs.parquet)"
        )
    if is_sqlite_source(path):
        return "mlflow"
    if path.suffix.lower() in (".csv", ".parquet"):
        header = set(read_table(path)[0])
        return "export" if set(EXPORT_COLUMNS) - {"N_embedding"} <= header else "csv"
    raise DataError(
        f"{path}: cannot tell its format (expected a directory, .csv, .parquet, .sqlite, "
        ".db or .bz2); name it with --format"
    )


def load_table(path: Path, names: ColumnNames, k: float) -> ScalingPoints:
    """A plain table: one point per row (see :class:`ColumnNames`)."""
    header, rows = read_table(path)
    for required in (names.n, names.loss):
        require_column(path, header, required)
    has_d, has_c = names.d in header, names.c in header
    if not (has_d or has_c):
        raise DataError(f"{path}: needs a column {names.d!r} (tokens) or {names.c!r} (FLOPs)")
    run_id, n, n_non_emb, tokens, compute, loss, unique = [], [], [], [], [], [], []
    for line, row in rows:
        n_value = number_at(path, line, row, names.n)
        d_value = number_at(path, line, row, names.d) if has_d else math.nan
        c_value = number_at(path, line, row, names.c) if has_c else math.nan
        run_id.append(row_id(header, names.run_id, line, row))
        n.append(n_value)
        n_non_emb.append(
            number_at(path, line, row, names.n_non_embedding)
            if names.n_non_embedding in header
            else math.nan
        )
        tokens.append(d_value if has_d else c_value / (k * n_value))
        compute.append(c_value if has_c else k * n_value * d_value)
        loss.append(number_at(path, line, row, names.loss))
        if names.unique_tokens in header:
            unique.append(number_at(path, line, row, names.unique_tokens))
    notes = [] if has_d and has_c else [f"{'D = C / (k N)' if has_c else 'C = k N D'}, k = {k:g}"]
    return ScalingPoints.from_columns(
        run_id,
        n,
        n_non_emb,
        tokens,
        compute,
        loss,
        unique_tokens=unique or None,
        source=str(path),
        notes=notes,
    )


def _number_or_nan(value) -> float:
    """A finite positive number as float, anything else (missing, empty, text) as NaN."""
    number = float(value) if is_number(value) else math.nan
    return number if number > 0 else math.nan


def load_sweep_export(path: Path) -> ScalingPoints:
    """``runs.csv``/``.parquet`` of ``srt-jax sweep export`` and its optional curves table."""
    table = export_table(path) if path.is_dir() else path
    if table is None:
        raise DataError(f"{path}: no runs.csv or runs.parquet in this directory")
    header, rows = read_table(table)
    for required in EXPORT_COLUMNS:
        if required != "N_embedding":
            require_column(table, header, required)
    metric_names = [h for h in header if h not in (*EXPORT_COLUMNS, UNIQUE_COLUMN) and "." not in h]
    kept, skipped = [], Counter()
    for line, row in rows:
        status = str(row["status"])
        if status == "done":
            kept.append((line, row))
        else:
            skipped[f"status {status!r}"] += 1
    if not kept:
        raise DataError(f"{table}: no run has status 'done' ({skipped_note(skipped)})")
    metric_names = [m for m in metric_names if all(is_number(row[m]) for _, row in kept)]
    curves = _export_curves(table)
    run_ids = [str(row["run_id"]) for _, row in kept]
    return ScalingPoints.from_columns(
        run_ids,
        [number_at(table, line, row, "N") for line, row in kept],
        [number_at(table, line, row, "N_non_embedding") for line, row in kept],
        [number_at(table, line, row, "D") for line, row in kept],
        [number_at(table, line, row, "C") for line, row in kept],
        [number_at(table, line, row, "loss") for line, row in kept],
        metrics={m: [float(row[m]) for _, row in kept] for m in metric_names},
        unique_tokens=[_number_or_nan(row.get(UNIQUE_COLUMN)) for _, row in kept],
        curves=[curves.get(r) for r in run_ids] if curves else (),
        source=str(table),
        notes=[skipped_note(skipped)] if skipped else [],
    )


def load_run_dirs(root: Path) -> ScalingPoints:
    """Every run directory under ``root`` (recursively) whose status is "done"."""
    run_id, n_total, n_non_emb, tokens, compute, loss, unique, curves = ([] for _ in range(8))
    metrics: dict[str, list[float]] = {}
    skipped: Counter[str] = Counter()
    seen: dict[str, Path] = {}
    catalog_free = 0
    for summary_path in summary_paths(root):
        summary = read_json(summary_path)
        status = summary.get("status")
        if status != "done":
            skipped[f"status {status!r}"] += 1
            continue
        rid = str(required_key(summary_path, summary, "run_id"))
        if rid in seen:
            raise DataError(f"run id {rid} appears twice: {seen[rid]} and {summary_path}")
        seen[rid] = summary_path
        catalog_free += summary.get("params_grow_with_catalog") is False
        evaluation = required_key(summary_path, summary, "eval")
        run_id.append(rid)
        n_total.append(positive_key(summary_path, summary, "params_total"))
        n_non_emb.append(positive_key(summary_path, summary, "params_non_embedding"))
        tokens.append(positive_key(summary_path, summary, "train_tokens"))
        compute.append(positive_key(summary_path, summary, "train_flops"))
        loss.append(positive_key(summary_path, evaluation, "loss", prefix="eval."))
        unique.append(_number_or_nan(summary.get("unique_train_tokens")))
        for name, value in evaluation.items():
            if name != "loss" and isinstance(value, int | float):
                metrics.setdefault(name, [math.nan] * (len(run_id) - 1)).append(float(value))
        for values in metrics.values():
            values.extend([math.nan] * (len(run_id) - len(values)))
        curves.append(_run_curve(summary_path.parent / "metrics.jsonl"))
    if not run_id:
        note = skipped_note(skipped) if skipped else "no summary.json found"
        raise DataError(f"{root}: no finished run to fit ({note})")
    notes = [skipped_note(skipped)] if skipped else []
    if catalog_free:
        notes.append(CATALOG_FREE_NOTE.format(runs=catalog_free))
    return ScalingPoints.from_columns(
        run_id,
        n_total,
        n_non_emb,
        tokens,
        compute,
        loss,
        metrics=metrics,
        unique_tokens=unique,
        curves=curves,
        source=str(root),
        notes=notes,
    )


CATALOG_FREE_NOTE = (
    "{runs} run(s) encode items from their feature tokens (model.item_encoder: features): "
    "their N counts token rows, not items, and does not depend on the catalog size"
)


def summary_paths(root: Path) -> list[Path]:
    """The summary.json of every run directory under ``root``, in a stable order."""
    return sorted(root.rglob("summary.json"))


def row_id(header: list[str], column: str, line: int, row: dict) -> str:
    """A table row's run id: its ``column`` value, or ``line<N>`` if there is no such column."""
    return str(row[column]) if column in header else f"line{line}"


def _run_curve(path: Path) -> Curve | None:
    """The eval curve of one run's metrics.jsonl (None if the file or its evals are absent)."""
    if not path.exists():
        return None
    rows = []
    for line_no, record in jsonl_lines(path):
        if record.get("kind") != "eval":
            continue
        try:
            rows.append(
                (
                    float(record["step"]),
                    float(record["tokens"]),
                    float(record["flops"]),
                    float(record["loss"]),
                    {k: float(v) for k, v in record.get("metrics", {}).items()},
                )
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"{path}:{line_no}: eval line needs numeric step, tokens, flops, loss ({err})"
            ) from None
    if not rows:
        return None
    rows.sort(key=lambda r: r[0])
    names = sorted(set.intersection(*(set(r[4]) for r in rows)))
    try:
        return Curve(
            step=np.array([r[0] for r in rows]),
            tokens=np.array([r[1] for r in rows]),
            flops=np.array([r[2] for r in rows]),
            loss=np.array([r[3] for r in rows]),
            metrics={m: np.array([r[4][m] for r in rows]) for m in names},
        )
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def _export_curves(table: Path) -> dict[str, Curve]:
    """Curves of a sweep export (curves.csv or curves.parquet beside runs.*), by run id."""
    candidates = [table.with_name(f"curves{s}") for s in (".csv", ".parquet")]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        return {}
    header, rows = read_table(path)
    for required in CURVE_COLUMNS:
        require_column(path, header, required)
    extra = [h for h in header if h not in CURVE_COLUMNS]
    by_run: dict[str, list[tuple[int, dict]]] = {}
    for line, row in rows:
        by_run.setdefault(str(row["run_id"]), []).append((line, row))
    curves = {}
    for rid, run_rows in by_run.items():
        run_rows.sort(key=lambda lr: number_at(path, lr[0], lr[1], "step"))
        column = {
            name: np.array([number_at(path, line, row, name) for line, row in run_rows])
            for name in ("step", "tokens", "flops", "loss")
        }
        metric_cols = [m for m in extra if all(is_number(row[m]) for _, row in run_rows)]
        try:
            curves[rid] = Curve(
                **column,
                metrics={m: np.array([float(row[m]) for _, row in run_rows]) for m in metric_cols},
            )
        except DataError as err:
            raise DataError(f"{path}: run {rid}: {err}") from None
    return curves


def export_table(directory: Path) -> Path | None:
    """runs.csv or runs.parquet inside ``directory``, if there is one."""
    for name in ("runs.csv", "runs.parquet"):
        if (directory / name).is_file():
            return directory / name
    return None

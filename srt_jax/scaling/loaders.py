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

:func:`load_run_values` reads one value per run beside the points, for ``srt-jax fit
--group-by``: a dotted config key of each run directory's ``config.yaml``, a column of a
sweep export or plain table, or a run parameter of an MLflow database.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from srt_jax.errors import DataError
from srt_jax.scaling.mlflow_sqlite import (
    MlflowNames,
    is_sqlite_source,
    load_mlflow,
    load_run_params,
)
from srt_jax.scaling.points import Curve, ScalingPoints, skipped_note

SourceFormat = Literal["auto", "runs", "export", "csv", "mlflow"]
ConfigReader = Callable[[Path], Mapping[str, object]]
"""A run directory's config.yaml -> its keys flattened to dotted names (``model.backbone``)."""
EXPORT_COLUMNS = ("run_id", "status", "N", "N_non_embedding", "N_embedding", "D", "C", "loss")
CURVE_COLUMNS = ("run_id", "step", "tokens", "flops", "loss")


@dataclass(frozen=True)
class ColumnNames:
    """Column names of a plain results table (``csv`` format).

    ``d`` or ``c`` may be absent from the table, not both; ``run_id`` and
    ``n_non_embedding`` are optional (rows are then named by their line number).
    """

    n: str = "N"
    d: str = "D"
    c: str = "C"
    loss: str = "loss"
    run_id: str = "run_id"
    n_non_embedding: str = "N_non_embedding"


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
    path, fmt = _resolve(source, fmt)
    if fmt == "runs":
        return load_run_dirs(path)
    if fmt == "export":
        return load_sweep_export(path)
    if fmt == "csv":
        return load_table(path, columns or ColumnNames(), flops_per_param_token)
    return load_mlflow(path, mlflow or MlflowNames())


@dataclass(frozen=True)
class RunValues:
    """Each run's value of one key, as text (see :func:`load_run_values`).

    ``values`` maps run id -> text of the value (None where the run has none); ``available``
    lists the keys the source's runs carry, for an error that names a mistyped key.
    """

    key: str
    values: Mapping[str, str | None]
    available: tuple[str, ...]
    source: str


def load_run_values(
    source: str | Path,
    key: str,
    *,
    fmt: SourceFormat = "auto",
    columns: ColumnNames | None = None,
    mlflow: MlflowNames | None = None,
    read_config: ConfigReader | None = None,
) -> RunValues:
    """Each run's value of ``key`` in ``source``, keyed by the run ids of :func:`load_points`.

    ``key`` is a dotted config key of a run directory's ``config.yaml`` (``runs``, read by
    ``read_config``: scaling does not import the config package, so the caller passes its
    reader, as ``srt-jax fit`` does), a column (``export``: the flattened config is its
    dotted columns; ``csv``: any column) or a run parameter (``mlflow``). Values are text:
    lists as JSON (as ``sweep export`` writes them), an empty cell or null as None.
    """
    path, fmt = _resolve(source, fmt)
    if fmt == "runs":
        if read_config is None:
            raise ValueError("reading the config.yaml of run directories needs read_config")
        pairs, available = _run_dir_values(path, key, read_config)
    elif fmt == "mlflow":
        params = load_run_params(path, mlflow or MlflowNames())
        pairs = [(run, p.get(key)) for run, p in params.items()]
        available = sorted({name for p in params.values() for name in p})
    else:
        names = columns or ColumnNames()
        table = _export_table(path) if fmt == "export" and path.is_dir() else path
        if table is None:
            raise DataError(f"{path}: no runs.csv or runs.parquet in this directory")
        header, rows = _read_table(table)
        run_id = "run_id" if fmt == "export" else names.run_id
        pairs = [(_row_id(header, run_id, line, row), row.get(key)) for line, row in rows]
        available = header
    values: dict[str, str | None] = {}
    for rid, value in pairs:
        text = _value_text(value)
        if values.setdefault(rid, text) != text:
            raise DataError(
                f"{path}: run {rid} appears twice with different values of {key!r} "
                f"({values[rid]!r}, {text!r}); give the runs unique ids"
            )
    return RunValues(key, values, tuple(available), str(path))


def _run_dir_values(
    root: Path, key: str, read_config: ConfigReader
) -> tuple[list[tuple[str, object]], list[str]]:
    """(run id, value of ``key`` in the flattened config.yaml) per run directory, and the
    config keys seen; a run without a config.yaml has no value."""
    pairs, available = [], set()
    for summary_path in _summary_paths(root):
        rid = str(_key(summary_path, _read_json(summary_path), "run_id"))
        config_path = summary_path.parent / "config.yaml"
        config = read_config(config_path) if config_path.is_file() else {}
        available.update(config)
        pairs.append((rid, config.get(key)))
    return pairs, sorted(available)


def _value_text(value: object) -> str | None:
    """A config value as text: lists as JSON, None / "" / NaN as None, else str()."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.dumps(value) if isinstance(value, list) else str(value)


def _resolve(source: str | Path, fmt: SourceFormat) -> tuple[Path, SourceFormat]:
    """``source`` as a path that exists, and its format (detected when ``fmt`` is "auto")."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path, detect_format(path) if fmt == "auto" else fmt


def detect_format(path: Path) -> SourceFormat:
    """The format of ``path`` judged from its name, layout and header."""
    if path.is_dir():
        if _export_table(path) is not None:
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
        header = set(_read_table(path)[0])
        return "export" if set(EXPORT_COLUMNS) - {"N_embedding"} <= header else "csv"
    raise DataError(
        f"{path}: cannot tell its format (expected a directory, .csv, .parquet, .sqlite, "
        ".db or .bz2); name it with --format"
    )


def load_table(path: Path, names: ColumnNames, k: float) -> ScalingPoints:
    """A plain table: one point per row (see :class:`ColumnNames`)."""
    header, rows = _read_table(path)
    for required in (names.n, names.loss):
        _require_column(path, header, required)
    has_d, has_c = names.d in header, names.c in header
    if not (has_d or has_c):
        raise DataError(f"{path}: needs a column {names.d!r} (tokens) or {names.c!r} (FLOPs)")
    run_id, n, n_non_emb, tokens, compute, loss = [], [], [], [], [], []
    for line, row in rows:
        n_value = _number(path, line, row, names.n)
        d_value = _number(path, line, row, names.d) if has_d else math.nan
        c_value = _number(path, line, row, names.c) if has_c else math.nan
        run_id.append(_row_id(header, names.run_id, line, row))
        n.append(n_value)
        n_non_emb.append(
            _number(path, line, row, names.n_non_embedding)
            if names.n_non_embedding in header
            else math.nan
        )
        tokens.append(d_value if has_d else c_value / (k * n_value))
        compute.append(c_value if has_c else k * n_value * d_value)
        loss.append(_number(path, line, row, names.loss))
    notes = [] if has_d and has_c else [f"{'D = C / (k N)' if has_c else 'C = k N D'}, k = {k:g}"]
    return ScalingPoints.from_columns(
        run_id, n, n_non_emb, tokens, compute, loss, source=str(path), notes=notes
    )


def load_sweep_export(path: Path) -> ScalingPoints:
    """``runs.csv``/``.parquet`` of ``srt-jax sweep export`` and its optional curves table."""
    table = _export_table(path) if path.is_dir() else path
    if table is None:
        raise DataError(f"{path}: no runs.csv or runs.parquet in this directory")
    header, rows = _read_table(table)
    for required in EXPORT_COLUMNS:
        if required != "N_embedding":
            _require_column(table, header, required)
    metric_names = [h for h in header if h not in EXPORT_COLUMNS and "." not in h]
    kept, skipped = [], Counter()
    for line, row in rows:
        status = str(row["status"])
        if status == "done":
            kept.append((line, row))
        else:
            skipped[f"status {status!r}"] += 1
    if not kept:
        raise DataError(f"{table}: no run has status 'done' ({skipped_note(skipped)})")
    metric_names = [m for m in metric_names if all(_is_number(row[m]) for _, row in kept)]
    curves = _export_curves(table)
    run_ids = [str(row["run_id"]) for _, row in kept]
    return ScalingPoints.from_columns(
        run_ids,
        [_number(table, line, row, "N") for line, row in kept],
        [_number(table, line, row, "N_non_embedding") for line, row in kept],
        [_number(table, line, row, "D") for line, row in kept],
        [_number(table, line, row, "C") for line, row in kept],
        [_number(table, line, row, "loss") for line, row in kept],
        metrics={m: [float(row[m]) for _, row in kept] for m in metric_names},
        curves=[curves.get(r) for r in run_ids] if curves else (),
        source=str(table),
        notes=[skipped_note(skipped)] if skipped else [],
    )


def load_run_dirs(root: Path) -> ScalingPoints:
    """Every run directory under ``root`` (recursively) whose status is "done"."""
    run_id, n_total, n_non_emb, tokens, compute, loss, curves = ([] for _ in range(7))
    metrics: dict[str, list[float]] = {}
    skipped: Counter[str] = Counter()
    seen: dict[str, Path] = {}
    for summary_path in _summary_paths(root):
        summary = _read_json(summary_path)
        status = summary.get("status")
        if status != "done":
            skipped[f"status {status!r}"] += 1
            continue
        rid = str(_key(summary_path, summary, "run_id"))
        if rid in seen:
            raise DataError(f"run id {rid} appears twice: {seen[rid]} and {summary_path}")
        seen[rid] = summary_path
        evaluation = _key(summary_path, summary, "eval")
        run_id.append(rid)
        n_total.append(_positive(summary_path, summary, "params_total"))
        n_non_emb.append(_positive(summary_path, summary, "params_non_embedding"))
        tokens.append(_positive(summary_path, summary, "train_tokens"))
        compute.append(_positive(summary_path, summary, "train_flops"))
        loss.append(_positive(summary_path, evaluation, "loss", prefix="eval."))
        for name, value in evaluation.items():
            if name != "loss" and isinstance(value, int | float):
                metrics.setdefault(name, [math.nan] * (len(run_id) - 1)).append(float(value))
        for values in metrics.values():
            values.extend([math.nan] * (len(run_id) - len(values)))
        curves.append(_run_curve(summary_path.parent / "metrics.jsonl"))
    if not run_id:
        note = skipped_note(skipped) if skipped else "no summary.json found"
        raise DataError(f"{root}: no finished run to fit ({note})")
    return ScalingPoints.from_columns(
        run_id,
        n_total,
        n_non_emb,
        tokens,
        compute,
        loss,
        metrics=metrics,
        curves=curves,
        source=str(root),
        notes=[skipped_note(skipped)] if skipped else [],
    )


def _summary_paths(root: Path) -> list[Path]:
    """The summary.json of every run directory under ``root``, in a stable order."""
    return sorted(root.rglob("summary.json"))


def _row_id(header: list[str], column: str, line: int, row: dict) -> str:
    """A table row's run id: its ``column`` value, or ``line<N>`` if there is no such column."""
    return str(row[column]) if column in header else f"line{line}"


def _run_curve(path: Path) -> Curve | None:
    """The eval curve of one run's metrics.jsonl (None if the file or its evals are absent)."""
    if not path.exists():
        return None
    rows = []
    for line_no, record in _jsonl(path):
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
    header, rows = _read_table(path)
    for required in CURVE_COLUMNS:
        _require_column(path, header, required)
    extra = [h for h in header if h not in CURVE_COLUMNS]
    by_run: dict[str, list[tuple[int, dict]]] = {}
    for line, row in rows:
        by_run.setdefault(str(row["run_id"]), []).append((line, row))
    curves = {}
    for rid, run_rows in by_run.items():
        run_rows.sort(key=lambda lr: _number(path, lr[0], lr[1], "step"))
        column = {
            name: np.array([_number(path, line, row, name) for line, row in run_rows])
            for name in ("step", "tokens", "flops", "loss")
        }
        metric_cols = [m for m in extra if all(_is_number(row[m]) for _, row in run_rows)]
        try:
            curves[rid] = Curve(
                **column,
                metrics={m: np.array([float(row[m]) for _, row in run_rows]) for m in metric_cols},
            )
        except DataError as err:
            raise DataError(f"{path}: run {rid}: {err}") from None
    return curves


def _export_table(directory: Path) -> Path | None:
    """runs.csv or runs.parquet inside ``directory``, if there is one."""
    for name in ("runs.csv", "runs.parquet"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line number, row dict) pairs of a CSV or Parquet file."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            data = pq.read_table(path).to_pydict()
        except Exception as err:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        header = list(data)
        count = len(next(iter(data.values()), []))
        return header, [(i + 1, {h: data[h][i] for h in header}) for i in range(count)]
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    if not header:
        raise DataError(f"{path}: empty file (expected a header row)")
    return header, rows


def _require_column(path: Path, header: list[str], name: str) -> None:
    if name not in header:
        raise DataError(f"{path}: missing column {name!r} (columns: {', '.join(header)})")


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _number(path: Path, line: int, row: dict, name: str) -> float:
    """Row value of column ``name`` as a float; an error naming file, line and column."""
    value = row.get(name)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{path}:{line}: column {name!r} is {value!r}, expected a number") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line of a JSON-lines file."""
    with path.open() as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: not a JSON object ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object")
            yield line_no, record


def _key(path: Path, mapping: dict, key: str, prefix: str = ""):
    if key not in mapping:
        raise DataError(f"{path}: missing key {prefix}{key!r}")
    return mapping[key]


def _positive(path: Path, mapping: dict, key: str, prefix: str = "") -> float:
    value = _key(path, mapping, key, prefix)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise DataError(f"{path}: {prefix}{key} is {value!r}, expected a positive number")
    return float(value)

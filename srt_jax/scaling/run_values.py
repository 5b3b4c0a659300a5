"""Each run's value of one key beside the points, for ``srt-jax fit --group-by``: a dotted
config key of each run directory's ``config.yaml``, a column of a sweep export or plain
table, or a run parameter of an MLflow database. Runs are found exactly as
:func:`srt_jax.scaling.loaders.load_points` finds them, and keyed by the same run ids."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from srt_jax.errors import DataError
from srt_jax.scaling.files import read_json, read_table, required_key
from srt_jax.scaling.loaders import (
    ColumnNames,
    SourceFormat,
    export_table,
    resolve_source,
    row_id,
    summary_paths,
)
from srt_jax.scaling.mlflow_sqlite import MlflowNames, load_run_params, names_for

ConfigReader = Callable[[Path], Mapping[str, object]]
"""A run directory's config.yaml -> its keys flattened to dotted names (``model.backbone``)."""


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
    path, fmt = resolve_source(source, fmt)
    if fmt == "runs":
        if read_config is None:
            raise ValueError("reading the config.yaml of run directories needs read_config")
        pairs, available = _run_dir_values(path, key, read_config)
    elif fmt == "mlflow":
        params = load_run_params(path, mlflow or names_for(path))
        pairs = [(run, p.get(key)) for run, p in params.items()]
        available = sorted({name for p in params.values() for name in p})
    else:
        names = columns or ColumnNames()
        table = export_table(path) if fmt == "export" and path.is_dir() else path
        if table is None:
            raise DataError(f"{path}: no runs.csv or runs.parquet in this directory")
        header, rows = read_table(table)
        run_id = "run_id" if fmt == "export" else names.run_id
        pairs = [(row_id(header, run_id, line, row), row.get(key)) for line, row in rows]
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
    for summary_path in summary_paths(root):
        rid = str(required_key(summary_path, read_json(summary_path), "run_id"))
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

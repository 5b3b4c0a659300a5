"""Reading results files: CSV/Parquet tables and JSON/JSON-lines, with errors that name the
file, the line and what was expected (shared by :mod:`srt_jax.scaling.loaders` and
:mod:`srt_jax.scaling.run_values`)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

from srt_jax.errors import DataError


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
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


def require_column(path: Path, header: list[str], name: str) -> None:
    if name not in header:
        raise DataError(f"{path}: missing column {name!r} (columns: {', '.join(header)})")


def is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def number_at(path: Path, line: int, row: dict, name: str) -> float:
    """Row value of column ``name`` as a float; an error naming file, line and column."""
    value = row.get(name)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{path}:{line}: column {name!r} is {value!r}, expected a number") from None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def jsonl_lines(path: Path) -> Iterator[tuple[int, dict]]:
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


def required_key(path: Path, mapping: dict, key: str, prefix: str = ""):
    if key not in mapping:
        raise DataError(f"{path}: missing key {prefix}{key!r}")
    return mapping[key]


def positive_key(path: Path, mapping: dict, key: str, prefix: str = "") -> float:
    value = required_key(path, mapping, key, prefix)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise DataError(f"{path}: {prefix}{key} is {value!r}, expected a positive number")
    return float(value)

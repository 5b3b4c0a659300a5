"""Value checks shared by every reader: raw columns become a chunk of good rows and a
reason code per row (an index into ``REASONS``), and bad rows become located examples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from srt_jax.data.readers.base import (
    BAD_RATING,
    BAD_TIME,
    EMPTY_ITEM,
    EMPTY_USER,
    MAX_BAD_EXAMPLES,
    REASONS,
    BadRow,
    BadRows,
    Chunk,
    Columns,
)
from srt_jax.errors import DataError

NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_INT64_LIMIT = 2.0**63


def check_columns(
    users: pa.Array, items: pa.Array, times: pa.Array, ratings: pa.Array | None
) -> tuple[Chunk, np.ndarray]:
    """Validate and convert raw columns of n rows.

    Args:
      users, items: ids as arrow strings or integers; null or empty marks a bad row.
      times: numbers, or text holding numbers (floored to int64), or arrow timestamps
        (converted to seconds).
      ratings: numbers or text holding numbers, or None.

    Returns:
      the chunk of good rows, and int8 [n] reason codes (indices into ``REASONS``; 0 = good).
    """
    reasons = np.zeros(len(users), np.int8)
    time_values, time_ok = _to_int64(times)
    checks = [
        (EMPTY_USER, _id_present(users, "user")),
        (EMPTY_ITEM, _id_present(items, "item")),
        (BAD_TIME, time_ok),
    ]
    rating_values = None
    if ratings is not None:
        rating_values, rating_ok = _to_float32(ratings)
        checks.append((BAD_RATING, rating_ok))
    for code, ok in reversed(checks):  # the first failing check names the row's reason
        reasons[~ok] = code
    good = reasons == 0
    if good.all():
        return Chunk(users, items, time_values, rating_values), reasons
    keep = pa.array(good)
    return Chunk(
        users.filter(keep),
        items.filter(keep),
        time_values[good],
        None if rating_values is None else rating_values[good],
    ), reasons


def _id_present(ids: pa.Array, name: str) -> np.ndarray:
    """bool [n]: the id is there (not null and, for text, not empty).

    Raises:
      DataError: the ids are neither integers nor text (``name``: user or item).
    """
    kind = ids.type
    if pa.types.is_integer(kind):
        return np.asarray(pc.is_valid(ids), dtype=bool)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{name} id column has type {kind}; expected integers or text")
    return np.asarray(pc.greater(pc.binary_length(ids), 0).fill_null(False), dtype=bool)


def _numeric_text(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Text cast to ``target`` (fast path), or to float64 where some rows are not integers;
    rows that do not hold a number become null."""
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        numeric = pc.match_substring_regex(values, NUMBER)
        cleaned = pc.if_else(numeric, pc.utf8_trim_whitespace(values), pa.scalar(None, values.type))
        return pc.cast(cleaned, pa.float64())


def _to_int64(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int64 [n] values (floored) and bool [n] ok for times given as numbers, text or dates."""
    kind = values.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        values = pc.cast(pc.cast(values, pa.timestamp("s"), safe=False), pa.int64())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = _numeric_text(values, pa.int64())
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise DataError(f"time column has type {kind}; expected numbers or timestamps")
    ok = np.asarray(pc.is_valid(values), dtype=bool)
    if pa.types.is_integer(values.type):
        return np.asarray(values.fill_null(0), dtype=np.int64), ok
    floats = np.asarray(values.fill_null(0.0), dtype=np.float64)
    ok &= np.isfinite(floats) & (np.abs(floats) < _INT64_LIMIT)
    return np.floor(np.where(ok, floats, 0.0)).astype(np.int64), ok


def _to_float32(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float32 [n] values and bool [n] ok for ratings given as numbers or text."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = _numeric_text(values, pa.float64())
    elif not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise DataError(f"rating column has type {values.type}; expected numbers")
    floats = np.asarray(pc.cast(values, pa.float64()).fill_null(np.nan), dtype=np.float64)
    ok = np.isfinite(floats)
    return floats.astype(np.float32), ok


def check_table(table: pa.Table, columns: Columns) -> tuple[Chunk, np.ndarray]:
    def column(name: str) -> pa.Array:
        return table[name].combine_chunks()

    return check_columns(
        column(columns.user),
        column(columns.item),
        column(columns.time),
        column(columns.rating) if columns.rating else None,
    )


def bad_examples(
    file: str,
    reasons: np.ndarray,
    locations: Sequence[int],
    texts: Sequence[str] | Callable[[int], str],
    kind: str = "line",
    limit: int = MAX_BAD_EXAMPLES,
) -> list[BadRow]:
    """BadRow for each of the first ``limit`` rows with a non-zero reason code."""
    rows = np.flatnonzero(reasons)[:limit]
    text = texts if callable(texts) else texts.__getitem__
    return [BadRow(file, int(locations[i]), REASONS[reasons[i]], text(int(i)), kind) for i in rows]


def check_counted(
    table: pa.Table,
    file: str,
    columns: Columns,
    bad: BadRows,
    locations: np.ndarray,
    kind: str,
) -> Chunk:
    """Check a table of a row-addressed source (``file``, with ``columns``); count its bad
    rows, locating examples by ``locations`` (1-based row or example number of each table
    row)."""
    chunk, reasons = check_table(table, columns)
    bad.add_counts(reasons)
    if reasons.any() and bad.wants_examples:
        bad.add_examples(
            bad_examples(
                file,
                reasons,
                locations,
                lambda i: str(table.slice(i, 1).to_pylist()[0]),
                kind,
            )
        )
    return chunk

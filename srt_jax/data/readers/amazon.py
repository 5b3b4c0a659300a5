"""Amazon reviews: the ratings-only CSVs of 2018 (``item,user,rating,timestamp``) and 2023
(header ``user_id,parent_asin,rating,timestamp``, time in ms), and the JSON-lines reviews of
2014/2018 (``reviewerID``, ``asin``, ``unixReviewTime``, ``overall``) and 2023
(``user_id``, ``parent_asin``, ``timestamp`` in ms, ``rating``), read in blocks by
``pyarrow.json``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from srt_jax.data.readers.base import (
    BLOCK_BYTES,
    MALFORMED_JSON,
    BadRow,
    BadRows,
    Chunk,
    Columns,
    Source,
)
from srt_jax.data.readers.checks import check_table
from srt_jax.data.readers.lines import line_blocks, parse_lines
from srt_jax.data.readers.text import TextLayout
from srt_jax.errors import DataError


def amazon_csv_layout(first: str) -> TextLayout:
    """The layout of an Amazon ratings CSV (2023 with a header, else 2018) from ``first``."""
    if first.startswith("user_id,"):
        columns = Columns("user_id", "parent_asin", "timestamp", "rating")
        return TextLayout(
            "amazon 2023 ratings csv (time in ms)",
            ",",
            tuple(first.split(",")),
            columns,
            header=True,
            time_unit="ms",
        )
    columns = Columns("user", "item", "timestamp", "rating")
    return TextLayout(
        "amazon 2018 ratings csv",
        ",",
        ("item", "user", "rating", "timestamp"),
        columns,
        header=False,
    )


@dataclass(frozen=True)
class JsonLayout:
    """Keys of a JSON-lines review file; ``time_unit`` of its time key."""

    name: str
    columns: Columns
    time_unit: str


def amazon_json_layout(path: Path, first: str) -> JsonLayout:
    """The layout of an Amazon JSON-lines review file from its ``first`` record."""
    try:
        record = json.loads(first)
    except ValueError as err:  # malformed JSON, or a number too long for Python
        raise DataError(f"{path}:1: malformed JSON: {err}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:1: not a JSON object: {first[:80]!r}")
    if "reviewerID" in record:
        return JsonLayout(
            "amazon 2014/2018 reviews (json lines)",
            Columns("reviewerID", "asin", "unixReviewTime", "overall"),
            "s",
        )
    if "user_id" in record:
        return JsonLayout(
            "amazon 2023 reviews (json lines, time in ms)",
            Columns("user_id", "parent_asin", "timestamp", "rating"),
            "ms",
        )
    raise DataError(
        f"{path}:1: not an Amazon review record: expected keys reviewerID/asin/"
        f"unixReviewTime (2014/2018) or user_id/parent_asin/timestamp (2023); got "
        f"{', '.join(list(record)[:8])}"
    )


class JsonLinesSource(Source):
    """A JSON-lines file (plain or gzipped) read in blocks by pyarrow.json."""

    unit = "B"

    def __init__(self, path: Path, layout: JsonLayout, block_bytes: int = BLOCK_BYTES) -> None:
        self.path, self.layout_spec, self.block_bytes = str(path), layout, block_bytes
        self.layout, self.time_unit, self.has_ratings = layout.name, layout.time_unit, True
        self.size = Path(path).stat().st_size
        cols = layout.columns
        self._schema = pa.schema(
            [
                (cols.user, pa.string()),
                (cols.item, pa.string()),
                (cols.time, pa.int64()),
                (cols.rating, pa.float64()),
            ]
        )

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        for block, first_line, consumed in line_blocks(
            Path(self.path), self.block_bytes, skip_first=False
        ):
            try:
                block.decode("utf-8")  # pyarrow's JSON reader lets bad UTF-8 into strings
                table = pa_json.read_json(
                    io.BytesIO(block),
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=self._schema, unexpected_field_behavior="ignore"
                    ),
                )
            except (pa.ArrowInvalid, UnicodeDecodeError):  # a bad line: parse line by line
                chunk, reasons, examples = self._parse_lines(block, first_line)
                bad.add_counts(reasons)
                bad.add_examples(examples)
            else:
                chunk, reasons = check_table(table, self.layout_spec.columns)
                bad.add_counts(reasons)
                if reasons.any() and bad.wants_examples:
                    bad.add_examples(self._parse_lines(block, first_line)[2])
            yield chunk, consumed

    def _parse_lines(self, block: bytes, first_line: int) -> tuple[Chunk, np.ndarray, list[BadRow]]:
        """Line-by-line parse: the chunk, reason per non-empty line, first bad rows."""
        names = self.layout_spec.columns.names

        def values(text: str) -> list[str | None] | int:
            try:
                record = json.loads(text)
            except ValueError:  # malformed JSON, or a number too long for Python
                return MALFORMED_JSON
            if not isinstance(record, dict):
                return MALFORMED_JSON
            return [_json_text(record.get(key)) for key in names]

        return parse_lines(self.path, block, first_line, self.layout_spec.columns, values)


def _json_text(value: Any) -> str | None:
    """A JSON scalar as text (ids and numbers alike); None for missing, null or nested."""
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    return str(value)

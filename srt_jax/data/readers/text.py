"""Delimited text inputs (CSV, TSV, ``::``): the layout of a file and its source.

``csv`` inputs name their user, item, time (and rating) columns; the MovieLens, RecBole and
Amazon ratings layouts (:mod:`.movielens`, :mod:`.recbole`, :mod:`.amazon`) are detected
from a file's first line and read by the same :class:`TextSource`.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from srt_jax.data.readers.base import (
    BLOCK_BYTES,
    FIELD_COUNT,
    BadRow,
    BadRows,
    Chunk,
    Columns,
    ReadOptions,
    Source,
    required_columns,
)
from srt_jax.data.readers.checks import check_table
from srt_jax.data.readers.lines import line_blocks, parse_lines
from srt_jax.errors import DataError


@dataclass(frozen=True)
class TextLayout:
    """A delimited text layout.

    Attributes:
      name: what was detected, for meta.json and messages.
      delimiter: one character.
      names: names of all fields of a row.
      columns: which fields hold user, item, time and rating.
      header: whether the first line is a header (skipped).
      quoting: whether ``"`` quotes fields.
      double_colon: ``::`` separates fields (read as tab).
      time_unit: ``"s"``, ``"ms"`` or None.
    """

    name: str
    delimiter: str
    names: tuple[str, ...]
    columns: Columns
    header: bool
    quoting: bool = False
    double_colon: bool = False
    time_unit: str | None = "s"


def near_miss(wanted: str, names: tuple[str, ...]) -> str:
    """``"; 'x\\u200b' is 'x' but for invisible characters or case"`` when a column name
    matches ``wanted`` once stripped of whitespace, control and format characters and
    compared without case; else ``""``."""

    def bare(name: str) -> str:
        kept = (c for c in name if not c.isspace() and unicodedata.category(c)[0] != "C")
        return "".join(kept).casefold()

    close = [name for name in names if bare(name) == bare(wanted)]
    return f"; {close[0]!r} is {wanted!r} but for invisible characters or case" if close else ""


class TextSource(Source):
    """A delimited text file (plain or gzipped) read in blocks by pyarrow.csv."""

    unit = "B"

    def __init__(self, path: Path, layout: TextLayout, block_bytes: int = BLOCK_BYTES) -> None:
        missing = [name for name in layout.columns.names if name not in layout.names]
        if missing:
            raise DataError(
                f"{path}: column {missing[0]!r} not found; the columns are "
                f"{', '.join(map(repr, layout.names))} (the header read as UTF-8, split at "
                f"{layout.delimiter!r}){near_miss(missing[0], layout.names)}"
            )
        self.path, self.layout_spec, self.block_bytes = str(path), layout, block_bytes
        self.layout, self.time_unit = layout.name, layout.time_unit
        self.has_ratings = layout.columns.rating is not None
        self.size = Path(path).stat().st_size

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        spec = self.layout_spec
        for block, first_line, consumed in line_blocks(
            Path(self.path), self.block_bytes, spec.header
        ):
            try:
                block.decode("utf-8")  # pyarrow's handler of a bad row cannot show bad UTF-8
                chunk, reasons, n_invalid = self._parse_fast(block)
            except (pa.ArrowInvalid, UnicodeDecodeError):  # the line parser decides
                chunk, line_reasons, examples = self._parse_lines(block, first_line)
                bad.add_counts(line_reasons)
                bad.add_examples(examples)
            else:
                bad.add_counts(reasons)
                bad.add_counts(np.full(n_invalid, FIELD_COUNT, np.int8))
                if (n_invalid or reasons.any()) and bad.wants_examples:
                    bad.add_examples(self._parse_lines(block, first_line)[2])
            yield chunk, consumed

    def _parse_fast(self, block: bytes) -> tuple[Chunk, np.ndarray, int]:
        """Parse a block with pyarrow: the chunk, reason codes of the parsed rows, and the
        number of rows skipped for a wrong field count.

        Times and ratings are first parsed as numbers inside pyarrow; if any value of the
        block is not a plain number the block is parsed again as text, so that each such
        value marks only its own row as bad."""
        spec = self.layout_spec
        if spec.double_colon:
            block = block.replace(b"::", b"\t")
        numeric = {spec.columns.time: pa.int64()}
        if spec.columns.rating:
            numeric[spec.columns.rating] = pa.float64()
        try:
            table, n_invalid = self._read_block(block, numeric)
        except pa.ArrowInvalid:
            table, n_invalid = self._read_block(block, {})
        chunk, reasons = check_table(table, spec.columns)
        return chunk, reasons, n_invalid

    def _read_block(self, block: bytes, types: dict[str, pa.DataType]) -> tuple[pa.Table, int]:
        """The needed columns of a block (``types``, else text) and the number of rows
        skipped for a wrong field count."""
        spec = self.layout_spec
        invalid: list[int] = []

        def skip_invalid(row: Any) -> str:
            invalid.append(1)
            return "skip"

        table = pa_csv.read_csv(
            pa.py_buffer(block),
            read_options=pa_csv.ReadOptions(column_names=list(spec.names)),
            parse_options=pa_csv.ParseOptions(
                delimiter=spec.delimiter,
                quote_char='"' if spec.quoting else False,
                invalid_row_handler=skip_invalid,
            ),
            convert_options=pa_csv.ConvertOptions(
                include_columns=spec.columns.names,
                column_types={name: types.get(name, pa.string()) for name in spec.columns.names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        return table, len(invalid)

    def _parse_lines(self, block: bytes, first_line: int) -> tuple[Chunk, np.ndarray, list[BadRow]]:
        """Line-by-line parse of a block: the chunk, reason per non-empty line, bad rows."""
        spec = self.layout_spec
        positions = [spec.names.index(name) for name in spec.columns.names]

        def values(text: str) -> list[str] | int:
            try:
                fields = _split_fields(
                    text.replace("::", "\t") if spec.double_colon else text,
                    spec.delimiter,
                    spec.quoting,
                )
            except csv.Error:  # e.g. a field over the csv module's size limit
                return FIELD_COUNT
            if len(fields) != len(spec.names):
                return FIELD_COUNT
            return [fields[k] for k in positions]

        return parse_lines(self.path, block, first_line, spec.columns, values)


def _split_fields(line: str, delimiter: str, quoting: bool) -> list[str]:
    if quoting:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


def csv_layout(path: Path, first: str, options: ReadOptions) -> TextLayout:
    """The layout of a ``csv`` input: header ``first``, separator and columns from ``options``."""
    delimiter = {"\\t": "\t", "tab": "\t"}.get(options.sep or ",", options.sep or ",")
    if len(delimiter) != 1:
        raise DataError(f"--sep must be one character (or \\t); got {options.sep!r}")
    columns = required_columns("csv", options)
    try:
        names = tuple(_split_fields(first, delimiter, quoting=True))
    except csv.Error as err:
        raise DataError(f"{path}:1: the header cannot be split at {delimiter!r}: {err}") from None
    return TextLayout(
        f"csv (sep {delimiter!r}, header)",
        delimiter,
        names,
        columns,
        header=True,
        quoting=True,
        time_unit=None,
    )

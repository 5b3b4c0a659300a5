"""Readers of interaction logs: each input becomes a stream of column chunks plus bad-row counts.

A reader turns one input (a file, or a TFDS dataset) into :class:`Chunk` s: the good rows of one
block of input, in input order, as columns (original user and item ids as arrow arrays,
timestamps int64, optional ratings float32). Rows that cannot be used are counted by reason
in a :class:`BadRows`, which keeps the first few with file and 1-based line number.

Formats (``FORMATS``):

- ``movielens``: ``u.data`` (tab, no header), ``ratings.dat`` (``::``), ``ratings.csv``
  (header ``userId,movieId,rating,timestamp``), told apart by the first line.
- ``recbole``: RecBole atomic ``.inter`` files (tab, header ``name:type``); columns
  ``user_id``, ``item_id``, ``timestamp`` and ``rating`` unless named otherwise.
- ``amazon``: Amazon Reviews 2018 ratings-only CSV (``item,user,rating,timestamp``),
  2023 ratings CSV (header ``user_id,parent_asin,rating,timestamp``, time in ms), and the
  JSON-lines reviews of 2014/2018 (``reviewerID``, ``asin``, ``unixReviewTime``,
  ``overall``) and 2023 (``user_id``, ``parent_asin``, ``timestamp`` in ms, ``rating``).
- ``csv`` / ``parquet``: any table with named user, item and time (and rating) columns.
- ``tfds``: a prepared TFDS dataset (by name, or its directory) in a random-access file
  format (array_record), read without TensorFlow. Features are either one interaction per
  example (scalars, like ``movielens/100k-ratings``) or one user per example (1-D items and
  timestamps, like the datasets ``srt-jax data export-tfds`` writes).

Text inputs (plain or gzipped, detected by magic bytes) are cut into blocks of whole lines,
each parsed by pyarrow (``pyarrow.csv`` / ``pyarrow.json``): ids as text, times and ratings
as numbers, and, if some value of a block is not a plain number, the block again with those
columns as text, converted here so that a bad value marks only its own row. Values may not
contain newlines (pyarrow's default, ``newlines_in_values=False``), which is what lets a
block start at a known line number. Only when a block has bad rows (to report their line
numbers) or pyarrow rejects it (malformed JSON, invalid UTF-8) is it parsed again line by
line in Python; that parse shares every value check with the fast path.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from srt_jax.errors import DataError

FORMATS = ("movielens", "recbole", "amazon", "csv", "parquet", "tfds")
MAX_BAD_EXAMPLES = 5
BLOCK_BYTES = 1 << 26
TFDS_BATCH = 4096

# Reasons a row is skipped; a row's reason code indexes this tuple (0 = good row).
REASONS = (
    "",
    "wrong field count",
    "malformed JSON",
    "not UTF-8 text",
    "missing or empty user id",
    "missing or empty item id",
    "missing or non-numeric time",
    "missing or non-numeric rating",
)
_FIELD_COUNT, _MALFORMED_JSON, _NOT_UTF8 = 1, 2, 3
_EMPTY_USER, _EMPTY_ITEM, _BAD_TIME, _BAD_RATING = 4, 5, 6, 7
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_INT64_LIMIT = 2.0**63


@dataclass(frozen=True)
class ReadOptions:
    """How to find the columns of an input.

    Attributes:
      user_col, item_col, time_col, rating_col: column (or JSON key, or TFDS feature) names;
        required for ``csv`` and ``parquet``, optional overrides for ``recbole`` and ``tfds``.
      sep: field separator of ``csv`` inputs (default ``,``; ``\\t`` or ``tab`` for tabs).
      tfds_split: split of a ``tfds`` input.
      tfds_data_dir: TFDS data directory in which a dataset name is looked up.
      block_bytes: size of the blocks text inputs are parsed in.
    """

    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    sep: str | None = None
    tfds_split: str = "train"
    tfds_data_dir: str | None = None
    block_bytes: int = BLOCK_BYTES


@dataclass
class Chunk:
    """The good rows of one block of input, in input order.

    Attributes:
      users: [n] original user ids (arrow string or integer array).
      items: [n] original item ids (arrow string or integer array).
      timestamps: int64 [n], in the source's time unit.
      ratings: float32 [n], or None when the input has no ratings.
    """

    users: pa.Array
    items: pa.Array
    timestamps: np.ndarray
    ratings: np.ndarray | None

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True)
class BadRow:
    """One skipped row: where it is (``kind`` is line, row or example; 1-based), why, and what."""

    file: str
    line: int
    reason: str
    text: str
    kind: str = "line"

    def __str__(self) -> str:
        where = (
            f"{self.file}:{self.line}"
            if self.kind == "line"
            else (f"{self.file}: {self.kind} {self.line}")
        )
        return f"{where}: {self.reason}: {self.text[:200]!r}"


@dataclass
class BadRows:
    """Counts of skipped rows by reason, and the first ``limit`` of them."""

    limit: int = MAX_BAD_EXAMPLES
    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[BadRow] = field(default_factory=list)

    @property
    def wants_examples(self) -> bool:
        return len(self.examples) < self.limit

    def add_counts(self, reason_codes: np.ndarray) -> None:
        """Count the rows whose reason code (an index into ``REASONS``) is not 0."""
        counts = np.bincount(reason_codes, minlength=len(REASONS))
        for code in np.flatnonzero(counts[1:]) + 1:
            self.by_reason[REASONS[code]] = self.by_reason.get(REASONS[code], 0) + int(counts[code])
            self.count += int(counts[code])

    def add_examples(self, examples: Sequence[BadRow]) -> None:
        self.examples.extend(examples[: self.limit - len(self.examples)])

    def to_meta(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_reason": dict(self.by_reason),
            "examples": [str(example) for example in self.examples],
        }


@dataclass(frozen=True)
class Columns:
    """Names of the user, item, time and (optional) rating columns of a source."""

    user: str
    item: str
    time: str
    rating: str | None

    @property
    def names(self) -> list[str]:
        return [self.user, self.item, self.time] + ([self.rating] if self.rating else [])


class Source:
    """One opened input. ``chunks`` yields (chunk, progress made) and counts bad rows.

    Attributes:
      path: the input as given (file path, TFDS name or directory).
      layout: the detected layout, e.g. ``"movielens u.data (tab)"``.
      time_unit: ``"s"``, ``"ms"`` or None when the source does not say.
      has_ratings: whether chunks carry ratings.
      size, unit: progress total and unit (bytes, rows or examples).
    """

    path: str
    layout: str
    time_unit: str | None
    has_ratings: bool
    size: int
    unit: str

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        raise NotImplementedError


def open_source(path: str | Path, fmt: str, options: ReadOptions | None = None) -> Source:
    """Open one input of format ``fmt`` (one of ``FORMATS``); DataError if it cannot be read."""
    options = options or ReadOptions()
    if fmt not in FORMATS:
        raise DataError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "tfds":
        return TfdsSource(str(path), options)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    if fmt == "parquet":
        return ParquetSource(path, _required_columns(fmt, options))
    first = _first_line(path)
    if fmt == "movielens":
        return TextSource(path, _movielens_layout(path, first), options.block_bytes)
    if fmt == "recbole":
        return TextSource(path, _recbole_layout(path, first, options), options.block_bytes)
    if fmt == "amazon":
        if first.lstrip().startswith("{"):
            return JsonLinesSource(path, _amazon_json_layout(path, first), options.block_bytes)
        return TextSource(path, _amazon_csv_layout(first), options.block_bytes)
    return TextSource(path, _csv_layout(path, first, options), options.block_bytes)


# ---------------------------------------------------------------------------------------------
# Value checks shared by every reader.


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
        (_EMPTY_USER, _id_present(users)),
        (_EMPTY_ITEM, _id_present(items)),
        (_BAD_TIME, time_ok),
    ]
    rating_values = None
    if ratings is not None:
        rating_values, rating_ok = _to_float32(ratings)
        checks.append((_BAD_RATING, rating_ok))
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


def _id_present(ids: pa.Array) -> np.ndarray:
    """bool [n]: the id is there (not null and, for text, not empty)."""
    if pa.types.is_integer(ids.type):
        return np.asarray(pc.is_valid(ids), dtype=bool)
    return np.asarray(pc.greater(pc.binary_length(ids), 0).fill_null(False), dtype=bool)


def _numeric_text(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Text cast to ``target`` (fast path), or to float64 where some rows are not integers;
    rows that do not hold a number become null."""
    try:
        return pc.cast(values, target)
    except pa.ArrowInvalid:
        numeric = pc.match_substring_regex(values, _NUMBER)
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


# ---------------------------------------------------------------------------------------------
# Text inputs: blocks of whole lines.


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _open_binary(path: Path, raw: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw


def _first_line(path: Path) -> str:
    """The first non-empty line of a (possibly gzipped) text file, without its newline."""
    with open(path, "rb") as raw, _open_binary(path, raw) as stream:
        try:
            for line in stream:
                text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
                if text.strip():
                    return text
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: cannot read: {err}") from None
    raise DataError(f"{path}: the file is empty")


def _line_blocks(
    path: Path, block_bytes: int, skip_first: bool
) -> Iterator[tuple[bytes, int, int]]:
    """Yield (block of whole lines, 1-based number of its first line, input bytes consumed)."""
    with open(path, "rb") as raw, _open_binary(path, raw) as stream:
        line_no, consumed, rest = 1, 0, b""
        if skip_first and stream.readline():
            line_no = 2
        while True:
            try:
                data = stream.read(block_bytes)
            except (OSError, EOFError) as err:
                raise DataError(f"{path}: cannot read (corrupt gzip?): {err}") from None
            block = rest + data
            if not data:
                if block:
                    yield block, line_no, raw.tell() - consumed
                return
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                rest = block
                continue
            block, rest = block[:cut], block[cut:]
            position = raw.tell()
            yield block, line_no, position - consumed
            consumed = position
            line_no += block.count(b"\n")


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


class TextSource(Source):
    """A delimited text file (plain or gzipped) read in blocks by pyarrow.csv."""

    unit = "B"

    def __init__(self, path: Path, layout: TextLayout, block_bytes: int = BLOCK_BYTES) -> None:
        missing = [name for name in layout.columns.names if name not in layout.names]
        if missing:
            raise DataError(
                f"{path}: column {missing[0]!r} not found; the columns are "
                f"{', '.join(layout.names)}"
            )
        self.path, self.layout_spec, self.block_bytes = str(path), layout, block_bytes
        self.layout, self.time_unit = layout.name, layout.time_unit
        self.has_ratings = layout.columns.rating is not None
        self.size = Path(path).stat().st_size

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        spec = self.layout_spec
        for block, first_line, consumed in _line_blocks(
            Path(self.path), self.block_bytes, spec.header
        ):
            try:
                chunk, reasons, n_invalid = self._parse_fast(block)
            except pa.ArrowInvalid:  # e.g. invalid UTF-8: the line parser decides
                chunk, line_reasons, examples = self._parse_lines(block, first_line)
                bad.add_counts(line_reasons)
                bad.add_examples(examples)
            else:
                bad.add_counts(reasons)
                bad.add_counts(np.full(n_invalid, _FIELD_COUNT, np.int8))
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
        chunk, reasons = _check_table(table, spec.columns)
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
            fields = _split_fields(
                text.replace("::", "\t") if spec.double_colon else text,
                spec.delimiter,
                spec.quoting,
            )
            if len(fields) != len(spec.names):
                return _FIELD_COUNT
            return [fields[k] for k in positions]

        return _parse_lines(self.path, block, first_line, spec.columns, values)


def _lines(block: bytes, first_line: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-empty lines of a block; undecodable bytes are kept as
    surrogate escapes (see ``_is_text``)."""
    for offset, raw in enumerate(block.split(b"\n")):
        text = raw.decode("utf-8", errors="surrogateescape").rstrip("\r")
        if text.strip():
            yield first_line + offset, text


def _is_text(value: str | None) -> bool:
    """False for a value holding bytes that were not UTF-8 (surrogate escapes)."""
    if value is None:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_lines(
    file: str,
    block: bytes,
    first_line: int,
    columns: Columns,
    values: Callable[[str], list[str | None] | int],
) -> tuple[Chunk, np.ndarray, list[BadRow]]:
    """Parse a block line by line with ``values`` (a line's text -> the values of
    ``columns.names``, or a reason code) and the checks of :func:`check_columns`.

    Returns:
      the chunk of good rows, int8 reason codes per non-empty line, and the first bad rows.
    """
    numbers, texts, rows = [], [], []
    for number, text in _lines(block, first_line):
        numbers.append(number)
        texts.append(text)
        row = values(text)
        rows.append(row if isinstance(row, int) or all(map(_is_text, row)) else _NOT_UTF8)
    parsed = [i for i, row in enumerate(rows) if not isinstance(row, int)]
    table = pa.table(
        {
            name: pa.array([rows[i][k] for i in parsed], pa.string())
            for k, name in enumerate(columns.names)
        }
    )
    chunk, reasons = _check_table(table, columns)
    line_reasons = np.array([row if isinstance(row, int) else 0 for row in rows], np.int8)
    line_reasons[parsed] = reasons
    return chunk, line_reasons, _bad_examples(file, line_reasons, numbers, texts)


def _check_table(table: pa.Table, columns: Columns) -> tuple[Chunk, np.ndarray]:
    def column(name: str) -> pa.Array:
        return table[name].combine_chunks()

    return check_columns(
        column(columns.user),
        column(columns.item),
        column(columns.time),
        column(columns.rating) if columns.rating else None,
    )


def _bad_examples(
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


def _split_fields(line: str, delimiter: str, quoting: bool) -> list[str]:
    if quoting:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


def _movielens_layout(path: Path, first: str) -> TextLayout:
    default = ("user_id", "item_id", "rating", "timestamp")
    columns = Columns("user_id", "item_id", "timestamp", "rating")
    if "::" in first:
        return TextLayout(
            "movielens ratings.dat (::)", "\t", default, columns, header=False, double_colon=True
        )
    if "\t" in first:
        if ":" in first.split("\t")[0]:
            raise DataError(
                f"{path}: a RecBole atomic file (header {first[:60]!r}); read it "
                f"with --format recbole"
            )
        return TextLayout("movielens u.data (tab)", "\t", default, columns, header=False)
    if "," in first:
        fields = first.split(",")
        if re.fullmatch(_NUMBER, fields[0]):
            return TextLayout("movielens ratings.csv", ",", default, columns, header=False)
        named = Columns("userId", "movieId", "timestamp", "rating")
        return TextLayout("movielens ratings.csv (header)", ",", tuple(fields), named, header=True)
    raise DataError(
        f"{path}: not a MovieLens ratings file (expected u.data, ratings.dat or "
        f"ratings.csv); its first line is {first[:80]!r}"
    )


def _recbole_layout(path: Path, first: str, options: ReadOptions) -> TextLayout:
    fields = first.split("\t")
    if not all(":" in name for name in fields):
        raise DataError(
            f"{path}: not a RecBole atomic file: the header fields must be "
            f"name:type separated by tabs; got {first[:80]!r}"
        )
    names = tuple(name.split(":", 1)[0] for name in fields)
    rating = options.rating_col or ("rating" if "rating" in names else None)
    columns = Columns(
        options.user_col or "user_id",
        options.item_col or "item_id",
        options.time_col or "timestamp",
        rating,
    )
    return TextLayout("recbole atomic .inter", "\t", names, columns, header=True)


def _amazon_csv_layout(first: str) -> TextLayout:
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


def _csv_layout(path: Path, first: str, options: ReadOptions) -> TextLayout:
    delimiter = {"\\t": "\t", "tab": "\t"}.get(options.sep or ",", options.sep or ",")
    if len(delimiter) != 1:
        raise DataError(f"--sep must be one character (or \\t); got {options.sep!r}")
    columns = _required_columns("csv", options)
    names = tuple(_split_fields(first, delimiter, quoting=True))
    return TextLayout(
        f"csv (sep {delimiter!r}, header)",
        delimiter,
        names,
        columns,
        header=True,
        quoting=True,
        time_unit=None,
    )


def _required_columns(fmt: str, options: ReadOptions) -> Columns:
    if not (options.user_col and options.item_col and options.time_col):
        raise DataError(f"format {fmt} needs --user-col, --item-col and --time-col")
    return Columns(options.user_col, options.item_col, options.time_col, options.rating_col)


# ---------------------------------------------------------------------------------------------
# JSON lines (Amazon reviews).


@dataclass(frozen=True)
class JsonLayout:
    """Keys of a JSON-lines review file; ``time_unit`` of its time key."""

    name: str
    columns: Columns
    time_unit: str


def _amazon_json_layout(path: Path, first: str) -> JsonLayout:
    try:
        record = json.loads(first)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:1: malformed JSON: {err}") from None
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
        for block, first_line, consumed in _line_blocks(
            Path(self.path), self.block_bytes, skip_first=False
        ):
            try:
                table = pa_json.read_json(
                    io.BytesIO(block),
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=self._schema, unexpected_field_behavior="ignore"
                    ),
                )
            except pa.ArrowInvalid:  # a malformed line or an odd value: parse line by line
                chunk, reasons, examples = self._parse_lines(block, first_line)
                bad.add_counts(reasons)
                bad.add_examples(examples)
            else:
                chunk, reasons = _check_table(table, self.layout_spec.columns)
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
            except json.JSONDecodeError:
                return _MALFORMED_JSON
            if not isinstance(record, dict):
                return _MALFORMED_JSON
            return [_json_text(record.get(key)) for key in names]

        return _parse_lines(self.path, block, first_line, self.layout_spec.columns, values)


def _json_text(value: Any) -> str | None:
    """A JSON scalar as text (ids and numbers alike); None for missing, null or nested."""
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    return str(value)


# ---------------------------------------------------------------------------------------------
# Parquet.


class ParquetSource(Source):
    """A Parquet file read batch by batch; bad rows are located by 1-based row number."""

    unit = "rows"

    def __init__(self, path: Path, columns: Columns) -> None:
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file: {err}") from None
        names = self._file.schema_arrow.names
        missing = [name for name in columns.names if name not in names]
        if missing:
            raise DataError(
                f"{path}: column {missing[0]!r} not found; the columns are {', '.join(names)}"
            )
        self.path, self.columns = str(path), columns
        self.layout, self.time_unit = "parquet", None
        self.has_ratings = columns.rating is not None
        self.size = self._file.metadata.num_rows

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        start = 0
        for batch in self._file.iter_batches(batch_size=1 << 20, columns=self.columns.names):
            rows = np.arange(start + 1, start + batch.num_rows + 1)
            yield _check_counted(pa.Table.from_batches([batch]), self, bad, rows, "row"), len(rows)
            start += len(rows)


def _check_counted(
    table: pa.Table,
    source: ParquetSource | TfdsSource,
    bad: BadRows,
    locations: np.ndarray,
    kind: str,
) -> Chunk:
    """Check a table of a row-addressed source; count its bad rows, locating examples by
    ``locations`` (1-based row or example number of each table row)."""
    chunk, reasons = _check_table(table, source.columns)
    bad.add_counts(reasons)
    if reasons.any() and bad.wants_examples:
        bad.add_examples(
            _bad_examples(
                source.path,
                reasons,
                locations,
                lambda i: str(table.slice(i, 1).to_pylist()[0]),
                kind,
            )
        )
    return chunk


# ---------------------------------------------------------------------------------------------
# TFDS.


_TFDS_DEFAULTS = {
    "user": ("user_id", "user"),
    "item": ("movie_id", "item_id", "items", "item"),
    "time": ("timestamp", "timestamps"),
    "rating": ("user_rating", "rating", "ratings"),
}


class TfdsSource(Source):
    """A prepared TFDS dataset read through ``tfds`` data sources (no TensorFlow needed).

    ``name_or_dir`` is a dataset directory (holding ``dataset_info.json``) or a name such as
    ``movielens/100k-ratings`` looked up in ``options.tfds_data_dir``. The dataset must be
    prepared in a random-access format (array_record); nothing is downloaded.
    """

    unit = "examples"

    def __init__(self, name_or_dir: str, options: ReadOptions) -> None:
        import tensorflow_datasets as tfds  # slow import: only when a TFDS input is read

        self.path = name_or_dir
        try:
            if Path(name_or_dir).is_dir():
                builder = tfds.builder_from_directory(name_or_dir)
            else:
                builder = tfds.builder(name_or_dir, data_dir=options.tfds_data_dir)
        except (tfds.core.registered.DatasetNotFoundError, FileNotFoundError, ValueError) as err:
            raise DataError(
                f"TFDS dataset {name_or_dir!r} not found (data dir "
                f"{options.tfds_data_dir or 'default'}): "
                f"{str(err).splitlines()[0]}"
            ) from None
        if not builder.is_prepared():
            raise DataError(
                f"TFDS dataset {name_or_dir!r} is not prepared in "
                f"{builder.data_dir}; srt-jax never downloads TFDS data: build it "
                f"first (tfds build --file_format=array_record)"
            )
        try:
            self._source = builder.as_data_source(split=options.tfds_split)
        except (NotImplementedError, ValueError, KeyError) as err:
            raise DataError(
                f"TFDS dataset {name_or_dir!r}, split {options.tfds_split!r}: "
                f"cannot open for random access without TensorFlow "
                f"(file format {builder.info.file_format}; rebuild it with "
                f"--file_format=array_record): {str(err).splitlines()[0]}"
            ) from None
        features = list(builder.info.features.keys())
        self.time_unit = (builder.info.metadata or {}).get("store_meta", {}).get("time_unit")
        self.columns = Columns(
            self._feature(features, options.user_col, "user"),
            self._feature(features, options.item_col, "item"),
            self._feature(features, options.time_col, "time"),
            self._feature(features, options.rating_col, "rating", required=False),
        )
        self.layout = f"tfds {builder.info.full_name} split {options.tfds_split}"
        self.has_ratings = self.columns.rating is not None
        self.size = len(self._source)

    def _feature(
        self, features: list[str], given: str | None, role: str, required: bool = True
    ) -> str | None:
        """The feature named ``given``, else the first default name for ``role`` present."""
        if given is not None and given not in features:
            raise DataError(
                f"TFDS dataset {self.path!r}: feature {given!r} not found; the "
                f"features are {', '.join(features)}"
            )
        name = given or next((name for name in _TFDS_DEFAULTS[role] if name in features), None)
        if name is None and required:
            raise DataError(
                f"TFDS dataset {self.path!r}: no {role} feature among "
                f"{', '.join(features)}; name it with --{role}-col"
            )
        return name

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        for start in range(0, len(self._source), TFDS_BATCH):
            keys = list(range(start, min(start + TFDS_BATCH, len(self._source))))
            examples = self._source.__getitems__(keys)
            table, example_of_row = _tfds_table(examples, self.columns)
            examples_1based = start + example_of_row + 1
            yield _check_counted(table, self, bad, examples_1based, "example"), len(keys)


def _tfds_table(
    examples: Sequence[dict[str, Any]], columns: Columns
) -> tuple[pa.Table, np.ndarray]:
    """Columns of a batch of decoded examples, and the batch index of each row.

    Scalar features give one row per example; when the item feature is 1-D, each example is
    one user's history (items, timestamps and ratings 1-D, the user scalar) and gives one row
    per item.
    """
    lengths = np.array([np.size(example[columns.item]) for example in examples], np.int64)
    sequence = bool(examples) and np.ndim(examples[0][columns.item]) == 1
    example_of_row = (
        np.repeat(np.arange(len(examples)), lengths) if sequence else np.arange(len(examples))
    )

    def values(name: str, per_row: bool) -> pa.Array:
        raw = [example[name] for example in examples]
        if per_row and sequence:
            flat = np.concatenate(raw) if raw else np.array([])
        else:
            flat = np.asarray(raw)[example_of_row] if sequence else np.asarray(raw)
        if flat.dtype.kind in "SO":
            return pa.array(
                [None if v is None else bytes(v).decode("utf-8", "replace") for v in flat],
                pa.string(),
            )
        return pa.array(flat)

    table = pa.table(
        {
            columns.user: values(columns.user, per_row=False),
            columns.item: values(columns.item, per_row=True),
            columns.time: values(columns.time, per_row=True),
            **({columns.rating: values(columns.rating, per_row=True)} if columns.rating else {}),
        }
    )
    return table, example_of_row

"""Item side tables: each item's original id and its attribute tokens.

A side table has one row per item (a repeated id is merged into its first row) and some
attribute columns; each chosen column (a :class:`FeatureColumn`) turns its cell into token
strings ``column=piece``: the whole value (``brand=LEGO``), its lower-cased words
(``title=usual``), or the pieces of a list or of a separated value (``class=Drama``).

Formats (``FEATURE_FORMATS``), all read line by line in Python (item tables are small):

- ``recbole``: RecBole atomic ``.item`` files (tab, header ``name:type``); the columns and
  their modes default to the header's types (``token``/``float``: whole;
  ``token_seq``/``float_seq``: pieces separated by spaces).
- ``amazon``: Amazon product metadata, JSON lines (2018, 2023) or Python dict literals
  (2014), plain or gzipped; item key ``asin``, else ``parent_asin``.
- ``csv`` (``,``; tab for ``.tsv``) and ``parquet``: any table; item and feature columns
  must be named.

Bad rows follow the interaction readers (:mod:`.base`): an error naming file and line, or,
with ``skip_bad_rows``, counted in a :class:`~.base.BadRows` and skipped.
"""

from __future__ import annotations

import ast
import csv
import functools
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from srt_jax.data.readers.amazon import _json_text
from srt_jax.data.readers.base import (
    BLOCK_BYTES,
    EMPTY_ITEM,
    FIELD_COUNT,
    MALFORMED_JSON,
    NOT_UTF8,
    REASONS,
    BadRow,
    BadRows,
)
from srt_jax.data.readers.lines import _is_text, _lines, line_blocks
from srt_jax.data.readers.text import near_miss
from srt_jax.errors import ConfigError, DataError, first_line

FEATURE_FORMATS = ("recbole", "amazon", "csv", "parquet")
FeatureMode = Literal["whole", "words", "multi"]
MODES: tuple[str, ...] = get_args(FeatureMode)
FORMS = (
    "expected NAME (whole value), NAME:whole, NAME:words or NAME:multi:SEP "
    "(SEP separates the pieces, e.g. '|' or ' '; \\t or tab for a tab)"
)
RECBOLE_SEQ_SEP = " "
"""The separator of RecBole's ``token_seq`` and ``float_seq`` fields."""
RECBOLE_MODES: dict[str, tuple[FeatureMode, str | None]] = {
    "token": ("whole", None),
    "float": ("whole", None),
    "token_seq": ("multi", RECBOLE_SEQ_SEP),
    "float_seq": ("multi", RECBOLE_SEQ_SEP),
}
"""Mode and separator of a RecBole column by its type."""
_TABS = {"\\t": "\t", "tab": "\t"}
_SHOWN_SEPS = {"\t": "\\t"}
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_EXACT_FLOAT = 2.0**53
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)
"""What ``ast.literal_eval`` raises on text that is not a Python literal."""


def _problem(name: str, mode: str, sep: str | None) -> str | None:
    """What is wrong with a column spec, or None."""
    if not name:
        return "the column name is empty"
    if mode not in MODES:
        return f"unknown mode {mode!r}"
    if mode == "multi" and not sep:
        return "mode multi needs a separator"
    if mode != "multi" and sep is not None:
        return f"a separator is only for mode multi, not {mode}"
    return None


@dataclass(frozen=True)
class FeatureColumn:
    """One attribute column and how it becomes tokens.

    Attributes:
      name: column name (or JSON key); the prefix of its tokens.
      mode: ``whole`` (the value is one token), ``words`` (its lower-cased words) or
        ``multi`` (the pieces of a list, or of the value split at ``sep``).
      sep: separator of mode ``multi`` (required there, None otherwise).
    """

    name: str
    mode: FeatureMode = "whole"
    sep: str | None = None

    def __post_init__(self) -> None:
        problem = _problem(self.name, self.mode, self.sep)
        if problem:
            raise ConfigError(
                f"feature column {self.name!r}: {problem}; {FORMS}", "--feature-column"
            )

    @classmethod
    def parse(cls, text: str) -> FeatureColumn:
        """A column from ``NAME``, ``NAME:whole``, ``NAME:words`` or ``NAME:multi:SEP``
        (``\\t`` or ``tab`` as SEP: a tab); ConfigError (key ``--feature-column``) otherwise."""
        name, *rest = text.split(":", 2)
        mode = rest[0] if rest else "whole"
        sep = _TABS.get(rest[1], rest[1]) if len(rest) == 2 else None
        problem = _problem(name, mode, sep)
        if problem:
            raise ConfigError(f"--feature-column {text!r}: {problem}; {FORMS}", "--feature-column")
        return cls(name, mode, sep)

    def __str__(self) -> str:
        """``name:mode`` or ``name:multi:sep`` (a tab as ``\\t``): what :meth:`parse` reads."""
        if self.mode != "multi":
            return f"{self.name}:{self.mode}"
        return f"{self.name}:multi:{_SHOWN_SEPS.get(self.sep, self.sep)}"

    def tokens(self, value: object) -> list[str]:
        """Token strings ``f"{name}={piece}"`` of one cell, each kept once in first-seen order.

        Pieces by mode: ``whole``, the stripped value (integral floats as integers: 1995.0 is
        ``1995``); ``words``, the lower-cased runs of letters and digits; ``multi``, the
        value split at ``sep``, each piece stripped. A list or tuple value (nested ones too)
        is flattened, each element one value (``multi`` does not split it further); a dict
        gives one ``"key: value"`` value per entry. None, NaN and empty values give none.
        """
        pieces = (
            piece for scalar, inner in _scalars(value) for piece in self._pieces(scalar, inner)
        )
        return list(dict.fromkeys(f"{self.name}={piece}" for piece in pieces if piece))

    def _pieces(self, scalar: object, inner: bool) -> list[str]:
        """The pieces of one value (``inner``: an element of a list or dict)."""
        text = _cell_text(scalar)
        if self.mode == "words":
            return _WORD.findall(text.lower())
        if self.mode == "multi" and not inner:
            return [piece.strip() for piece in text.split(self.sep)]
        return [text.strip()]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _scalars(value: object) -> Iterator[tuple[object, bool]]:
    """(value, whether it is an element of a list or dict) of a cell: lists, tuples and
    dicts (one ``"key: value"`` per entry) flattened without recursion (any depth is fine);
    missing values (None, NaN) left out."""
    stack = [(value, False)]
    while stack:
        item, inner = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend((element, True) for element in reversed(item))
        elif isinstance(item, dict):
            stack.extend(
                (f"{key}: {_cell_text(entry)}", True)
                for key, entry in reversed(item.items())
                if not _missing(entry)
            )
        elif not _missing(item):
            yield item, inner


def _cell_text(value: object) -> str:
    """A scalar as text: bytes decoded as UTF-8, integral floats as integers."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT:
        return str(int(value))
    return str(value)


@dataclass
class ItemTable:
    """The rows of an item side table.

    Attributes:
      path: the file read.
      item_ids: original id (as text: ``'1'``, ``'B00ABC'``) of each row, unique: the rows
        of a repeated id are merged into its first (tokens united in order).
      tokens: token strings of each row, aligned with ``item_ids`` (empty: no features).
      columns: the feature columns used.
      layout: what was read, e.g. ``"recbole atomic .item (movie_title:multi: , ...)"``.
      rows_read: good rows read (``len(item_ids) == rows_read - merged_rows``).
      merged_rows: rows merged into an earlier row of the same id.
      bad_rows: rows skipped (with ``skip_bad_rows``), by reason.
    """

    path: Path
    item_ids: list[str]
    tokens: list[list[str]]
    columns: tuple[FeatureColumn, ...]
    layout: str
    rows_read: int
    merged_rows: int
    bad_rows: BadRows

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class _Rows:
    """The rows of a table being read: repeated ids merged, bad rows raised or counted."""

    path: Path
    skip_bad_rows: bool
    bad: BadRows = field(default_factory=BadRows)
    index: dict[str, int] = field(default_factory=dict)
    tokens: list[dict[str, None]] = field(default_factory=list)
    read: int = 0

    def add(
        self,
        item_id: str | None,
        tokens: list[str],
        where: int,
        text: str | Callable[[], str],
        kind: str = "line",
    ) -> None:
        """Add a row at ``where`` (1-based ``kind`` number; ``text``: the row, for messages)."""
        if not item_id:
            self.reject(where, EMPTY_ITEM, text, kind)
        elif not (_is_text(item_id) and all(map(_is_text, tokens))):  # e.g. JSON "\ud800"
            self.reject(where, NOT_UTF8, text, kind)
        elif item_id in self.index:
            self.read += 1
            self.tokens[self.index[item_id]].update(dict.fromkeys(tokens))
        else:
            self.read += 1
            self.index[item_id] = len(self.tokens)
            self.tokens.append(dict.fromkeys(tokens))

    def reject(
        self, where: int, code: int, text: str | Callable[[], str], kind: str = "line"
    ) -> None:
        """A bad row: DataError naming file and line, or counted with ``skip_bad_rows``."""
        row = BadRow(
            str(self.path), where, REASONS[code], text if isinstance(text, str) else text(), kind
        )
        if not self.skip_bad_rows:
            raise DataError(f"{row} (--skip-bad-rows skips bad rows and reports them)")
        self.bad.add_counts(np.array([code], np.int8))
        self.bad.add_examples([row])

    def table(self, columns: tuple[FeatureColumn, ...], layout: str) -> ItemTable:
        if not self.index:
            skipped = f" ({self.bad.count} bad rows skipped)" if self.bad.count else ""
            raise DataError(f"{self.path}: no item rows{skipped}")
        return ItemTable(
            self.path,
            list(self.index),
            [list(row) for row in self.tokens],
            columns,
            f"{layout} ({', '.join(map(str, columns))})",
            self.read,
            self.read - len(self.index),
            self.bad,
        )


def read_item_table(
    path: str | Path,
    fmt: str,
    *,
    columns: Sequence[FeatureColumn] | None = None,
    item_col: str | None = None,
    skip_bad_rows: bool = False,
) -> ItemTable:
    """Read an item side table.

    Args:
      path: the file (text formats may be gzipped).
      fmt: one of ``FEATURE_FORMATS``.
      columns: the feature columns; by default, for ``recbole`` every column but the item's
        (modes from the header's types) and for ``amazon`` those of ``title:words``,
        ``brand``, ``store``, ``categories:multi:|``, ``category:multi:|``, ``main_cat`` and
        ``main_category`` in the first good line. Required for ``csv`` and ``parquet``.
      item_col: the item id column (default ``item_id`` for ``recbole``; ``asin``, else
        ``parent_asin`` for ``amazon``). Required for ``csv`` and ``parquet``.
      skip_bad_rows: skip bad rows and count them in ``bad_rows`` (else a DataError).

    Raises:
      DataError: a missing or unreadable file, a file not of format ``fmt``, an unknown
        column, a bad row (unless ``skip_bad_rows``), or no item rows at all.
    """
    if fmt not in FEATURE_FORMATS:
        raise DataError(
            f"unknown item table format {fmt!r}; expected one of {', '.join(FEATURE_FORMATS)}"
        )
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    if fmt in ("csv", "parquet") and not (item_col and columns):
        raise DataError(
            f"item tables of format {fmt} need --features-item-col and --feature-column"
        )
    rows = _Rows(path, skip_bad_rows)
    chosen = tuple(columns) if columns is not None else None
    if fmt == "parquet":
        return rows.table(*_read_parquet(path, chosen, str(item_col), rows))
    lines = _text_lines(path)
    if fmt == "amazon":
        return rows.table(*_read_amazon(lines, chosen, item_col, rows))
    if fmt == "recbole":
        return rows.table(*_read_recbole(path, lines, chosen, item_col, rows))
    return rows.table(*_read_csv(path, lines, chosen, str(item_col), rows))


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of the non-empty lines of a (possibly gzipped) text file;
    bytes that are not UTF-8 are kept as surrogate escapes."""
    for block, first, _ in line_blocks(path, BLOCK_BYTES, skip_first=False):
        yield from _lines(block, first)


def _header(path: Path, lines: Iterator[tuple[int, str]]) -> str:
    """The first non-empty line (BOM removed); DataError if there is none or it is not text."""
    number, text = next(lines, (0, ""))
    if not number:
        raise DataError(f"{path}: the file is empty")
    if not _is_text(text):
        raise DataError(f"{path}:{number}: the header is not UTF-8 text: {text[:80]!r}")
    return text.lstrip("\ufeff")


def _check_names(path: Path, wanted: Sequence[str], names: Sequence[str], what: str) -> None:
    """DataError naming the ``wanted`` columns not among ``names``."""
    missing = [name for name in dict.fromkeys(wanted) if name not in names]
    if missing:
        raise DataError(
            f"{path}: {what} {', '.join(map(repr, missing))} not found; the columns are "
            f"{', '.join(map(repr, names))}{near_miss(missing[0], tuple(names))}"
        )


def _read_delimited(
    lines: Iterator[tuple[int, str]],
    names: Sequence[str],
    item: str,
    columns: tuple[FeatureColumn, ...],
    split: Callable[[str], list[str]],
    rows: _Rows,
) -> None:
    """The rows of a delimited text file (header ``names``; ``split`` cuts a line)."""
    item_at = names.index(item)
    cells = [(column, names.index(column.name)) for column in columns]
    for number, text in lines:
        if not _is_text(text):
            rows.reject(number, NOT_UTF8, text)
            continue
        try:
            values = split(text)
        except csv.Error:  # e.g. a field over the csv module's size limit, a lone CR
            values = []
        if len(values) != len(names):
            rows.reject(number, FIELD_COUNT, text)
            continue
        tokens = [token for column, k in cells for token in column.tokens(values[k])]
        rows.add(values[item_at], tokens, number, text)


def _read_recbole(
    path: Path,
    lines: Iterator[tuple[int, str]],
    columns: tuple[FeatureColumn, ...] | None,
    item_col: str | None,
    rows: _Rows,
) -> tuple[tuple[FeatureColumn, ...], str]:
    """A RecBole atomic ``.item`` file: the columns used and the layout's name."""
    header = _header(path, lines)
    fields = [name.partition(":") for name in header.split("\t")]
    if not all(name and colon and kind in RECBOLE_MODES for name, colon, kind in fields):
        raise DataError(
            f"{path}: not a RecBole atomic file: the header fields must be name:type (type "
            f"{', '.join(RECBOLE_MODES)}) separated by tabs; got {header[:80]!r}"
        )
    names = [name for name, _, _ in fields]
    item = item_col or "item_id"
    _check_names(path, [item], names, "item column")
    if columns is None:
        columns = tuple(
            FeatureColumn(name, *RECBOLE_MODES[kind]) for name, _, kind in fields if name != item
        )
    _check_names(path, [column.name for column in columns], names, "feature column")
    _read_delimited(lines, names, item, columns, lambda text: text.split("\t"), rows)
    return columns, "recbole atomic .item"


def _read_csv(
    path: Path,
    lines: Iterator[tuple[int, str]],
    columns: tuple[FeatureColumn, ...],
    item_col: str,
    rows: _Rows,
) -> tuple[tuple[FeatureColumn, ...], str]:
    """A delimited file with a header (``,``, or tab for ``.tsv``), quoted fields allowed."""
    delimiter = "\t" if path.name.removesuffix(".gz").endswith(".tsv") else ","

    def split(text: str) -> list[str]:
        return next(csv.reader([text], delimiter=delimiter))

    header = _header(path, lines)
    try:
        names = split(header)
    except csv.Error as err:
        raise DataError(f"{path}: the header cannot be split at {delimiter!r}: {err}") from None
    _check_names(path, [item_col], names, "item column")
    _check_names(path, [column.name for column in columns], names, "feature column")
    _read_delimited(lines, names, item_col, columns, split, rows)
    return columns, f"csv (sep {delimiter!r}, header)"


def _record(text: str) -> tuple[dict[str, Any] | None, bool]:
    """A line as a dict (JSON, else a Python dict literal) or None; whether it was a
    Python literal."""
    try:
        record, literal = json.loads(text), False
    except (ValueError, RecursionError):  # also a number too long for Python
        with warnings.catch_warnings():  # invalid escapes warn (3.11) before they fail
            warnings.simplefilter("ignore")
            try:
                record, literal = ast.literal_eval(text), True
            except _LITERAL_ERRORS:
                return None, False
    return (record if isinstance(record, dict) else None), literal


def _amazon_columns(record: dict[str, Any]) -> tuple[FeatureColumn, ...]:
    """The default feature columns of an Amazon metadata file whose first good row is
    ``record``."""
    defaults = (
        FeatureColumn("title", "words"),
        FeatureColumn("brand"),
        FeatureColumn("store"),
        FeatureColumn("categories", "multi", "|"),
        FeatureColumn("category", "multi", "|"),
        FeatureColumn("main_cat"),
        FeatureColumn("main_category"),
    )
    return tuple(column for column in defaults if column.name in record)


def _read_amazon(
    lines: Iterator[tuple[int, str]],
    columns: tuple[FeatureColumn, ...] | None,
    item_col: str | None,
    rows: _Rows,
) -> tuple[tuple[FeatureColumn, ...], str]:
    """Amazon product metadata (JSON or dict-literal lines): the columns used, the layout."""
    literal_lines = False
    for number, text in lines:
        if not _is_text(text):
            rows.reject(number, NOT_UTF8, text)
            continue
        record, literal = _record(text)
        if record is None:
            rows.reject(number, MALFORMED_JSON, text)
            continue
        item_id = _json_text(
            record.get(item_col or ("asin" if "asin" in record else "parent_asin"))
        )
        if columns is None and item_id:
            columns, literal_lines = _amazon_columns(record), literal
        tokens = [token for c in columns or () for token in c.tokens(record.get(c.name))]
        rows.add(item_id, tokens, number, text)
    kind = "python dict literal" if literal_lines else "json"
    return columns or (), f"amazon metadata ({kind} lines)"


def _read_parquet(
    path: Path,
    columns: tuple[FeatureColumn, ...],
    item_col: str,
    rows: _Rows,
) -> tuple[tuple[FeatureColumn, ...], str]:
    """A Parquet file; bad rows are located by 1-based row number."""
    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file: {first_line(err)}") from None
    _check_names(path, [item_col], schema.names, "item column")
    _check_names(path, [column.name for column in columns], schema.names, "feature column")
    kind = schema.field(item_col).type
    if not (
        pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        raise DataError(
            f"{path}: item column {item_col!r} has type {kind}; expected integers or text"
        )
    wanted = list(dict.fromkeys([item_col, *(column.name for column in columns)]))
    start = 0
    for batch in _batches(path, file, wanted):
        values = {name: batch.column(name).to_pylist() for name in wanted}
        for i, item in enumerate(values[item_col]):
            tokens = [token for c in columns for token in c.tokens(values[c.name][i])]
            text = functools.partial(_row_text, values, i)
            rows.add(_json_text(item), tokens, start + i + 1, text, "row")
        start += batch.num_rows
    return columns, "parquet"


def _row_text(values: dict[str, list[Any]], i: int) -> str:
    """Row ``i`` of the columns ``values``, as a dict's text."""
    return str({name: column[i] for name, column in values.items()})


def _batches(path: Path, file: pq.ParquetFile, names: list[str]) -> Iterator[pa.RecordBatch]:
    """The batches of ``names``; a damaged page is a DataError naming the file."""
    batches = file.iter_batches(batch_size=1 << 16, columns=names)
    while True:
        try:
            yield next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file: {first_line(err)}") from None

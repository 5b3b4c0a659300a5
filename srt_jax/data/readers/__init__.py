"""Readers of interaction logs: each input becomes a stream of column chunks plus bad-row counts.

A reader turns one input (a file, or a TFDS dataset) into :class:`Chunk` s: the good rows of one
block of input, in input order, as columns (original user and item ids as arrow arrays,
timestamps int64, optional ratings float32). Rows that cannot be used are counted by reason
in a :class:`BadRows`, which keeps the first few with file and 1-based line number.

Formats (``FORMATS``), one module each; :func:`open_source` picks the reader:

- ``movielens`` (:mod:`.movielens`): ``u.data`` (tab, no header), ``ratings.dat`` (``::``),
  ``ratings.csv`` (header ``userId,movieId,rating,timestamp``), told apart by the first line.
- ``recbole`` (:mod:`.recbole`): RecBole atomic ``.inter`` files (tab, header ``name:type``);
  columns ``user_id``, ``item_id``, ``timestamp`` and ``rating`` unless named otherwise.
- ``amazon`` (:mod:`.amazon`): Amazon Reviews 2018 ratings-only CSV
  (``item,user,rating,timestamp``), 2023 ratings CSV (header
  ``user_id,parent_asin,rating,timestamp``, time in ms), and the JSON-lines reviews of
  2014/2018 (``reviewerID``, ``asin``, ``unixReviewTime``, ``overall``) and 2023
  (``user_id``, ``parent_asin``, ``timestamp`` in ms, ``rating``).
- ``csv`` (:mod:`.text`) / ``parquet`` (:mod:`.parquet`): any table with named user, item and
  time (and rating) columns.
- ``tfds`` (:mod:`.tfds`): a prepared TFDS dataset (by name, or its directory) in a
  random-access file format (array_record), read without TensorFlow.

Item side tables (item attributes, not interactions) have their own entry point,
:func:`read_item_table` (:mod:`.item_tables`, formats ``FEATURE_FORMATS``):

- ``recbole`` ``.item``, ``amazon`` product metadata (2014 dict literals, 2018/2023 JSON
  lines), ``csv`` and ``parquet`` tables become an :class:`ItemTable`: each item's original
  id and its token strings ``column=piece``, made by one :class:`FeatureColumn` per
  attribute (the whole value, its words, or the pieces of a list or separated value).

The other modules: :mod:`.base` (options, chunks, bad rows, the Source interface),
:mod:`.checks` (value checks shared by every reader) and :mod:`.lines` (text inputs as
blocks of whole lines, and the line-by-line parse that locates bad rows).
"""

from __future__ import annotations

from pathlib import Path

from srt_jax.data.readers.amazon import JsonLinesSource, amazon_csv_layout, amazon_json_layout
from srt_jax.data.readers.base import BadRow, BadRows, Chunk, ReadOptions, Source, required_columns
from srt_jax.data.readers.checks import check_columns
from srt_jax.data.readers.item_tables import (
    FEATURE_FORMATS,
    FeatureColumn,
    FeatureMode,
    ItemTable,
    read_item_table,
)
from srt_jax.data.readers.lines import read_first_line
from srt_jax.data.readers.movielens import movielens_layout
from srt_jax.data.readers.parquet import ParquetSource
from srt_jax.data.readers.recbole import recbole_layout
from srt_jax.data.readers.text import TextSource, csv_layout
from srt_jax.data.readers.tfds import TfdsSource
from srt_jax.errors import DataError

# the entry point, the reader contract and the sources; constants and layouts are imported
# from their own modules (e.g. srt_jax.data.readers.base.REASONS)
__all__ = [
    "FEATURE_FORMATS",
    "FORMATS",
    "BadRow",
    "BadRows",
    "Chunk",
    "FeatureColumn",
    "FeatureMode",
    "ItemTable",
    "JsonLinesSource",
    "ParquetSource",
    "ReadOptions",
    "Source",
    "TextSource",
    "TfdsSource",
    "check_columns",
    "open_source",
    "read_item_table",
]

FORMATS = ("movielens", "recbole", "amazon", "csv", "parquet", "tfds")


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
        return ParquetSource(path, required_columns(fmt, options))
    first = read_first_line(path)
    if fmt == "movielens":
        return TextSource(path, movielens_layout(path, first), options.block_bytes)
    if fmt == "recbole":
        return TextSource(path, recbole_layout(path, first, options), options.block_bytes)
    if fmt == "amazon":
        if first.lstrip().startswith("{"):
            return JsonLinesSource(path, amazon_json_layout(path, first), options.block_bytes)
        return TextSource(path, amazon_csv_layout(first), options.block_bytes)
    return TextSource(path, csv_layout(path, first, options), options.block_bytes)

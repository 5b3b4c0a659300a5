"""Text inputs as blocks of whole lines, and the line-by-line parse of a block.

Text inputs (plain or gzipped, detected by magic bytes) are cut into blocks of whole lines,
each parsed by pyarrow (``pyarrow.csv`` / ``pyarrow.json``, see :mod:`.text` and
:mod:`.amazon`): ids as text, times and ratings as numbers, and, if some value of a block is
not a plain number, the block again with those columns as text, converted by
:mod:`.checks` so that a bad value marks only its own row. Values may not contain newlines
(pyarrow's default, ``newlines_in_values=False``), which is what lets a block start at a
known line number. Only when a block has bad rows (to report their line numbers) or pyarrow
rejects it (malformed JSON, invalid UTF-8) is it parsed again line by line in Python
(:func:`parse_lines`); that parse shares every value check with the fast path.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from srt_jax.data.readers.base import NOT_UTF8, BadRow, Chunk, Columns
from srt_jax.data.readers.checks import bad_examples, check_table
from srt_jax.errors import DataError


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


READ_ERRORS = (OSError, EOFError, zlib.error)
"""What reading a damaged (gzipped) file raises: a truncated or corrupt stream."""


def _open_binary(path: Path, raw: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw


def read_first_line(path: Path) -> str:
    """The first non-empty line of a (possibly gzipped) text file, without its newline."""
    with open(path, "rb") as raw, _open_binary(path, raw) as stream:
        try:
            for line in stream:
                text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
                if text.strip():
                    return text
        except READ_ERRORS as err:
            raise DataError(f"{path}: cannot read: {err}") from None
    raise DataError(f"{path}: the file is empty")


def line_blocks(path: Path, block_bytes: int, skip_first: bool) -> Iterator[tuple[bytes, int, int]]:
    """Yield (block of whole lines, 1-based number of its first line, input bytes consumed)."""
    with open(path, "rb") as raw, _open_binary(path, raw) as stream:
        line_no, consumed, rest = 1, 0, b""
        while True:
            try:
                if line_no == 1 and skip_first and stream.readline():
                    line_no = 2
                data = stream.read(block_bytes)
            except READ_ERRORS as err:
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


def parse_lines(
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
        rows.append(row if isinstance(row, int) or all(map(_is_text, row)) else NOT_UTF8)
    parsed = [i for i, row in enumerate(rows) if not isinstance(row, int)]
    table = pa.table(
        {
            name: pa.array([rows[i][k] for i in parsed], pa.string())
            for k, name in enumerate(columns.names)
        }
    )
    chunk, reasons = check_table(table, columns)
    line_reasons = np.array([row if isinstance(row, int) else 0 for row in rows], np.int8)
    line_reasons[parsed] = reasons
    return chunk, line_reasons, bad_examples(file, line_reasons, numbers, texts)

"""The reader contract: read options, chunks of good rows, bad-row counts, and sources.

A reader turns one input into :class:`Chunk` s (the good rows of one block of input, in input
order, as columns) and counts the rows it cannot use by reason in a :class:`BadRows`, which
keeps the first few with their file and 1-based line, row or example number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from srt_jax.errors import DataError

MAX_BAD_EXAMPLES = 5
BLOCK_BYTES = 1 << 26

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
    "1-D features of different lengths",
)
FIELD_COUNT, MALFORMED_JSON, NOT_UTF8 = 1, 2, 3
EMPTY_USER, EMPTY_ITEM, BAD_TIME, BAD_RATING = 4, 5, 6, 7
UNEQUAL_LENGTHS = 8


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
        return f"{where}: {self.reason}: {shown_text(self.text[:200])}"


def shown_text(text: str) -> str:
    """``text`` by ``repr`` (NULs, BOMs and invisible characters visible); text holding
    bytes that are not UTF-8 (kept as surrogate escapes) as those bytes, saying so."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return f"{raw!r} (bytes: the file is read as UTF-8)"
    return repr(text)


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


def required_columns(fmt: str, options: ReadOptions) -> Columns:
    """The columns ``options`` name (formats without a fixed layout: ``csv``, ``parquet``)."""
    if not (options.user_col and options.item_col and options.time_col):
        raise DataError(f"format {fmt} needs --user-col, --item-col and --time-col")
    return Columns(options.user_col, options.item_col, options.time_col, options.rating_col)

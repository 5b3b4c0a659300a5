"""Interaction logs as compact columns: read chunk by chunk, ids encoded, rows sorted by
(user, time). Steps 1-3 of :func:`srt_jax.data.ingest.prepare_store` (see that module)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from srt_jax.data.readers import BadRows, Source
from srt_jax.errors import DataError
from srt_jax.progress import progress_bar

_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"
_UNICODE_CHUNK = 1 << 20


class IdEncoder:
    """Dense int32 codes for ids that arrive chunk by chunk as arrow arrays.

    ``add`` dictionary-encodes a chunk (per-row local codes plus the chunk's distinct ids);
    ``finish`` unifies the chunk dictionaries in one pass, renumbers codes in original-id
    order and returns them with the ids.
    """

    def __init__(self) -> None:
        self._dictionaries: list[pa.Array] = []
        self._codes: list[np.ndarray] = []

    def add(self, ids: pa.Array) -> None:
        if pa.types.is_integer(ids.type):
            ids = ids.cast(pa.int64())
        encoded = pc.dictionary_encode(ids)
        self._dictionaries.append(encoded.dictionary)
        self._codes.append(np.asarray(encoded.indices, dtype=np.int32))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (int32 [n] codes, ids [n_ids]) with ``ids[codes]`` the original id of each
        row and ``ids`` sorted (int64 when all ids are integers, else fixed-width unicode)."""
        dictionaries = self._dictionaries
        if not all(pa.types.is_integer(d.type) for d in dictionaries):
            dictionaries = [d.cast(pa.large_string()) for d in dictionaries]
        merged = pc.dictionary_encode(
            pa.concat_arrays(dictionaries) if dictionaries else pa.array([], pa.int64())
        )
        ids = _id_values(merged.dictionary)
        order = np.argsort(ids, kind="stable")
        rank = np.empty(len(ids), np.int32)
        rank[order] = np.arange(len(ids), dtype=np.int32)
        global_of_local = rank[np.asarray(merged.indices, dtype=np.int64)]
        codes = np.empty(sum(len(c) for c in self._codes), np.int32)
        start, base = 0, 0
        for dictionary in self._dictionaries:
            local = self._codes.pop(0)
            codes[start : start + len(local)] = global_of_local[base:][local]
            start, base = start + len(local), base + len(dictionary)
        self._dictionaries = []
        return codes, ids[order]


def _id_values(ids: pa.Array) -> np.ndarray:
    """Ids as int64 when they are integers (or all canonical integer text), else unicode."""
    if pa.types.is_integer(ids.type):
        return np.asarray(ids, dtype=np.int64)
    if len(ids) == 0 or pc.all(pc.match_substring_regex(ids, _CANONICAL_INT)).as_py():
        return np.asarray(pc.cast(ids, pa.int64()), dtype=np.int64)
    width = max(1, pc.max(pc.utf8_length(ids)).as_py())
    values = np.empty(len(ids), f"<U{width}")
    for start in range(0, len(ids), _UNICODE_CHUNK):  # bounded number of Python strings
        values[start : start + _UNICODE_CHUNK] = ids.slice(start, _UNICODE_CHUNK).to_pylist()
    return values


@dataclass
class Interactions:
    """Interactions as columns (one entry per row) and the original ids their codes index."""

    users: np.ndarray  # int32 codes, in user-id order
    items: np.ndarray  # int32 codes, in item-id order
    timestamps: np.ndarray  # int64
    ratings: np.ndarray | None  # float32
    user_ids: np.ndarray
    item_ids: np.ndarray

    def take(self, rows: np.ndarray) -> None:
        """Keep ``rows`` (indices), in that order; one column is copied at a time."""
        for name in ("users", "items", "timestamps", "ratings"):
            column = getattr(self, name)
            if column is not None:
                setattr(self, name, column[rows])


def read_columns(
    sources: Sequence[Source], bad: BadRows, *, skip_bad_rows: bool = False, progress: bool = True
) -> Interactions:
    """Read every source into compact columns: a bad row is a DataError naming its file and
    line, unless ``skip_bad_rows`` (then it is skipped and counted in ``bad``)."""
    users, items = IdEncoder(), IdEncoder()
    timestamps: list[np.ndarray] = []
    ratings: list[np.ndarray] | None = [] if all(s.has_ratings for s in sources) else None
    for source in sources:
        with progress_bar(
            source.size, f"read {Path(source.path).name}", source.unit, disable=not progress
        ) as bar:
            for chunk, advance in source.chunks(bad):
                if bad.count and not skip_bad_rows:
                    raise DataError(
                        f"{bad.examples[0]} (--skip-bad-rows skips bad rows and reports them)"
                    )
                users.add(chunk.users)
                items.add(chunk.items)
                timestamps.append(chunk.timestamps)
                if ratings is not None:
                    ratings.append(chunk.ratings)
                bar.update(advance)
    user_codes, user_ids = users.finish()
    item_codes, item_ids = items.finish()
    return Interactions(
        user_codes,
        item_codes,
        _concat(timestamps, np.int64),
        None if ratings is None else _concat(ratings, np.float32),
        user_ids,
        item_ids,
    )


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """Concatenate ``parts`` while releasing them, so the peak is one copy plus a chunk."""
    out = np.empty(sum(len(p) for p in parts), dtype)
    start = 0
    while parts:
        part = parts.pop(0)
        out[start : start + len(part)] = part
        start += len(part)
    return out


def user_time_key(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """int64 [n] key ordered like (user, timestamp): ``user * span + time offset``.

    When that product could overflow int64, times are replaced by their rank among the
    distinct timestamps (at most n of them, so the key fits for any n below 3e9).
    """
    if len(users) == 0:
        return np.zeros(0, np.int64)
    first, last = int(timestamps.min()), int(timestamps.max())
    key = users.astype(np.int64)  # built in place: one int64 array of temporary memory
    if (int(users.max()) + 1) * (last - first + 1) < 2**63:
        key *= last - first + 1
        key += timestamps
        key -= first
    else:
        _, rank = np.unique(timestamps, return_inverse=True)
        key *= int(rank.max()) + 1
        key += rank
    return key


def sort_by_user_time(columns: Interactions) -> None:
    """Order rows by (user, timestamp) in place; ties keep their input order (stable sort)."""
    columns.take(np.argsort(user_time_key(columns.users, columns.timestamps), kind="stable"))

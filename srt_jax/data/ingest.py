"""Prepare a sequence store from interaction logs: read, encode ids, filter, sort, write.

``prepare_store`` runs these steps:

1. **Read** every input with :mod:`srt_jax.data.readers`, chunk by chunk. Ids are
   dictionary-encoded per chunk and unified once at the end, so per interaction only compact
   numpy columns are held: int32 user and item codes, int64 timestamps and float32 ratings
   (20 bytes a row; with the sort's index and key the peak was 5.9 GiB for 100M rows).
2. **Number ids** in the order of the original ids: numerically when every id of a kind is a
   canonical integer (those ids stay int64), otherwise by code point (fixed-width unicode).
3. **Sort** rows by (user, timestamp) with a stable sort: equal timestamps keep input order
   (inputs in the order given, then line order), so the tie-break is the original file order.
4. **Filter**, each step off unless asked for, in this order:

   a. ``min_rating``: keep rows whose rating is at least this.
   b. ``duplicates`` of (user, item, timestamp): ``keep`` all (default), keep the ``first``
      in input order, or ``drop`` every copy.
   c. k-core: drop users with fewer than ``min_user_interactions`` rows and items with fewer
      than ``min_item_interactions``, repeated until nothing changes (a fixed point).
   d. ``max_users``: a random sample of that many of the remaining users, the first N of one
      permutation drawn from ``seed``. It comes last so that every sampled user keeps their
      whole filtered history (and so still meets ``min_user_interactions``) and samples of
      different sizes with one seed are nested, which data-size ladders need. The item k-core
      is not re-imposed on the sample; meta.json records this order.

5. **Write** the store atomically: users numbered 0..U-1 and items 1..I densely (original id
   order), with meta.json recording sources, detected layouts, filters, rows removed by each
   filter and bad-row counts. A failed prepare leaves nothing at the output path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from srt_jax.data.readers import BadRows, ReadOptions, Source, open_source
from srt_jax.data.store import SequenceStore, create_store
from srt_jax.errors import DataError
from srt_jax.progress import progress_bar

DUPLICATE_POLICIES = ("keep", "first", "drop")
FILTER_ORDER = ("min_rating", "duplicates", "k_core", "max_users")
TIE_BREAK = "input order (files in the order given, then line order)"
_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"
_WRITE_CHUNK = 1 << 22
_UNICODE_CHUNK = 1 << 20


@dataclass(frozen=True)
class Filters:
    """Which rows, users and items to keep; every filter is off by default.

    Attributes:
      min_rating: keep rows with rating >= this (the input must have ratings).
      duplicates: policy for rows with equal (user, item, timestamp): keep, first or drop.
      min_user_interactions, min_item_interactions: k-core thresholds (0 = off).
      max_users: sample this many users (None = all), with ``seed``.
      seed: seed of the user sample.
    """

    min_rating: float | None = None
    duplicates: str = "keep"
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    max_users: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duplicates not in DUPLICATE_POLICIES:
            raise DataError(
                f"duplicates policy {self.duplicates!r} is not one of "
                f"{', '.join(DUPLICATE_POLICIES)}"
            )
        for name in ("min_user_interactions", "min_item_interactions"):
            if getattr(self, name) < 0:
                raise DataError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.max_users is not None and self.max_users < 1:
            raise DataError(f"max_users must be >= 1; got {self.max_users}")


@dataclass
class PrepareResult:
    """What ``prepare_store`` did: the opened store, rows read, bad rows, rows removed."""

    store: SequenceStore
    rows_read: int
    bad_rows: BadRows
    removed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


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
    sources: Sequence[Source], bad: BadRows, *, strict: bool = False, progress: bool = True
) -> Interactions:
    """Read every source into compact columns; DataError on a bad row when ``strict``."""
    users, items = IdEncoder(), IdEncoder()
    timestamps: list[np.ndarray] = []
    ratings: list[np.ndarray] | None = [] if all(s.has_ratings for s in sources) else None
    for source in sources:
        with progress_bar(
            source.size, f"read {Path(source.path).name}", source.unit, disable=not progress
        ) as bar:
            for chunk, advance in source.chunks(bad):
                if strict and bad.count:
                    raise DataError(f"{bad.examples[0]} (--strict makes any bad row an error)")
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


def duplicate_rows(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, policy: str
) -> np.ndarray:
    """bool [n]: rows to remove under ``policy`` (rows sorted by user, time, input order).

    ``first`` marks every copy of a (user, item, timestamp) triple but the earliest in input
    order; ``drop`` marks every copy of a triple that occurs more than once.
    """
    n = len(users)
    if policy == "keep" or n == 0:
        return np.zeros(n, bool)
    new_run = np.ones(n, bool)
    new_run[1:] = (users[1:] != users[:-1]) | (timestamps[1:] != timestamps[:-1])
    run = np.cumsum(new_run)
    order = np.lexsort((items, run))  # stable: copies stay in input order
    same = (run[order][1:] == run[order][:-1]) & (items[order][1:] == items[order][:-1])
    repeated = np.zeros(n, bool)  # a later copy of the row before it in ``order``
    repeated[1:] = same
    remove = np.zeros(n, bool)
    if policy == "first":
        remove[order] = repeated
    else:
        copies = repeated.copy()
        copies[:-1] |= same  # also the first copy of a repeated triple
        remove[order] = copies
    return remove


def k_core(
    users: np.ndarray, items: np.ndarray, keep: np.ndarray, min_user: int, min_item: int
) -> int:
    """Clear ``keep`` for rows of users/items under the thresholds until a fixed point.

    Args:
      users, items: int [n] dense codes.
      keep: bool [n], updated in place.
      min_user, min_item: least number of kept rows a user / an item must have.

    Returns:
      the number of passes that removed rows.
    """
    passes = 0
    n_users, n_items = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        drop = keep & ((user_count[users] < min_user) | (item_count[items] < min_item))
        if not drop.any():
            return passes
        keep &= ~drop
        passes += 1


def sample_users(users: np.ndarray, keep: np.ndarray, max_users: int, seed: int) -> None:
    """Clear ``keep`` for rows whose user is not among ``max_users`` sampled kept users.

    The sample is the first ``max_users`` entries of a permutation (``seed``) of the kept
    users in user order, so for one seed a smaller sample is a subset of a larger one.
    """
    present = np.flatnonzero(np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1))
    chosen = np.zeros(int(users.max(initial=-1)) + 1, bool)
    chosen[np.random.default_rng(seed).permutation(present)[:max_users]] = True
    keep &= chosen[users]


def apply_filters(columns: Interactions, filters: Filters) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows to keep (bool [n], rows sorted by user and time) and what each filter removed."""
    keep = np.ones(len(columns.users), bool)
    removed: dict[str, int] = {}
    report: dict[str, Any] = {"removed": removed}

    def count(name: str, before: int) -> None:
        removed[name] = before - int(keep.sum())

    if filters.min_rating is not None:
        if columns.ratings is None:
            raise DataError("--min-rating needs an input with ratings")
        keep &= columns.ratings >= filters.min_rating
        count("min_rating", len(keep))
    if filters.duplicates != "keep":
        before = int(keep.sum())
        rows = np.flatnonzero(keep)
        remove = duplicate_rows(
            columns.users[rows], columns.items[rows], columns.timestamps[rows], filters.duplicates
        )
        keep[rows[remove]] = False
        count("duplicates", before)
    if filters.min_user_interactions or filters.min_item_interactions:
        before = int(keep.sum())
        report["k_core_passes"] = k_core(
            columns.users,
            columns.items,
            keep,
            filters.min_user_interactions,
            filters.min_item_interactions,
        )
        count("k_core", before)
    if filters.max_users is not None:
        before = int(keep.sum())
        sample_users(columns.users, keep, filters.max_users, filters.seed)
        count("max_users", before)
    return keep, report


def _dense(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(new code of each old code, or -1; the old codes present, ascending) for ``codes``."""
    present = np.flatnonzero(np.bincount(codes, minlength=size))
    new = np.full(size, -1, np.int32)
    new[present] = np.arange(len(present), dtype=np.int32)
    return new, present


def write_columns(
    out: str | Path, columns: Interactions, meta: dict[str, Any], *, overwrite: bool, progress: bool
) -> SequenceStore:
    """Write sorted, filtered columns as a store (users 0..U-1, items 1..I, densely)."""
    user_new, user_present = _dense(columns.users, len(columns.user_ids))
    item_new, item_present = _dense(columns.items, len(columns.item_ids))
    users = user_new[columns.users]
    offsets = np.zeros(len(user_present) + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=len(user_present)), out=offsets[1:])
    sentinel = np.array([-1 if columns.item_ids.dtype.kind == "i" else ""], columns.item_ids.dtype)
    n = len(columns.users)
    with (
        create_store(
            out,
            len(user_present),
            n,
            len(item_present),
            meta,
            with_ratings=columns.ratings is not None,
            overwrite=overwrite,
        ) as arrays,
        progress_bar(n, "write store", "rows", disable=not progress) as bar,
    ):
        for start in range(0, n, _WRITE_CHUNK):
            stop = min(n, start + _WRITE_CHUNK)
            arrays.items[start:stop] = item_new[columns.items[start:stop]] + 1
            arrays.timestamps[start:stop] = columns.timestamps[start:stop]
            if arrays.ratings is not None:
                arrays.ratings[start:stop] = columns.ratings[start:stop]
            bar.update(stop - start)
        arrays.offsets[:] = offsets
        arrays.user_ids = columns.user_ids[user_present]
        arrays.item_ids = np.concatenate([sentinel, columns.item_ids[item_present]])
    return SequenceStore(out)


def prepare_store(
    inputs: str | Path | Sequence[str | Path],
    fmt: str,
    out: str | Path,
    *,
    read_options: ReadOptions | None = None,
    filters: Filters | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """Read interaction logs of format ``fmt`` and write a sequence store at ``out``.

    Args:
      inputs: one input or several of the same format, read in this order (which is also
        the tie-break order of equal timestamps).
      fmt: one of ``srt_jax.data.readers.FORMATS``.
      out: the store directory to create.
      read_options: column names, separator and TFDS options of the inputs.
      filters: filters to apply (all off by default).
      strict: any bad row is an error instead of being skipped and counted.
      overwrite: replace an existing store at ``out``.
      progress: show progress bars.

    Returns:
      the prepared store, rows read, bad rows and rows removed by each filter.
    """
    started = time.perf_counter()
    filters = filters or Filters()
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not paths:
        raise DataError("no input given")
    if Path(out).exists() and not overwrite:
        raise DataError(f"{out} already exists (pass --overwrite to replace it)")
    sources = [open_source(path, fmt, read_options) for path in paths]
    bad = BadRows()
    columns = read_columns(sources, bad, strict=strict, progress=progress)
    rows_read = len(columns.users)
    with progress_bar(2, "sort and filter", "steps", disable=not progress) as bar:
        sort_by_user_time(columns)
        bar.update(1)
        keep, report = apply_filters(columns, filters)
        if not keep.all():
            columns.take(np.flatnonzero(keep))
        bar.update(1)
    if len(columns.users) == 0:
        raise DataError(
            f"no interactions to store: {rows_read} rows read, {bad.count} bad, "
            f"removed by filters: {report['removed']}"
        )
    time_units = {source.time_unit for source in sources}
    meta = {
        "source": {
            "files": [str(Path(s.path).resolve()) if fmt != "tfds" else s.path for s in sources],
            "format": fmt,
            "layouts": [source.layout for source in sources],
            "rows_read": rows_read,
        },
        "time_unit": time_units.pop() if len(time_units) == 1 else None,
        "tie_break": TIE_BREAK,
        "filters": {**asdict(filters), "order": list(FILTER_ORDER), **report},
        "bad_rows": bad.to_meta(),
    }
    store = write_columns(out, columns, meta, overwrite=overwrite, progress=progress)
    return PrepareResult(store, rows_read, bad, report["removed"], time.perf_counter() - started)

"""Prepare a sequence store from interaction logs: read, encode ids, filter, sort, write.

``prepare_store`` runs these steps (reading, numbering and sorting are in
:mod:`srt_jax.data.interactions`, the filters in :mod:`srt_jax.data.filters`):

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

5. **Item features** (``item_features``, optional): a side table of item attributes is read
   first (so a bad one fails before the long read of the log), tokenised per column, and
   stored beside the interactions for the items the log kept
   (:mod:`srt_jax.data.item_features`); items without a row get the "no features" token.

6. **Write** the store atomically: users numbered 0..n_users-1 and items 1..n_items
   densely (original id order), with meta.json recording sources, detected layouts,
   filters, rows removed by each filter and bad-row counts. A failed prepare leaves nothing
   at the output path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srt_jax.data.filters import (
    DUPLICATE_POLICIES,
    FILTER_ORDER,
    Filters,
    apply_filters,
    duplicate_rows,
    k_core,
    sample_users,
)
from srt_jax.data.interactions import (
    IdEncoder,
    Interactions,
    read_columns,
    sort_by_user_time,
    user_time_key,
)
from srt_jax.data.item_features import features_for_items
from srt_jax.data.readers import (
    BadRows,
    FeatureColumn,
    ItemTable,
    ReadOptions,
    open_source,
    read_item_table,
)
from srt_jax.data.store import SequenceStore, create_store
from srt_jax.errors import DataError
from srt_jax.progress import progress_bar

__all__ = [
    "DUPLICATE_POLICIES",
    "FILTER_ORDER",
    "TIE_BREAK",
    "FeatureInput",
    "Filters",
    "IdEncoder",
    "Interactions",
    "PrepareResult",
    "apply_filters",
    "duplicate_rows",
    "k_core",
    "prepare_store",
    "read_columns",
    "sample_users",
    "sort_by_user_time",
    "user_time_key",
    "write_columns",
]

TIE_BREAK = "input order (files in the order given, then line order)"
_WRITE_CHUNK = 1 << 22


@dataclass(frozen=True)
class FeatureInput:
    """A side table of item attributes to store as item features.

    Attributes:
      path: the file; format: one of ``srt_jax.data.readers.FEATURE_FORMATS``.
      columns: the attribute columns and how each becomes tokens (None: the format's
        defaults); item_col: the item id column (None: the format's default).
      min_token_items: keep only the tokens at least this many of the log's items carry.
    """

    path: str | Path
    format: str
    columns: tuple[FeatureColumn, ...] | None = None
    item_col: str | None = None
    min_token_items: int = 1


@dataclass
class PrepareResult:
    """What ``prepare_store`` did: the opened store, rows read, bad rows, rows removed, and
    the item features' bad rows (None without item features)."""

    store: SequenceStore
    rows_read: int
    bad_rows: BadRows
    removed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    feature_bad_rows: BadRows | None = None


def _dense(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(new code of each old code, or -1; the old codes present, ascending) for ``codes``."""
    present = np.flatnonzero(np.bincount(codes, minlength=size))
    new = np.full(size, -1, np.int32)
    new[present] = np.arange(len(present), dtype=np.int32)
    return new, present


def write_columns(
    out: str | Path,
    columns: Interactions,
    meta: dict[str, Any],
    *,
    overwrite: bool,
    progress: bool,
    item_table: ItemTable | None = None,
    min_token_items: int = 1,
) -> SequenceStore:
    """Write sorted, filtered columns as a store (users 0..n_users-1, items 1..n_items,
    densely), with the item features of ``item_table`` when given (tokens on fewer than
    ``min_token_items`` items dropped)."""
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
        if item_table is not None:
            features, counts = features_for_items(
                arrays.item_ids,
                item_table.item_ids,
                item_table.tokens,
                min_token_items=min_token_items,
            )
            arrays.item_features = features
            arrays.item_features_meta = {
                "source": {
                    "file": str(Path(item_table.path).resolve()),
                    "layout": item_table.layout,
                    "columns": [str(column) for column in item_table.columns],
                    "rows_read": item_table.rows_read,
                    "merged_rows": item_table.merged_rows,
                    "min_token_items": min_token_items,
                },
                **counts,
                "bad_rows": item_table.bad_rows.to_meta(),
            }
    return SequenceStore(out)


def prepare_store(
    inputs: str | Path | Sequence[str | Path],
    fmt: str,
    out: str | Path,
    *,
    read_options: ReadOptions | None = None,
    filters: Filters | None = None,
    skip_bad_rows: bool = False,
    item_features: FeatureInput | None = None,
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
      skip_bad_rows: skip bad rows (of the log and of the item features) and count them
        (with examples) in the result; by default the first bad row is an error naming its
        file and line.
      item_features: a side table of item attributes to store as item features.
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
    item_table = None
    if item_features is not None:
        item_table = read_item_table(
            item_features.path,
            item_features.format,
            columns=item_features.columns,
            item_col=item_features.item_col,
            skip_bad_rows=skip_bad_rows,
        )
    bad = BadRows()
    columns = read_columns(sources, bad, skip_bad_rows=skip_bad_rows, progress=progress)
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
            f"{', '.join(map(str, paths))}: no interactions to store: {rows_read} rows read, "
            f"{bad.count} bad, removed by filters: {report['removed']}"
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
    store = write_columns(
        out,
        columns,
        meta,
        overwrite=overwrite,
        progress=progress,
        item_table=item_table,
        min_token_items=1 if item_features is None else item_features.min_token_items,
    )
    return PrepareResult(
        store,
        rows_read,
        bad,
        report["removed"],
        time.perf_counter() - started,
        None if item_table is None else item_table.bad_rows,
    )

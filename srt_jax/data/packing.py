"""Packed windows: several windows of one batch in one row of length L, with segment ids.

A sampler's batch holds ``B`` left-padded windows; a window of ``n`` real inputs leaves
``L - n`` padding positions that the model computes for nothing (27% of the positions of
MovieLens-100K at L = 200). :func:`pack_batch` moves each window's ``n`` real columns, as one
block, into the first of ``R`` rows with room for them (first fit, longest window first), so
the same targets are trained on ``R < B`` rows. Each position records

- its **segment**: ``k >= 1`` for the k-th window placed in its row, 0 on padding; attention
  (:func:`srt_jax.models.layers.attention_bias`) never crosses segments;
- its **slot**: the column it had in its own left-padded window (``L - n + j`` for the j-th
  real input), which the model uses as its position, so every position computes exactly what
  it computed unpacked (the equivalence ``tests/test_packing.py`` checks target by target).

Nothing else changes: targets, mask, ratings and history positions move with their columns,
so a target is neither lost nor duplicated and the loss (a sum over counted targets divided
by their count) is the same. Unpacked batches of a packing run carry segment 1 on real
inputs and slots ``0..L-1`` (:func:`with_segments`), which gives the model exactly its
unpacked computation.

The number of rows ``R`` is fixed for a run (one compiled step shape): :func:`rows_for`
packs a sample of the run's first batches and picks the ``R`` with the fewest rows computed
on average. A batch that does not fit in ``R`` rows is trained unpacked (a second compiled
shape). Where ``R`` would be the batch size (windows that fill their rows, e.g.
MovieLens-100K at L = 50) the run is not packed at all: the segment mask would cost time
and save no row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from srt_jax.data.windows import Batch

PACKING_SAMPLE = 64
"""Batches packed to choose the row count of a run (:func:`rows_for`)."""


def window_lengths(batch: Batch) -> np.ndarray:
    """int64 [B]: real (non-padding) inputs of each left-padded row."""
    return np.count_nonzero(batch.inputs, axis=1)


def first_fit(lengths: np.ndarray, row_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit-decreasing placement of blocks of ``lengths`` into rows of ``row_len``.

    Returns ``(row [B], column [B], rows used)``: each block's row and first column (-1 for
    an empty block, which is not placed). Ties in length keep the input order, so the
    placement is a pure function of ``lengths``.
    """
    order = np.argsort(-lengths, kind="stable")
    row = np.full(len(lengths), -1, np.int64)
    column = np.full(len(lengths), -1, np.int64)
    filled: list[int] = []
    for i in order:
        n = int(lengths[i])
        if n == 0:
            continue
        for r, used in enumerate(filled):
            if used + n <= row_len:
                row[i], column[i] = r, used
                filled[r] += n
                break
        else:
            row[i], column[i] = len(filled), 0
            filled.append(n)
    return row, column, len(filled)


def with_segments(batch: Batch) -> Batch:
    """An unpacked batch as a packing run's step reads it: segment 1 on each real input (0 on
    padding) and slots 0..L-1."""
    B, L = batch.inputs.shape
    return dataclasses.replace(
        batch,
        segments=(batch.inputs != 0).astype(np.int32),
        slots=np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy(),
    )


def pack_batch(batch: Batch, rows: int) -> Batch | None:
    """``batch``'s windows packed into ``rows`` rows (see the module docstring), or None
    when they need more rows than that.

    The packed batch's ``user`` is ``[rows, L]`` (int64, the user of each position, -1 on
    padding), its ``segments`` and ``slots`` are ``[rows, L]`` int32.
    """
    B, L = batch.inputs.shape
    lengths = window_lengths(batch)
    row, column, used = first_fit(lengths, L)
    if used > rows:
        return None
    placed = np.flatnonzero(row >= 0)
    n = lengths[placed]
    # source (b, L - n + j) -> destination (row, column + j) for j < n, all windows at once
    j = np.arange(L)
    real = j[None, :] < n[:, None]  # [P, L]
    src_b = np.broadcast_to(placed[:, None], real.shape)[real]
    src_c = (L - n[:, None] + j[None, :])[real]
    dst_r = np.broadcast_to(row[placed][:, None], real.shape)[real]
    dst_c = (column[placed][:, None] + j[None, :])[real]

    def placed_at(values: np.ndarray, fill: int | float, dtype: np.dtype) -> np.ndarray:
        """``[rows, L]`` of ``values`` (one per moved position) at their destinations."""
        out = np.full((rows, L), fill, dtype)
        out[dst_r, dst_c] = values
        return out

    def moved(x: np.ndarray, fill: int | float) -> np.ndarray:
        return placed_at(x[src_b, src_c], fill, x.dtype)

    segment_of_window = np.zeros(B, np.int32)
    for r in range(used):  # k-th window placed in a row (left to right) -> segment k
        in_row = placed[row[placed] == r]
        segment_of_window[in_row[np.argsort(column[in_row])]] = np.arange(1, len(in_row) + 1)
    return Batch(
        inputs=moved(batch.inputs, 0),
        targets=moved(batch.targets, 0),
        mask=moved(batch.mask, False),
        positions=moved(batch.positions, -1),
        user=placed_at(batch.user[src_b], -1, np.int64),
        ratings=None if batch.ratings is None else moved(batch.ratings, 0.0),
        segments=placed_at(segment_of_window[src_b], 0, np.int32),
        slots=placed_at(src_c, 0, np.int32),
    )


def packed_or_not(batch: Batch, rows: int) -> Batch:
    """``batch`` packed into ``rows`` rows, or unpacked with segments when it does not fit."""
    packed = pack_batch(batch, rows)
    return with_segments(batch) if packed is None else packed


def rows_for(batch_at: Callable[[int], Batch], batch_size: int, multiple: int = 1) -> int:
    """Rows of a run's packed batches, chosen on its first :data:`PACKING_SAMPLE` batches:
    the count ``R`` (a multiple of ``multiple``, the data-parallel devices, at most
    ``batch_size``) with the fewest rows computed on average, a batch that needs more than
    ``R`` rows costing ``batch_size`` (it is trained unpacked)."""
    needed = np.array(
        [
            first_fit(window_lengths(batch), batch.inputs.shape[1])[2]
            for batch in map(batch_at, range(PACKING_SAMPLE))
        ]
    )
    candidates = np.arange(multiple, batch_size + 1, multiple)
    if len(candidates) == 0 or candidates[-1] != batch_size:
        candidates = np.append(candidates, batch_size)
    candidates = candidates[::-1]  # on a tie, the most rows: fewer batches unpacked
    cost = [np.mean(np.where(needed <= r, r, batch_size)) for r in candidates]
    return int(candidates[int(np.argmin(cost))])


def padding_share(batch: Batch) -> float:
    """Share of the batch's positions that hold no real input (0 to 1)."""
    return 1.0 - np.count_nonzero(batch.inputs) / batch.inputs.size

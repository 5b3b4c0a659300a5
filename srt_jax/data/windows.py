"""Windows and the Batch contract: how a window of a store segment becomes a training row.

A window of one segment ``[s, e)`` (see :mod:`srt_jax.data.splits`) is identified by its end
``f`` (exclusive): it holds the ``L + 1`` items ``items[max(s, f - L - 1):f]``, left-padded
with 0 to ``L + 1``; ``inputs`` are its first ``L`` entries, ``targets`` its last ``L``. Every
batch is built with numpy array operations only: an index matrix ``[B, L + 1]`` from the
window ends, one fancy-index gather from the (memory-mapped) items, then masks.

The stride windows of a segment (:class:`StrideWindows`) end at ``f = e, e - S, e - 2S, ...``
while the window has a target (the oldest one is left-padded); with ``S = L`` each target
position is in exactly one window. With ``S < L`` windows overlap, and masking the overlap
counts only each window's newest ``S`` targets (all of them for the oldest window of a
segment), so that every target counts exactly once, in the window where it has the most
context (at least ``L - S + 1`` items, or its whole history). :func:`iter_eval_batches`
uses them to enumerate every target position of held-out segments once, in order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from srt_jax.data.splits import Segments


@dataclass(frozen=True)
class Batch:
    """A batch of windows (numpy). ``B`` rows, ``L`` = max_len.

    Attributes:
      inputs: int32 [B, L] items w[0..L-1] of each window, left-padded with 0.
      targets: int32 [B, L] items w[1..L]; 0 where no target counts.
      mask: bool [B, L] true where a target counts (equals ``targets != 0``).
      positions: int32 [B, L] index of each input item within its segment (its position in
        the user's history when the segment starts there, as all splits' do); -1 on padding.
      user: int64 [B] user of each row; -1 for an empty row. In a packed batch, int64
        [B, L]: the user of each position (-1 on padding).
      ratings: float32 [B, L] the targets' ratings (0 where no target counts), when the
        sampler was given the store's ratings; else None.
      segments: int32 [B, L] with ``data.pack``: which window of its row each position
        belongs to (1, 2, ...; 0 on padding); attention never crosses segments. Else None.
      slots: int32 [B, L] with ``data.pack``: the column each position had in its own
        left-padded window (the model's position). Else None. See
        :mod:`srt_jax.data.packing`.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    user: np.ndarray
    ratings: np.ndarray | None = None
    segments: np.ndarray | None = None
    slots: np.ndarray | None = None

    @functools.cached_property
    def n_targets(self) -> int:
        """Number of counted targets in the batch (counted once; the loop, the progress bar
        and the token budget all read it)."""
        return int(np.count_nonzero(self.mask))

    def truncated(self, n: int) -> Batch:
        """This batch keeping only its first ``n`` counted targets (row-major order)."""
        keep = self.mask & (np.cumsum(self.mask.ravel()).reshape(self.mask.shape) <= n)
        ratings = None if self.ratings is None else np.where(keep, self.ratings, 0.0)
        return dataclasses.replace(
            self, targets=np.where(keep, self.targets, 0), mask=keep, ratings=ratings
        )


def window_view(items: np.ndarray, max_len: int) -> np.ndarray | None:
    """Read-only [n - L, L + 1] view whose row r is ``items[r:r + L + 1]`` (no copy); None
    when ``items`` is shorter than a window."""
    if len(items) < max_len + 1:
        return None
    return np.lib.stride_tricks.sliding_window_view(items, max_len + 1)


def gather_windows(
    items: np.ndarray,
    lower: np.ndarray,
    ends: np.ndarray,
    user: np.ndarray,
    max_len: int,
    counted: np.ndarray | None = None,
    *,
    view: np.ndarray | None = None,
    ratings: np.ndarray | None = None,
) -> Batch:
    """Batch of the windows ``items[max(lower, end - L - 1):end]``, left-padded.

    Args:
      items: int32 [n_interactions] (a store's items; may be a memmap).
      lower: int64 [B] first store position a window may use (its segment's start).
      ends: int64 [B] exclusive end of each window; ``end <= lower`` gives an empty row.
      user: int64 [B] user of each row.
      max_len: L.
      counted: int64 [B] or None: count only each window's last ``counted`` targets.
      view: ``window_view(items, max_len)`` when the caller keeps one (saves building it).
      ratings: float32 [n_interactions] (a store's ratings) to carry the targets' ratings
        in the batch, or None.
    """
    first = ends - max_len - 1
    pad = max_len + 1 - np.clip(ends - lower, 0, max_len + 1)  # [B] left padding slots
    if view is None:
        view = window_view(items, max_len)
    if view is not None and np.all(first >= 0):
        window = view[first]  # one gather of B contiguous rows
    else:
        window = items[np.maximum(first[:, None] + np.arange(max_len + 1), 0)]
    padded = np.flatnonzero(pad)
    slot = np.arange(max_len + 1, dtype=np.int32)
    if len(padded):
        window[padded] *= slot >= pad[padded, None]
    mask = slot[:-1] >= pad[:, None]  # a target counts where its input is a real item
    if counted is not None:
        mask &= slot[:-1] >= max_len - counted[:, None]
    positions = (first - lower).astype(np.int32)[:, None] + slot[:-1]
    np.maximum(positions, -1, out=positions)
    target_ratings = None
    if ratings is not None:  # target slot j of a window is store position end - L + j
        at = np.maximum(ends[:, None] - max_len + slot[:-1], 0)
        target_ratings = np.where(mask, np.asarray(ratings[at], np.float32), np.float32(0))
    return Batch(
        inputs=window[:, :-1],
        targets=window[:, 1:] * mask,
        mask=mask,
        positions=positions,
        user=user,
        ratings=target_ratings,
    )


class StrideWindows:
    """The stride windows of segments, numbered 0.. in segment order, newest first.

    Window ``r`` of segment ``j`` (``r = 0`` the newest) ends at ``end[j] - r * stride``;
    segment ``j`` has ``(n_targets[j] - 1) // stride + 1`` windows (each with a target).
    """

    def __init__(
        self, end: np.ndarray, n_targets: np.ndarray, stride: int, max_len: int, mask_overlap: bool
    ) -> None:
        self.end, self.n_targets = end, n_targets
        self.stride, self.max_len = stride, max_len
        self.masks_overlap = mask_overlap and stride < max_len
        self.per_segment = (n_targets - 1) // stride + 1
        self.cum = np.concatenate([[0], np.cumsum(self.per_segment)])
        self.n_windows = int(self.cum[-1])

    def locate(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(segment [m], end [m], counted targets [m] or None) of global window numbers."""
        seg = np.searchsorted(self.cum, window, side="right") - 1
        rank = window - self.cum[seg]
        counted = None
        if self.masks_overlap:
            oldest = rank == self.per_segment[seg] - 1
            counted = np.where(oldest, self.max_len, self.stride)
        return seg, self.end[seg] - rank * self.stride, counted

    def epoch_tokens(self) -> int:
        """Counted targets of all windows: sum over windows r of min(L, n_targets - r S)
        (every target once when overlaps are masked or S = L)."""
        m, k, s, length = self.n_targets, self.per_segment, self.stride, self.max_len
        if self.masks_overlap or s == length:
            return int(m.sum())
        full = np.where(m >= length, (m - length) // s + 1, 0)
        partial = m * (k - full) - s * (full + k - 1) * (k - full) // 2
        return int(np.sum(full * length + partial))


def iter_eval_batches(
    items: np.ndarray,
    segments: Segments,
    *,
    max_len: int,
    batch_size: int,
    stride: int | None = None,
) -> Iterator[Batch]:
    """Every target position of ``segments`` exactly once, in order, with up to L of context.

    Windows are the stride windows (``stride`` None: L) of each segment with overlapping
    targets masked, so a target has at least ``L - stride + 1`` items of context (all of its
    history when shorter); ``stride=1`` gives every target its full L. The last batch is
    padded with empty rows (mask all false, user -1) so every batch has ``batch_size`` rows.
    """
    keep = segments.lengths >= 2
    start, end, user = segments.start[keep], segments.end[keep], segments.user[keep]
    windows = StrideWindows(
        end, end - start - 1, max_len if stride is None else stride, max_len, mask_overlap=True
    )
    for first in range(0, windows.n_windows, batch_size):
        window = np.arange(first, min(first + batch_size, windows.n_windows))
        seg, ends, counted = windows.locate(window)
        pad = np.zeros(batch_size - len(window), np.int64)
        yield gather_windows(
            items,
            np.concatenate([start[seg], pad]),
            np.concatenate([ends, pad]),
            np.concatenate([user[seg], pad - 1]),
            max_len,
            None if counted is None else np.concatenate([counted, pad]),
        )

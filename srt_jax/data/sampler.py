"""Vectorised training windows: batches of fixed-length windows drawn from store segments.

A window of one segment ``[s, e)`` (see :mod:`srt_jax.data.splits`) is identified by its end
``f`` (exclusive): it holds the ``L + 1`` items ``items[max(s, f - L - 1):f]``, left-padded
with 0 to ``L + 1``; ``inputs`` are its first ``L`` entries, ``targets`` its last ``L``. Every
batch is built with numpy array operations only: an index matrix ``[B, L + 1]`` from the
window ends, one fancy-index gather from the (memory-mapped) items, then masks.

Modes (``data.sampler``), each drawing ``B`` windows per batch:

- ``recent``: the last window of a segment (``f = e``).
- ``sliding``: a full window whose start is uniform over the segment, i.e. ``f = e - age``
  with ``age`` uniform in ``0..A``, ``A = max(0, n - L - 1)`` (``n`` the segment length);
  a segment shorter than ``L + 2`` gives its whole (left-padded) history.
- ``recency_weighted``: as ``sliding`` but ``P(age) ∝ 2 ** (-age / half_life)`` (half-life
  in interactions), truncated to ``0..A``.
- ``mixed``: ``sliding`` or ``recent`` per batch. ``mixed_by="batch"``: batch ``k`` is sliding
  with probability ``p = mixed_sliding_fraction``, decided from ``(seed, k)``.
  ``mixed_by="epoch"`` (the Netflix recipe): an epoch is ``tokens_per_epoch`` target tokens
  (every target position of the segments once, as ``train.epochs`` counts them); the first
  fraction ``p`` of the run's epochs, i.e. the first ``p * token_budget`` tokens, is sliding
  and the rest recent. The switch is at step ``ceil(p * token_budget / tokens_per_batch)``
  (the exact expected tokens per batch, the same for both modes), so that batch ``k`` stays
  a function of ``(seed, k)``.
- ``stride``: every window at stride ``S``, ends ``f = e, e - S, e - 2S, ...`` while the
  window has a target (the oldest one is left-padded); with ``S = L`` each target position
  is in exactly one window. An epoch enumerates all windows of all segments in a shuffled
  order (one permutation per epoch from ``(seed, epoch)``); batch ``k`` takes the windows at
  global slots ``kB .. kB + B - 1`` (a batch may straddle epochs). With ``S < L`` windows
  overlap; ``mask_overlap=True`` counts only each window's newest ``S`` targets (all of them
  for the oldest window of a segment), so that every target counts exactly once per epoch,
  in the window where it has the most context (at least ``L - S + 1`` items, or its whole
  history).

In the random modes the segment of each window is drawn with replacement, uniformly
(``user_weighting="uniform"``) or in proportion to its target positions ``n - 1``
(``"length"``). ``stride`` visits users in proportion to their length by construction and
accepts only ``"uniform"``.

Determinism: batch ``k`` is a pure function of ``(seed, k)`` (random streams
``np.random.default_rng([seed, stream, k])``), so a resumed run sees the same batches. A
``token_budget`` ends iteration after exactly that many targets: the last batch masks its
excess (and zeroes those targets). :meth:`WindowSampler.iter_batches` prefetches batches in a
background thread. :func:`iter_eval_batches` enumerates every target position of held-out
segments once, in order, each with up to ``L`` items of context.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from srt_jax.config import DataConfig
from srt_jax.data.splits import Segments
from srt_jax.errors import ConfigError

Mode = Literal["recent", "sliding", "stride", "mixed", "recency_weighted"]
MODES = ("recent", "sliding", "stride", "mixed", "recency_weighted")
_STREAM_BATCH, _STREAM_MIX, _STREAM_EPOCH = 1, 2, 3


@dataclass(frozen=True)
class Batch:
    """A batch of windows (numpy). ``B`` rows, ``L`` = max_len.

    Attributes:
      inputs: int32 [B, L] items w[0..L-1] of each window, left-padded with 0.
      targets: int32 [B, L] items w[1..L]; 0 where no target counts.
      mask: bool [B, L] true where a target counts (equals ``targets != 0``).
      positions: int32 [B, L] index of each input item within its segment (its position in
        the user's history when the segment starts there, as all splits' do); -1 on padding.
      user: int64 [B] user of each row; -1 for an empty row.
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    user: np.ndarray

    @functools.cached_property
    def n_targets(self) -> int:
        """Number of counted targets in the batch (counted once; the loop, the progress bar
        and the token budget all read it)."""
        return int(np.count_nonzero(self.mask))

    def truncated(self, n: int) -> Batch:
        """This batch keeping only its first ``n`` counted targets (row-major order)."""
        keep = self.mask & (np.cumsum(self.mask.ravel()).reshape(self.mask.shape) <= n)
        return Batch(self.inputs, np.where(keep, self.targets, 0), keep, self.positions, self.user)


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
    return Batch(
        inputs=window[:, :-1],
        targets=window[:, 1:] * mask,
        mask=mask,
        positions=positions,
        user=user,
    )


class WindowSampler:
    """Batches of training windows from segments of a store (see the module docstring).

    Args:
      items: int32 [n_interactions] store items (memmap is fine; never loaded whole).
      segments: training segments (segments with fewer than 2 items are dropped).
      batch_size: B, windows per batch.
      max_len: L, window length (inputs and targets).
      mode: one of MODES.
      seed: the data seed; batch k is a pure function of (seed, k).
      stride: S for ``stride`` mode (None: L).
      mask_overlap: ``stride`` mode: count each target once per epoch when S < L.
      mixed_by, mixed_sliding_fraction: the ``mixed`` schedule.
      recency_half_life: ``recency_weighted`` half-life in interactions.
      user_weighting: ``uniform`` or ``length`` (random modes).
      token_budget: stop after exactly this many targets (None: iterate forever).
      prefetch: batches prepared ahead by a background thread (0: none).
    """

    def __init__(
        self,
        items: np.ndarray,
        segments: Segments,
        *,
        batch_size: int,
        max_len: int,
        mode: Mode = "sliding",
        seed: int = 0,
        stride: int | None = None,
        mask_overlap: bool = False,
        mixed_by: Literal["batch", "epoch"] = "batch",
        mixed_sliding_fraction: float = 0.5,
        recency_half_life: float = 50.0,
        user_weighting: Literal["uniform", "length"] = "uniform",
        token_budget: int | None = None,
        prefetch: int = 2,
    ) -> None:
        keep = segments.lengths >= 2
        self.items = items
        self.start = np.asarray(segments.start[keep], np.int64)
        self.end = np.asarray(segments.end[keep], np.int64)
        self.user = np.asarray(segments.user[keep], np.int64)
        self.batch_size, self.max_len, self.mode, self.seed = batch_size, max_len, mode, seed
        self.stride = max_len if stride is None else stride
        self.mask_overlap = mask_overlap
        self.mixed_by, self.mixed_sliding_fraction = mixed_by, mixed_sliding_fraction
        self.recency_half_life = recency_half_life
        self.user_weighting = user_weighting
        self.token_budget = token_budget
        self.prefetch = prefetch
        self._check()
        targets = self.end - self.start - 1
        self._max_age = np.maximum(0, targets - max_len)
        self._window_targets = np.minimum(targets, max_len)
        self._weight_cdf = np.cumsum(targets) if user_weighting == "length" else None
        self._stride = _StrideWindows(self.end, targets, self.stride, max_len, mask_overlap)
        self._view = window_view(items, max_len)
        self._permutations: dict[int, np.ndarray] = {}
        if mode == "mixed" and mixed_by == "epoch":
            sliding_tokens = mixed_sliding_fraction * token_budget
            self._switch_step = math.ceil(sliding_tokens / self.expected_tokens_per_batch())

    @classmethod
    def from_config(
        cls,
        items: np.ndarray,
        segments: Segments,
        data_cfg: DataConfig,
        batch_size: int,
        seed: int,
        token_budget: int | None = None,
    ) -> WindowSampler:
        """A sampler set by the ``data`` section (sampler, stride, mixed_*, recency_half_life,
        user_weighting, prefetch, max_len) of a run config."""
        return cls(
            items,
            segments,
            batch_size=batch_size,
            max_len=data_cfg.max_len,
            mode=data_cfg.sampler,
            seed=seed,
            stride=data_cfg.stride,
            mixed_by=data_cfg.mixed_by,
            mixed_sliding_fraction=data_cfg.mixed_sliding_fraction,
            recency_half_life=data_cfg.recency_half_life,
            user_weighting=data_cfg.user_weighting,
            token_budget=token_budget,
            prefetch=data_cfg.prefetch,
        )

    def _check(self) -> None:
        def bad(key: str, value: Any, expected: str) -> ConfigError:
            return ConfigError(f"{key} = {value!r} is invalid: expected {expected}", key=key)

        if self.mode not in MODES:
            raise bad("data.sampler", self.mode, f"one of {', '.join(MODES)}")
        if self.batch_size < 1:
            raise bad("train.batch_size", self.batch_size, "an integer >= 1")
        if self.max_len < 1:
            raise bad("data.max_len", self.max_len, "an integer >= 1")
        if self.stride < 1:
            raise bad("data.stride", self.stride, "null (= max_len) or an integer >= 1")
        if self.user_weighting not in ("uniform", "length"):
            raise bad("data.user_weighting", self.user_weighting, "'uniform' or 'length'")
        if self.mode == "stride" and self.user_weighting != "uniform":
            raise bad(
                "data.user_weighting",
                self.user_weighting,
                "'uniform' with the stride sampler (it visits every window, so users "
                "already count in proportion to their length)",
            )
        if self.mixed_by not in ("batch", "epoch"):
            raise bad("data.mixed_by", self.mixed_by, "'batch' or 'epoch'")
        if not 0.0 <= self.mixed_sliding_fraction <= 1.0:
            raise bad(
                "data.mixed_sliding_fraction", self.mixed_sliding_fraction, "a fraction in [0, 1]"
            )
        if self.mode == "mixed" and self.mixed_by == "epoch" and self.token_budget is None:
            raise ConfigError(
                "data.mixed_by = 'epoch' needs a token budget (train.tokens or "
                "train.epochs) to place the switch from sliding to recent",
                key="data.mixed_by",
            )
        if not self.recency_half_life > 0:
            raise bad("data.recency_half_life", self.recency_half_life, "a positive number")
        if self.token_budget is not None and self.token_budget < 1:
            raise bad("train.tokens", self.token_budget, "an integer >= 1")
        if self.prefetch < 0:
            raise bad("data.prefetch", self.prefetch, "an integer >= 0")
        if len(self.start) == 0:
            raise ConfigError(
                "no training segment has 2 or more items: nothing to train on", key="data"
            )

    # ------------------------------------------------------------------ sizes

    @property
    def tokens_per_epoch(self) -> int:
        """Target positions of all segments, sum(n - 1): one epoch as train.epochs counts."""
        return int(np.sum(self.end - self.start - 1))

    @property
    def windows_per_epoch(self) -> int:
        """Stride windows of all segments (the length of a ``stride`` epoch)."""
        return self._stride.n_windows

    def expected_tokens_per_batch(self) -> float:
        """Exact expectation of the counted targets of one (untruncated) batch."""
        if self.mode == "stride":
            return self.batch_size * self._stride.epoch_tokens() / self._stride.n_windows
        targets = self._window_targets
        if self._weight_cdf is None:
            return self.batch_size * float(targets.mean())
        weights = self.end - self.start - 1
        return self.batch_size * float(np.dot(weights, targets)) / float(weights.sum())

    # ------------------------------------------------------------------ batches

    def mode_at(self, step: int) -> str:
        """The window mode of batch ``step`` (resolves ``mixed``)."""
        if self.mode != "mixed":
            return self.mode
        p = self.mixed_sliding_fraction
        if self.mixed_by == "batch":
            sliding = np.random.default_rng([self.seed, _STREAM_MIX, step]).random() < p
        else:
            sliding = step < self._switch_step
        return "sliding" if sliding else "recent"

    def _plan(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(segment index [B], window end [B], counted targets [B] or None) of batch step."""
        mode = self.mode_at(step)
        if mode == "stride":
            return self._stride_plan(step)
        rng = np.random.default_rng([self.seed, _STREAM_BATCH, step])
        b = self.batch_size
        if self._weight_cdf is None:
            seg = rng.integers(0, len(self.start), size=b)
        else:
            seg = np.searchsorted(
                self._weight_cdf, rng.integers(0, self._weight_cdf[-1], b), side="right"
            )
        max_age = self._max_age[seg]
        if mode == "recent":
            age = np.zeros(b, np.int64)
        elif mode == "sliding":
            age = (rng.random(b) * (max_age + 1)).astype(np.int64)
        else:
            age = _truncated_geometric(rng.random(b), max_age, self.recency_half_life)
        return seg, self.end[seg] - age, None

    def _stride_plan(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        n_windows = self._stride.n_windows
        slot = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epoch, within = np.divmod(slot, n_windows)
        window = np.empty_like(slot)
        for e in np.unique(epoch):
            window[epoch == e] = self._epoch_permutation(int(e))[within[epoch == e]]
        return self._stride.locate(window)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng([self.seed, _STREAM_EPOCH, epoch])
            self._permutations[epoch] = rng.permutation(self._stride.n_windows)
        return self._permutations[epoch]

    def batch(self, step: int) -> Batch:
        """Batch ``step`` (a pure function of (seed, step)), before any budget truncation."""
        seg, ends, counted = self._plan(step)
        return gather_windows(
            self.items,
            self.start[seg],
            ends,
            self.user[seg],
            self.max_len,
            counted,
            view=self._view,
        )

    def batch_tokens(self, step: int) -> int:
        """Counted targets of batch ``step`` (before truncation), without gathering items."""
        seg, ends, counted = self._plan(step)
        n = np.minimum(ends - self.start[seg] - 1, self.max_len)
        return int(np.sum(n if counted is None else np.minimum(n, counted)))

    def tokens_before(self, step: int) -> int:
        """Counted targets of batches 0..step-1 (replayed; for resuming without a record)."""
        return sum(self.batch_tokens(k) for k in range(step))

    def iter_batches(
        self, start_step: int = 0, tokens_before: int | None = None
    ) -> Iterator[Batch]:
        """Batches start_step, start_step + 1, ... until the token budget is spent.

        Args:
          start_step: the first batch (a resumed run passes its next step).
          tokens_before: targets trained before ``start_step`` (None: replayed).
        """
        if tokens_before is None and self.token_budget is not None:
            tokens_before = self.tokens_before(start_step)
        return _prefetched(self._budgeted(start_step, tokens_before or 0), self.prefetch)

    def _budgeted(self, step: int, used: int) -> Iterator[Batch]:
        budget = self.token_budget
        while budget is None or used < budget:
            batch = self.batch(step)
            if budget is not None and used + batch.n_targets > budget:
                batch = batch.truncated(budget - used)
            used += batch.n_targets
            step += 1
            yield batch


def _truncated_geometric(u: np.ndarray, max_age: np.ndarray, half_life: float) -> np.ndarray:
    """int64 ages in 0..max_age with P(age) ∝ 2 ** (-age / half_life), by inverse CDF."""
    log_r = -math.log(2.0) / half_life
    tail = -np.expm1((max_age + 1) * log_r)
    age = np.ceil(np.log1p(-u * tail) / log_r) - 1
    return np.clip(age, 0, max_age).astype(np.int64)


class _StrideWindows:
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
    windows = _StrideWindows(
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


_END = object()


@dataclass
class _Failure:
    error: BaseException


def _prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Iterate ``batches`` with up to ``depth`` of them prepared ahead by a daemon thread."""
    if depth == 0:
        yield from batches
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(_Failure(err))

    worker = threading.Thread(target=produce, name="window-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=5.0)

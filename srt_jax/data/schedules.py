"""Which windows batch ``k`` holds: the per-mode plans of the window sampler.

A plan is ``(segment index [B], window end [B], counted targets [B] or None)``; the window
itself is cut by :func:`srt_jax.data.windows.gather_windows`. With ``n`` a segment's length
and ``A = max(0, n - L - 1)`` its largest window age:

- ``recent``: the last window of a segment (``f = e``).
- ``sliding``: a full window whose start is uniform over the segment, i.e. ``f = e - age``
  with ``age`` uniform in ``0..A``; a segment shorter than ``L + 2`` gives its whole
  (left-padded) history.
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
- ``stride``: every stride window (:class:`srt_jax.data.windows.StrideWindows`). An epoch
  enumerates all windows of all segments in a shuffled order (one permutation per epoch from
  ``(seed, epoch)``); batch ``k`` takes the windows at global slots ``kB .. kB + B - 1`` (a
  batch may straddle epochs).

In the random modes the segment of each window is drawn with replacement, uniformly
(``user_weighting="uniform"``) or in proportion to its target positions ``n - 1``
(``"length"``). ``stride`` visits users in proportion to their length by construction.

Every random stream is ``np.random.default_rng([seed, stream, k])``, so batch ``k`` is a
pure function of ``(seed, k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from srt_jax.data.windows import StrideWindows

Plan = tuple[np.ndarray, np.ndarray, np.ndarray | None]
_STREAM_BATCH, _STREAM_MIX, _STREAM_EPOCH = 1, 2, 3


class RandomWindows:
    """Plans of the random modes (``recent``, ``sliding``, ``recency_weighted``).

    Args:
      start, end: int64 [n_segments] segment ranges (each with at least one target).
      batch_size: B; max_len: L; seed: the data seed.
      user_weighting: ``uniform`` or ``length`` (segments drawn by target positions).
      recency_half_life: ``recency_weighted`` half-life in interactions.
    """

    def __init__(
        self,
        start: np.ndarray,
        end: np.ndarray,
        *,
        batch_size: int,
        max_len: int,
        seed: int,
        user_weighting: str,
        recency_half_life: float,
    ) -> None:
        targets = end - start - 1
        self.end, self.batch_size, self.seed = end, batch_size, seed
        self.recency_half_life = recency_half_life
        self.targets = targets
        self.max_age = np.maximum(0, targets - max_len)
        self.window_targets = np.minimum(targets, max_len)
        self.weight_cdf = np.cumsum(targets) if user_weighting == "length" else None

    def expected_tokens_per_batch(self) -> float:
        """Exact expectation of the counted targets of one batch."""
        if self.weight_cdf is None:
            return self.batch_size * float(self.window_targets.mean())
        weights = self.targets
        return self.batch_size * float(np.dot(weights, self.window_targets)) / float(weights.sum())

    def plan(self, mode: str, step: int) -> Plan:
        """Plan of batch ``step`` in ``mode`` (no counted-target limit)."""
        rng = np.random.default_rng([self.seed, _STREAM_BATCH, step])
        b = self.batch_size
        if self.weight_cdf is None:
            seg = rng.integers(0, len(self.end), size=b)
        else:
            seg = np.searchsorted(
                self.weight_cdf, rng.integers(0, self.weight_cdf[-1], b), side="right"
            )
        max_age = self.max_age[seg]
        if mode == "recent":
            age = np.zeros(b, np.int64)
        elif mode == "sliding":
            age = (rng.random(b) * (max_age + 1)).astype(np.int64)
        else:
            age = truncated_geometric(rng.random(b), max_age, self.recency_half_life)
        return seg, self.end[seg] - age, None


def truncated_geometric(u: np.ndarray, max_age: np.ndarray, half_life: float) -> np.ndarray:
    """int64 ages in 0..max_age with P(age) ∝ 2 ** (-age / half_life), by inverse CDF."""
    log_r = -math.log(2.0) / half_life
    tail = -np.expm1((max_age + 1) * log_r)
    age = np.ceil(np.log1p(-u * tail) / log_r) - 1
    return np.clip(age, 0, max_age).astype(np.int64)


class StrideEpochs:
    """Plans of the ``stride`` mode: each epoch visits every stride window once, shuffled."""

    def __init__(self, windows: StrideWindows, *, batch_size: int, seed: int) -> None:
        self.windows, self.batch_size, self.seed = windows, batch_size, seed
        self._permutations: dict[int, np.ndarray] = {}

    def expected_tokens_per_batch(self) -> float:
        """Exact expectation of the counted targets of one batch."""
        return self.batch_size * self.windows.epoch_tokens() / self.windows.n_windows

    def plan(self, step: int) -> Plan:
        """Plan of batch ``step``: the windows at global slots ``step * B ..``."""
        n_windows = self.windows.n_windows
        slot = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epoch, within = np.divmod(slot, n_windows)
        window = np.empty_like(slot)
        for e in np.unique(epoch):
            window[epoch == e] = self._epoch_permutation(int(e))[within[epoch == e]]
        return self.windows.locate(window)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng([self.seed, _STREAM_EPOCH, epoch])
            self._permutations[epoch] = rng.permutation(self.windows.n_windows)
        return self._permutations[epoch]


@dataclass(frozen=True)
class MixedSchedule:
    """The ``mixed`` mode's choice of ``sliding`` or ``recent`` for each batch.

    Attributes:
      seed: the data seed.
      sliding_fraction: p, the probability (by batch) or fraction of the budget (by epoch)
        that is sliding.
      switch_step: ``mixed_by="epoch"``: the first recent batch; None: ``mixed_by="batch"``.
    """

    seed: int
    sliding_fraction: float
    switch_step: int | None = None

    @staticmethod
    def epoch_switch_step(
        sliding_fraction: float, token_budget: int, tokens_per_batch: float
    ) -> int:
        """First batch after the sliding fraction of ``token_budget`` (``mixed_by="epoch"``)."""
        return math.ceil(sliding_fraction * token_budget / tokens_per_batch)

    def mode_at(self, step: int) -> str:
        """``sliding`` or ``recent``: the window mode of batch ``step``."""
        if self.switch_step is None:
            p = self.sliding_fraction
            sliding = np.random.default_rng([self.seed, _STREAM_MIX, step]).random() < p
        else:
            sliding = step < self.switch_step
        return "sliding" if sliding else "recent"

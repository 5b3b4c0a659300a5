"""Vectorised training windows: :class:`WindowSampler` draws batches of fixed-length windows
from store segments.

How a window becomes a batch row is in :mod:`srt_jax.data.windows` (the :class:`Batch`
contract, :func:`gather_windows`, and :func:`iter_eval_batches` for held-out segments);
which windows batch ``k`` holds in each mode (``data.sampler``: ``recent``, ``sliding``,
``recency_weighted``, ``mixed``, ``stride``) is in :mod:`srt_jax.data.schedules`; how
``data.pack`` packs a batch's windows into fewer rows is in :mod:`srt_jax.data.packing`. This
module ties them together: segments, mode, token budget, packing and prefetch. ``stride`` visits
users in proportion to their length by construction and accepts only
``user_weighting="uniform"``; ``mask_overlap=True`` (``stride`` mode, ``S < L``) counts every
target exactly once per epoch.

Determinism: batch ``k`` is a pure function of ``(seed, k)``, so a resumed run sees the same
batches. A ``token_budget`` ends iteration after exactly that many targets: the last batch
masks its excess (and zeroes those targets). :meth:`WindowSampler.iter_batches` prefetches
batches in a background thread.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from srt_jax.config import DataConfig, SamplerMode, TrainConfig, from_dict
from srt_jax.data.packing import packed_or_not, rows_for
from srt_jax.data.prefetch import prefetched
from srt_jax.data.schedules import MixedSchedule, Plan, RandomWindows, StrideEpochs
from srt_jax.data.splits import Segments
from srt_jax.data.windows import (
    Batch,
    StrideWindows,
    gather_windows,
    iter_eval_batches,
    window_view,
)
from srt_jax.errors import ConfigError

__all__ = [
    "MODES",
    "Batch",
    "Mode",
    "WindowSampler",
    "gather_windows",
    "iter_eval_batches",
    "window_view",
]

Mode = SamplerMode
MODES: tuple[str, ...] = typing.get_args(SamplerMode)


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
      ratings: float32 [n_interactions] store ratings to carry in batches (the targets'
        ratings, :attr:`Batch.ratings`), or None.
      pack: pack the windows of each batch :meth:`iter_batches` yields into
        :attr:`packed_rows` rows with segment ids (:mod:`srt_jax.data.packing`), unless no
        row would be saved; :meth:`batch` stays unpacked.
      pack_multiple: the packed row count is a multiple of this (the data-parallel devices).
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
        ratings: np.ndarray | None = None,
        pack: bool = False,
        pack_multiple: int = 1,
    ) -> None:
        # each key is checked where the run config checks it; only what involves the sampler
        # itself (combinations of options, the segments) is checked here
        from_dict(
            DataConfig,
            {
                "max_len": max_len,
                "sampler": mode,
                "stride": stride,
                "mixed_by": mixed_by,
                "mixed_sliding_fraction": mixed_sliding_fraction,
                "recency_half_life": recency_half_life,
                "user_weighting": user_weighting,
                "prefetch": prefetch,
            },
            where="data",
        )
        budget = {} if token_budget is None else {"tokens": token_budget, "epochs": None}
        from_dict(TrainConfig, {"batch_size": batch_size, **budget}, where="train")
        keep = segments.lengths >= 2
        self.items, self.ratings = items, ratings
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
        self._check_combination()
        self._random = RandomWindows(
            self.start,
            self.end,
            batch_size=batch_size,
            max_len=max_len,
            seed=seed,
            user_weighting=user_weighting,
            recency_half_life=recency_half_life,
        )
        self._stride = StrideWindows(
            self.end, self.end - self.start - 1, self.stride, max_len, mask_overlap
        )
        self._stride_epochs = StrideEpochs(self._stride, batch_size=batch_size, seed=seed)
        self._view = window_view(items, max_len)
        switch_step = None
        if mode == "mixed" and mixed_by == "epoch":
            switch_step = MixedSchedule.epoch_switch_step(
                mixed_sliding_fraction, token_budget, self.expected_tokens_per_batch()
            )
        self._mixed = MixedSchedule(seed, mixed_sliding_fraction, switch_step)
        rows = rows_for(self.batch, batch_size, pack_multiple) if pack else batch_size
        self.packed_rows = rows if rows < batch_size else None
        """Rows of the packed batches; None without packing, or when packing would save no
        row (windows that fill their rows)."""

    @classmethod
    def from_config(
        cls,
        items: np.ndarray,
        segments: Segments,
        data_cfg: DataConfig,
        batch_size: int,
        seed: int,
        token_budget: int | None = None,
        ratings: np.ndarray | None = None,
        pack_multiple: int = 1,
    ) -> WindowSampler:
        """A sampler set by the ``data`` section (sampler, stride, mixed_*, recency_half_life,
        user_weighting, prefetch, max_len, pack) of a run config; ``ratings`` and
        ``pack_multiple`` as the class."""
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
            ratings=ratings,
            pack=data_cfg.pack,
            pack_multiple=pack_multiple,
        )

    def _check_combination(self) -> None:
        """The checks no single config key can make."""

        def bad(key: str, value: Any, expected: str) -> ConfigError:
            return ConfigError(f"{key} = {value!r} is invalid: expected {expected}", key=key)

        if self.mode == "stride" and self.user_weighting != "uniform":
            raise bad(
                "data.user_weighting",
                self.user_weighting,
                "'uniform' with the stride sampler (it visits every window, so users "
                "already count in proportion to their length)",
            )
        if self.mode == "mixed" and self.mixed_by == "epoch" and self.token_budget is None:
            raise ConfigError(
                "data.mixed_by = 'epoch' needs a token budget (train.tokens or "
                "train.epochs) to place the switch from sliding to recent",
                key="data.mixed_by",
            )
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
            return self._stride_epochs.expected_tokens_per_batch()
        return self._random.expected_tokens_per_batch()

    # ------------------------------------------------------------------ batches

    def mode_at(self, step: int) -> str:
        """The window mode of batch ``step`` (resolves ``mixed``)."""
        return self._mixed.mode_at(step) if self.mode == "mixed" else self.mode

    def _plan(self, step: int) -> Plan:
        """(segment index [B], window end [B], counted targets [B] or None) of batch step."""
        mode = self.mode_at(step)
        if mode == "stride":
            return self._stride_epochs.plan(step)
        return self._random.plan(mode, step)

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
            ratings=self.ratings,
        )

    def as_trained(self, batch: Batch) -> Batch:
        """``batch`` as the step trains it: packed into :attr:`packed_rows` rows (or with
        segments when it does not fit) with ``data.pack``, else unchanged."""
        if self.packed_rows is None:
            return batch
        return packed_or_not(batch, self.packed_rows)

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
        return prefetched(self._budgeted(start_step, tokens_before or 0), self.prefetch)

    def _budgeted(self, step: int, used: int) -> Iterator[Batch]:
        budget = self.token_budget
        while budget is None or used < budget:
            batch = self.batch(step)
            if budget is not None and used + batch.n_targets > budget:
                batch = batch.truncated(budget - used)
            batch = self.as_trained(batch)
            used += batch.n_targets
            step += 1
            yield batch

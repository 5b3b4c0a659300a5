"""Train / evaluation splits of a sequence store, as ranges of store positions.

A split never copies items: training data is a set of :class:`Segments` (half-open ranges
``[start, end)`` into ``store.items``, one per user) from which the sampler draws windows,
and ranking evaluation is a set of :class:`Targets` (the target item ``items[target_pos]``,
predicted from the context ``items[context_start:target_pos]``, of which a model sees the
last ``max_len``).

Users are first divided by one seeded permutation of all users:

- **held-out users** (the first ``round(heldout_fraction * n_users)``): never trained on;
  their whole histories are the ``heldout`` segments whose every position gives the
  per-token loss that scaling laws fit.
- the rest are **training users**; ``max_users`` keeps the first ``max_users`` of them (in
  permutation order) that have training data, so that with one seed a smaller ladder rung
  is a subset of a larger one. Ranking targets (``valid``/``test``) come from ALL training
  users, whether or not ``max_users`` keeps them, so every rung of a data-size ladder is
  scored on the same targets.

Schemes for a training user's history ``[o, o + n)``:

- ``leave_one_out``: test = the last item (position ``o+n-1``), valid = the second-to-last
  (``o+n-2``), both with context from ``o``; training = ``[o, o+n-2)``. Users with fewer
  than 3 interactions have no evaluation targets and train on their whole history.
- ``temporal``: a global cutoff time ``T`` (given, or the ``cutoff_quantile`` of all
  timestamps); with ``k`` = the user's interactions before ``T``: test = the first
  interaction at or after ``T`` (position ``o+k``, needs ``k >= 1``), valid = the last one
  before ``T`` (``o+k-1``, needs ``k >= 2``), training = ``[o, o+k-1)``; users with
  ``k = 1`` have only a test target, later interactions are never used.

In both schemes every evaluated position lies after the user's training range, and
held-out users contribute nothing to training, so no evaluated target is ever a training
input or target. Segments with fewer than 2 items (no target) are left out.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from srt_jax.config import DataConfig
from srt_jax.data.store import SequenceStore
from srt_jax.errors import ConfigError

Scheme = Literal["leave_one_out", "temporal"]
SCHEMES: tuple[str, ...] = typing.get_args(Scheme)
_QUANTILE_SAMPLE = 50_000_000
_COUNT_CHUNK = 1 << 24
_SPLIT_STREAM = 0x5B17


@dataclass(frozen=True)
class Segments:
    """Training or held-out ranges of a store: user ``user[j]`` owns ``items[start[j]:end[j]]``.

    Attributes: ``start``, ``end``, ``user``: int64 [n_segments].
    """

    start: np.ndarray
    end: np.ndarray
    user: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n_segments]: items in each segment."""
        return self.end - self.start

    @property
    def n_targets(self) -> int:
        """Target positions of all segments: sum(length - 1)."""
        return int(np.sum(self.lengths - 1))


@dataclass(frozen=True)
class Targets:
    """Ranking evaluation targets: predict ``items[target_pos]`` from
    ``items[context_start:target_pos]``.

    Attributes: ``user``, ``context_start``, ``target_pos``: int64 [n_targets].
    """

    user: np.ndarray
    context_start: np.ndarray
    target_pos: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class Split:
    """Everything a run needs from a store: training and held-out segments, ranking targets.

    ``protocol`` records how the split was made (scheme, seed, fractions, cutoff, counts).
    """

    train: Segments
    heldout: Segments
    valid: Targets
    test: Targets
    protocol: dict[str, Any]


def make_split(
    store: SequenceStore,
    *,
    heldout_fraction: float,
    seed: int,
    max_users: int | None = None,
    scheme: Scheme = "leave_one_out",
    cutoff: int | None = None,
    cutoff_quantile: float | None = None,
) -> Split:
    """Split a store into training segments, held-out users and ranking targets.

    Args:
      store: the sequence store.
      heldout_fraction: fraction of all users held out (``data.heldout_users``), in [0, 1).
      seed: seed of the user permutation (``data.split_seed``).
      max_users: keep only this many training users (``data.max_users``); None keeps all.
      scheme: ``leave_one_out`` or ``temporal``.
      cutoff: temporal scheme: the cutoff timestamp (store units).
      cutoff_quantile: temporal scheme: the cutoff as a quantile of all timestamps, in (0, 1)
        (exact up to 5e7 interactions, else from an evenly strided sample of that size).

    Raises:
      ConfigError: naming the bad argument.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(
            f"data.heldout_users = {heldout_fraction!r} is invalid: expected a fraction in [0, 1)",
            key="data.heldout_users",
        )
    if scheme not in SCHEMES:
        raise ConfigError(
            f"split scheme {scheme!r} is unknown (allowed: {', '.join(SCHEMES)})", key="scheme"
        )
    offsets = store.offsets
    n_users = store.n_users
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n_users)
    n_heldout = round(heldout_fraction * n_users)
    is_heldout = np.zeros(n_users, bool)
    is_heldout[order[:n_heldout]] = True
    protocol: dict[str, Any] = {
        "scheme": scheme,
        "split_seed": seed,
        "heldout_fraction": heldout_fraction,
        "max_users": max_users,
    }
    if scheme == "leave_one_out":
        if cutoff is not None or cutoff_quantile is not None:
            raise ConfigError(
                "cutoff / cutoff_quantile apply to the temporal scheme only", key="cutoff"
            )
        before = store.lengths
    else:
        threshold = _cutoff_time(store, cutoff, cutoff_quantile)
        protocol["cutoff"] = threshold
        before = _count_before(store, threshold)
    train_end, valid_pos, test_pos = _positions(scheme, offsets, before)
    trainable = ~is_heldout & (train_end - offsets[:-1] >= 2)
    kept = order[trainable[order]]
    if max_users is not None:
        if not 1 <= max_users <= len(kept):
            raise ConfigError(
                f"data.max_users = {max_users!r} is invalid: expected an integer "
                f"in 1..{len(kept)} (the training users with data)",
                key="data.max_users",
            )
        kept = kept[:max_users]
    kept = np.sort(kept)
    heldout_users = np.flatnonzero(is_heldout & (store.lengths >= 2))
    split = Split(
        train=Segments(offsets[kept], train_end[kept], kept),
        heldout=Segments(offsets[heldout_users], offsets[heldout_users + 1], heldout_users),
        valid=_targets(~is_heldout, offsets, valid_pos),
        test=_targets(~is_heldout, offsets, test_pos),
        protocol=protocol,
    )
    protocol.update(
        n_train_users=len(split.train),
        train_targets=split.train.n_targets,
        n_heldout_users=len(split.heldout),
        heldout_targets=split.heldout.n_targets,
        n_valid=len(split.valid),
        n_test=len(split.test),
    )
    return split


def split_from_config(store: SequenceStore, data_cfg: DataConfig) -> Split:
    """:func:`make_split` set by a DataConfig: ``split`` (scheme), ``temporal_cutoff_quantile``,
    ``heldout_users``, ``split_seed`` and ``max_users``."""
    return make_split(
        store,
        heldout_fraction=data_cfg.heldout_users,
        seed=data_cfg.split_seed,
        max_users=data_cfg.max_users,
        scheme=data_cfg.split,
        cutoff_quantile=data_cfg.temporal_cutoff_quantile if data_cfg.split == "temporal" else None,
    )


def training_range(store: SequenceStore, split: Split, user: int) -> tuple[int, int]:
    """``[start, end)``: the store positions of ``user``'s history before its evaluation
    targets under ``split``'s scheme — for a training user, exactly the segment it trains on
    (``leave_one_out``: all but the last two items when it has at least 3; ``temporal``: its
    items before the cutoff but the last of them, the valid target). Users that
    ``max_users`` leaves out get the same range; held-out users are the caller's business
    (their whole history is held out)."""
    start, end = int(store.offsets[user]), int(store.offsets[user + 1])
    scheme = split.protocol["scheme"]
    if scheme == "leave_one_out":
        before = np.array([end - start])
    else:
        before = np.array([int(np.sum(store.timestamps[start:end] < split.protocol["cutoff"]))])
    train_end, _, _ = _positions(scheme, np.array([start, end]), before)
    return start, int(train_end[0])


def _positions(
    scheme: Scheme, offsets: np.ndarray, before: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: training end, valid and test positions (-1 where there is none).

    ``before`` is the history length (leave-one-out) or the count before the cutoff.
    """
    start, lengths = offsets[:-1], np.diff(offsets)
    if scheme == "leave_one_out":
        evaluated = lengths >= 3
        train_end = np.where(evaluated, offsets[1:] - 2, offsets[1:])
        valid = np.where(evaluated, offsets[1:] - 2, -1)
        test = np.where(evaluated, offsets[1:] - 1, -1)
    else:
        train_end = start + np.maximum(before - 1, 0)
        valid = np.where(before >= 2, start + before - 1, -1)
        test = np.where((before >= 1) & (before < lengths), start + before, -1)
    return train_end, valid, test


def _targets(eligible: np.ndarray, offsets: np.ndarray, target_pos: np.ndarray) -> Targets:
    users = np.flatnonzero(eligible & (target_pos >= 0))
    return Targets(users, offsets[users], target_pos[users])


def _cutoff_time(store: SequenceStore, cutoff: int | None, cutoff_quantile: float | None) -> int:
    if (cutoff is None) == (cutoff_quantile is None):
        raise ConfigError(
            "the temporal split needs exactly one of cutoff (a timestamp) or "
            "cutoff_quantile (a fraction in (0, 1))",
            key="cutoff",
        )
    if cutoff is not None:
        first, last = int(np.min(store.timestamps)), int(np.max(store.timestamps))
        if not first < int(cutoff) <= last:
            raise ConfigError(
                f"temporal split cutoff = {cutoff} is outside the log's time range: expected "
                f"a time after its first interaction ({first}) and at most its last ({last})",
                key="cutoff",
            )
        return int(cutoff)
    if not 0.0 < cutoff_quantile < 1.0:
        raise ConfigError(
            f"cutoff_quantile = {cutoff_quantile!r} is invalid: expected a fraction in (0, 1)",
            key="cutoff_quantile",
        )
    stride = max(1, store.n_interactions // _QUANTILE_SAMPLE)
    sample = np.asarray(store.timestamps[::stride])
    return int(np.quantile(sample, cutoff_quantile, method="higher"))


def _count_before(store: SequenceStore, threshold: int) -> np.ndarray:
    """int64 [n_users]: interactions of each user with timestamp < threshold."""
    offsets, counts = store.offsets, np.zeros(store.n_users, np.int64)
    u0 = 0
    while u0 < store.n_users:
        u1 = max(u0 + 1, int(np.searchsorted(offsets, offsets[u0] + _COUNT_CHUNK, "right")) - 1)
        a, b = offsets[u0], offsets[u1]
        earlier = np.concatenate([[0], np.cumsum(store.timestamps[a:b] < threshold)])
        counts[u0:u1] = np.diff(earlier[offsets[u0 : u1 + 1] - a])
        u0 = u1
    return counts

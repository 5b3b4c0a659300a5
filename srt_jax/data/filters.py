"""Filters of a prepared log, applied in ``FILTER_ORDER`` to rows sorted by (user, time):
minimum rating, duplicate (user, item, timestamp) rows, the user/item k-core, and a nested
random sample of users (see :mod:`srt_jax.data.ingest` for why in this order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from srt_jax.data.interactions import Interactions
from srt_jax.errors import DataError

DUPLICATE_POLICIES = ("keep", "first", "drop")
FILTER_ORDER = ("min_rating", "duplicates", "k_core", "max_users")


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

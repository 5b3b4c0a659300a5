"""Sub-stores: a store restricted to some of its items (chosen by their feature tokens) and
a sample of its users, as the domains of a transfer study (``srt-jax data subset``).

A user's history keeps its kept items in time order (their timestamps and ratings with
them); users left with fewer than ``min_length`` interactions are dropped; then, if asked,
a seeded random sample of ``max_users`` of the rest is kept (nested across sizes for one
seed, as in ``data prepare``). Items are renumbered densely in their old order (only those
that still occur), with their original ids and item features, so a model trained on the
sub-store aligns with the parent by original id or by feature token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srt_jax.data.item_features import subset_features
from srt_jax.data.store import SequenceStore, write_store
from srt_jax.errors import DataError


def items_with_tokens(store: SequenceStore, tokens: Sequence[str]) -> np.ndarray:
    """bool [n_items + 1]: items carrying any of ``tokens`` (DataError: the store has no item
    features, or a token is not in its vocabulary)."""
    features = store.item_features()
    if features is None:
        raise DataError(f"{store.path} has no item features to choose items by")
    index = {token: i for i, token in enumerate(features.vocab)}
    unknown = [token for token in tokens if token not in index]
    if unknown:
        examples = ", ".join(features.vocab[2:7])
        raise DataError(
            f"{store.path}: no item has the feature token(s) {', '.join(map(repr, unknown))} "
            f"(tokens look like {examples})"
        )
    wanted = np.isin(features.tokens, [index[token] for token in tokens])
    chosen = np.zeros(store.n_items + 1, bool)
    chosen[features.token_items[wanted]] = True
    return chosen


def subset_store(
    store: SequenceStore,
    out: str | Path,
    keep_item: np.ndarray,
    *,
    max_users: int | None = None,
    seed: int = 0,
    min_length: int = 2,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
) -> SequenceStore:
    """Write the sub-store of ``store`` with the items where ``keep_item`` (bool
    [n_items + 1]) is True, as the module docstring says; ``meta`` is recorded in its
    ``meta.json`` under ``subset`` with the parent's path and the counts."""
    keep_row = keep_item[np.asarray(store.items)]
    users = np.repeat(np.arange(store.n_users), store.lengths)[keep_row]
    lengths = np.bincount(users, minlength=store.n_users)
    kept_users = np.flatnonzero(lengths >= min_length)
    if max_users is not None and len(kept_users) > max_users:
        order = np.random.default_rng(seed).permutation(len(kept_users))
        kept_users = np.sort(kept_users[order[:max_users]])
    rows = np.flatnonzero(keep_row)[np.isin(users, kept_users)]
    if len(rows) == 0:
        raise DataError(
            f"{store.path}: the subset is empty (no user has {min_length} interactions with "
            "the chosen items)"
        )
    old_items = np.asarray(store.items)[rows]
    present = np.flatnonzero(np.bincount(old_items, minlength=store.n_items + 1))
    new_index = np.zeros(store.n_items + 1, np.int32)
    new_index[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths[kept_users])]).astype(np.int64)
    item_ids = np.asarray(store.item_ids())
    features = store.item_features()
    record = {
        "parent": str(store.path.resolve()),
        "items": len(present),
        "users": len(kept_users),
        "min_length": min_length,
        "max_users": max_users,
        "seed": seed,
        **(meta or {}),
    }
    return write_store(
        out,
        new_index[old_items],
        np.asarray(store.timestamps)[rows],
        offsets,
        np.concatenate([item_ids[:1], item_ids[present]]),
        np.asarray(store.user_ids())[kept_users],
        {
            "source": store.meta.get("source"),
            "time_unit": store.meta.get("time_unit"),
            "subset": record,
        },
        ratings=None if store.ratings is None else np.asarray(store.ratings)[rows],
        item_features=None if features is None else subset_features(features, present),
        item_features_meta=None if features is None else {"source": "subset of the parent"},
        overwrite=overwrite,
    )

"""Statistics of a sequence store: sizes, history lengths, item popularity concentration,
and the approximate entropy (regularity) of the interaction sequences.

Item counts are taken chunk by chunk over the memory-mapped ``items`` array, so a store of
any size is summarised in bounded memory; the approximate entropy reads at most
``APEN_MAX_INTERACTIONS`` interactions, from a seeded sample of whole users.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np

from srt_jax.data.store import SequenceStore

PERCENTILES = (5, 25, 50, 75, 95)
_COUNT_CHUNK = 1 << 24
APEN_ORDERS = (1, 2)
APEN_MAX_INTERACTIONS = 5_000_000


def item_counts(store: SequenceStore) -> np.ndarray:
    """int64 [n_items + 1]: interactions per item index (entry 0, padding, is 0)."""
    counts = np.zeros(store.n_items + 1, np.int64)
    for start in range(0, store.n_interactions, _COUNT_CHUNK):
        counts += np.bincount(
            store.items[start : start + _COUNT_CHUNK], minlength=store.n_items + 1
        )
    return counts


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative ``counts`` (0: all equal; near 1: all on one)."""
    values = np.sort(np.asarray(counts, np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(2.0 * np.sum(ranks * values) / (n * total) - (n + 1) / n)


def top_share(counts: np.ndarray, fraction: float = 0.01) -> float:
    """Share of all interactions on the most popular ``ceil(fraction * n)`` items."""
    total = counts.sum()
    if total == 0:
        return 0.0
    top = max(1, math.ceil(fraction * len(counts)))
    return float(np.sort(counts)[::-1][:top].sum() / total)


def approximate_entropy(histories: list[np.ndarray], m: int) -> float:
    """Approximate entropy ApEn(m, r=0) of item sequences, pooled over histories, in nats.

    Pincus' ApEn with exact matching (r = 0, the only tolerance that means anything for
    item ids): over every window of ``m + 1`` consecutive items inside one history (windows
    never cross histories), Phi_m is the mean log share of windows whose first ``m`` items
    match, Phi_{m+1} the same for all ``m + 1``, and ApEn = Phi_m - Phi_{m+1}. Computed on
    the same windows for both orders, it is the plug-in conditional entropy of an item given
    the ``m`` before it: 0 when the next item is always determined, log k when it is one of
    k equally often. Lower is more regular (the Performance Law's data-quality covariate,
    Shen et al. 2024). Histories shorter than ``m + 1`` contribute nothing; NaN if none is
    long enough.
    """
    windows = [
        np.lib.stride_tricks.sliding_window_view(history, m + 1)
        for history in histories
        if len(history) > m
    ]
    if not windows:
        return float("nan")
    pooled = np.concatenate(windows)
    return _mean_log_share(pooled[:, :m]) - _mean_log_share(pooled)


def _mean_log_share(windows: np.ndarray) -> float:
    """Mean over rows of log(share of rows equal to that row); windows: int [n, k]."""
    _, inverse, counts = np.unique(windows, axis=0, return_inverse=True, return_counts=True)
    return float(np.mean(np.log(counts[inverse.reshape(-1)] / len(windows))))


def store_apen(store: SequenceStore, seed: int = 0) -> dict[str, Any]:
    """ApEn of the store's histories for each order in ``APEN_ORDERS`` (JSON-ready).

    Keys: ``m1``, ``m2`` (nats, see :func:`approximate_entropy`), ``users`` and
    ``interactions`` read (all of them, or a seeded sample of whole users holding at most
    ``APEN_MAX_INTERACTIONS``: a plug-in entropy depends on the sample size, so the sample
    is stated beside the value).
    """
    users = np.arange(store.n_users)
    if store.n_interactions > APEN_MAX_INTERACTIONS:
        users = np.random.default_rng(seed).permutation(store.n_users)
        keep = np.cumsum(store.lengths[users]) <= APEN_MAX_INTERACTIONS
        users = np.sort(users[keep])
    histories = [store.history(int(user)) for user in users]
    record: dict[str, Any] = {f"m{m}": approximate_entropy(histories, m) for m in APEN_ORDERS}
    record["users"] = len(users)
    record["interactions"] = int(store.lengths[users].sum())
    return record


def store_stats(store: SequenceStore) -> dict[str, Any]:
    """Summary of a store (JSON-ready).

    Keys: ``n_users``, ``n_items``, ``n_interactions``, ``density``, ``history_length``
    (min, p5, p25, p50, p75, p95, max, mean; interactions per user), ``item_gini``,
    ``top1pct_item_share``, ``apen`` (see :func:`store_apen`), ``time`` (min, max, unit),
    ``has_ratings``, ``source``, and
    ``item_features`` (null, or: ``vocab_size``, ``tokens_per_item`` mean,
    ``items_without_features``, ``rows_unmatched``, ``source``).
    """
    lengths = store.lengths
    counts = item_counts(store)[1:]
    history: dict[str, float] = {"min": int(lengths.min()) if len(lengths) else 0}
    for q, value in zip(PERCENTILES, np.percentile(lengths, PERCENTILES), strict=True):
        history[f"p{q}"] = float(value)
    history["max"] = int(lengths.max()) if len(lengths) else 0
    history["mean"] = float(lengths.mean()) if len(lengths) else 0.0
    return {
        "path": str(store.path),
        "n_users": store.n_users,
        "n_items": store.n_items,
        "n_interactions": store.n_interactions,
        "density": store.n_interactions / max(1, store.n_users * store.n_items),
        "history_length": history,
        "item_gini": gini(counts),
        "top1pct_item_share": top_share(counts, 0.01),
        "apen": store_apen(store),
        "time": _time_range(store),
        "has_ratings": store.ratings is not None,
        "source": store.meta.get("source", {}),
        "item_features": _feature_stats(store),
    }


def _feature_stats(store: SequenceStore) -> dict[str, Any] | None:
    """The item features' summary (see :func:`store_stats`), or None without features."""
    features = store.item_features()
    if features is None:
        return None
    record = store.meta["item_features"]
    return {
        "vocab_size": features.vocab_size,
        "tokens_per_item": float(features.counts[1:].mean()) if features.n_items else 0.0,
        "items_without_features": features.items_without_features,
        "rows_unmatched": record.get("rows_unmatched", 0),
        "source": record.get("source"),
    }


def _time_range(store: SequenceStore) -> dict[str, Any]:
    """min/max timestamp; each history is time-ordered, so only per-user ends are read."""
    unit = store.meta.get("time_unit")
    nonempty = store.lengths > 0
    if not nonempty.any():
        return {"min": None, "max": None, "unit": unit}
    first = store.timestamps[store.offsets[:-1][nonempty]]
    last = store.timestamps[store.offsets[1:][nonempty] - 1]
    return {"min": int(first.min()), "max": int(last.max()), "unit": unit}


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable multi-line summary of :func:`store_stats`."""
    history = stats["history_length"]
    time_range = stats["time"]
    lines = [
        f"store          {stats['path']}",
        f"users          {stats['n_users']:,}",
        f"items          {stats['n_items']:,}",
        f"interactions   {stats['n_interactions']:,}  (density {stats['density']:.4%})",
        "history length "
        + "  ".join(
            f"{key} {value:,.1f}" if key == "mean" else f"{key} {value:,.0f}"
            for key, value in history.items()
        ),
        f"item gini      {stats['item_gini']:.3f}",
        f"top 1% items   {stats['top1pct_item_share']:.1%} of interactions",
        _format_apen(stats["apen"]),
        f"time           {_format_time(time_range['min'], time_range['unit'])} .. "
        f"{_format_time(time_range['max'], time_range['unit'])}",
        f"ratings        {'yes' if stats['has_ratings'] else 'no'}",
    ]
    features = stats.get("item_features")
    if features:
        lines.append(
            f"item features  {features['vocab_size']:,} tokens, "
            f"{features['tokens_per_item']:.1f} per item; "
            f"{features['items_without_features']:,} items without features"
            + (
                f"; {features['rows_unmatched']:,} feature rows match no item"
                if features["rows_unmatched"]
                else ""
            )
        )
    source = stats.get("source") or {}
    if isinstance(source, str):  # a generated store: "synthetic"
        lines.append(f"source         {source}")
    elif source:
        lines.append(f"source         {source.get('format')}: {', '.join(source.get('files', []))}")
    return "\n".join(lines)


def _format_apen(apen: dict[str, Any]) -> str:
    orders = "  ".join(f"m={m} {apen[f'm{m}']:.3f}" for m in APEN_ORDERS)
    return (
        f"ApEn (nats)    {orders}  over {apen['interactions']:,} interactions of "
        f"{apen['users']:,} users (lower: more regular)"
    )


def _format_time(value: int | None, unit: str | None) -> str:
    if value is None:
        return "-"
    seconds = {"s": 1, "ms": 1000}.get(unit or "")
    if seconds is None:
        return str(value)
    date = datetime.datetime.fromtimestamp(value / seconds, datetime.UTC)
    return f"{value} ({date:%Y-%m-%d})"

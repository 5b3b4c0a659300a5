"""Statistics of a sequence store: sizes, history lengths, item popularity concentration.

Item counts are taken chunk by chunk over the memory-mapped ``items`` array, so a store of
any size is summarised in bounded memory.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np

from srt_jax.data.store import SequenceStore

PERCENTILES = (5, 25, 50, 75, 95)
_COUNT_CHUNK = 1 << 24


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


def store_stats(store: SequenceStore) -> dict[str, Any]:
    """Summary of a store (JSON-ready).

    Keys: ``n_users``, ``n_items``, ``n_interactions``, ``density``, ``history_length``
    (min, p5, p25, p50, p75, p95, max, mean; interactions per user), ``item_gini``,
    ``top1pct_item_share``, ``time`` (min, max, unit), ``has_ratings``, ``source``, and
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


def _format_time(value: int | None, unit: str | None) -> str:
    if value is None:
        return "-"
    seconds = {"s": 1, "ms": 1000}.get(unit or "")
    if seconds is None:
        return str(value)
    date = datetime.datetime.fromtimestamp(value / seconds, datetime.UTC)
    return f"{value} ({date:%Y-%m-%d})"

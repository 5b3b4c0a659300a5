"""Ranking metrics from the rank of each target among its candidates.

A rank is 1-based (1 = the target scored highest). For a cutoff k, per target:

- ``hr@k`` (hit ratio / recall with one relevant item): 1 if rank <= k, else 0;
- ``ndcg@k``: ``1 / log2(rank + 1)`` if rank <= k, else 0 (the ideal DCG of one relevant
  item is 1);
- ``mrr@k``: ``1 / rank`` if rank <= k, else 0.

Each metric is the mean over targets. Keys carry a suffix for variants (e.g.
``ndcg@10_filtered`` for ranks with the user's seen items removed).
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("ndcg", "hr", "mrr")


def ranking_metrics(ranks: np.ndarray, cutoffs: tuple[int, ...], suffix: str = "") -> dict:
    """Mean NDCG / HR / MRR at each cutoff of 1-based ``ranks`` ``[n_targets]``.

    Returns ``{"ndcg@k<suffix>": float, "hr@k<suffix>": ..., "mrr@k<suffix>": ...}`` for
    every k in ``cutoffs`` (NaN when there are no targets).
    """
    ranks = np.asarray(ranks, np.float64)
    if ranks.size and ranks.min() < 1:
        raise ValueError(f"ranks are 1-based, got a rank of {ranks.min()}")
    metrics: dict[str, float] = {}
    for k in cutoffs:
        hit = ranks <= k
        per_target = {
            "ndcg": np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0),
            "hr": hit.astype(np.float64),
            "mrr": np.where(hit, 1.0 / ranks, 0.0),
        }
        for name in METRIC_NAMES:
            values = per_target[name]
            metrics[f"{name}@{k}{suffix}"] = float(values.mean()) if values.size else float("nan")
    return metrics

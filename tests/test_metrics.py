"""Ranking metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from srt_jax.train.metrics import ranking_metrics


def test_single_targets_by_hand():
    # rank 1: ndcg 1, hr 1, mrr 1; rank 3: ndcg 1/log2(4) = 0.5, hr 1, mrr 1/3; rank 11: 0
    m = ranking_metrics(np.array([1, 3, 11]), (5, 10))
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["hr@10"] == pytest.approx(2 / 3)  # rank 11 is still out at k = 10


def test_cutoff_boundary_is_inclusive():
    m = ranking_metrics(np.array([10]), (9, 10))
    assert m["hr@9"] == 0.0 and m["ndcg@9"] == 0.0 and m["mrr@9"] == 0.0
    assert m["hr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(11))
    assert m["mrr@10"] == pytest.approx(0.1)


def test_suffix_names_variants_and_metrics_are_monotone_in_k():
    ranks = np.random.default_rng(0).integers(1, 50, size=200)
    m = ranking_metrics(ranks, (5, 10, 20), suffix="_filtered")
    assert set(m) == {f"{n}@{k}_filtered" for n in ("ndcg", "hr", "mrr") for k in (5, 10, 20)}
    for name in ("ndcg", "hr", "mrr"):
        assert m[f"{name}@5_filtered"] <= m[f"{name}@10_filtered"] <= m[f"{name}@20_filtered"]
    assert m["hr@20_filtered"] == pytest.approx(np.mean(ranks <= 20))


def test_rank_zero_is_refused():
    with pytest.raises(ValueError, match="1-based"):
        ranking_metrics(np.array([0, 1]), (5,))

"""Store statistics: approximate entropy of the interaction sequences on hand-computed cases."""

import math

import numpy as np
import pytest

from srt_jax.data import info
from srt_jax.data.info import approximate_entropy, store_apen
from srt_jax.data.store import write_store


def histories(*rows):
    return [np.array(row, np.int32) for row in rows]


def test_a_determined_next_item_has_zero_apen():
    assert approximate_entropy(histories([1, 2, 1, 2, 1, 2]), 1) == pytest.approx(0.0)
    assert approximate_entropy(histories([7, 7, 7, 7]), 2) == pytest.approx(0.0)


def test_two_equally_likely_continuations_give_log_two():
    # context 1 is followed by 2 once and by 3 once: H(next | 1) = log 2
    assert approximate_entropy(histories([1, 2], [1, 3]), 1) == pytest.approx(math.log(2))


def test_hand_computed_mixture():
    # pairs (1,2) (2,1) (1,3) (3,1) (1,2): context 1 -> {2: 2, 3: 1}, 2 -> {1}, 3 -> {1}
    value = approximate_entropy(histories([1, 2, 1, 3, 1, 2]), 1)
    p = np.array([2 / 3, 1 / 3])
    assert value == pytest.approx(3 / 5 * float(-(p * np.log(p)).sum()))


def test_windows_never_cross_histories():
    # concatenated, (2, 1) would follow (1, 2) and make context 2 ambiguous
    assert approximate_entropy(histories([1, 2], [2, 3], [2, 3]), 1) == pytest.approx(0.0)


def test_histories_too_short_for_the_order_give_nan():
    assert math.isnan(approximate_entropy(histories([1, 2], [3]), 2))


def test_store_apen_samples_whole_users_under_the_cap(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=50)
    items = rng.integers(1, 21, size=lengths.sum()).astype(np.int32)
    store = write_store(
        tmp_path / "s",
        items=items,
        timestamps=np.arange(len(items), dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        item_ids=np.arange(21),
        user_ids=np.arange(50),
        meta={"source": "test"},
    )
    full = store_apen(store)
    assert (full["users"], full["interactions"]) == (50, int(lengths.sum()))
    assert 0 < full["m1"] < math.log(20) and 0 <= full["m2"] <= full["m1"]
    monkeypatch.setattr(info, "APEN_MAX_INTERACTIONS", 100)
    sample = store_apen(store, seed=1)
    assert 0 < sample["interactions"] <= 100 and sample["users"] < 50
    assert store_apen(store, seed=1) == sample

"""Splits: hand-checked leave-one-out and temporal cases, held-out users, max_users ladders,
and no evaluated position ever used for training (by store position, through the sampler)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srt_jax.config import DataConfig
from srt_jax.data import splits
from srt_jax.data.sampler import MODES, WindowSampler
from srt_jax.data.splits import make_split, split_from_config
from srt_jax.data.store import write_store
from srt_jax.errors import ConfigError


def _store(path, lengths, timestamps=None, n_items=9, seed=0):
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, n)
    if timestamps is None:
        timestamps = np.concatenate([np.sort(rng.integers(0, 1000, k)) for k in lengths])
    return write_store(
        path,
        items,
        np.asarray(timestamps, np.int64),
        offsets,
        np.arange(n_items + 1),
        np.arange(len(lengths)),
        {"source": "test"},
    )


def test_leave_one_out_by_hand(tmp_path):
    store = _store(tmp_path / "s", [1, 2, 3, 5])  # offsets 0, 1, 3, 6, 11
    split = make_split(store, heldout_fraction=0.0, seed=0)
    # user 0 (1 item): nothing; user 1 (2 items): trains on both, no targets;
    # user 2 (3 items): valid 4, test 5, its 1 training item gives no segment; user 3: [6, 9)
    np.testing.assert_array_equal(split.train.user, [1, 3])
    np.testing.assert_array_equal(split.train.start, [1, 6])
    np.testing.assert_array_equal(split.train.end, [3, 9])
    np.testing.assert_array_equal(split.valid.user, [2, 3])
    np.testing.assert_array_equal(split.valid.target_pos, [4, 9])
    np.testing.assert_array_equal(split.valid.context_start, [3, 6])
    np.testing.assert_array_equal(split.test.target_pos, [5, 10])
    assert len(split.heldout) == 0
    assert split.protocol["train_targets"] == 1 + 2


def test_temporal_split_by_hand(tmp_path):
    times = [1, 2, 8, 9, 5, 6, 7, 12, 13, 1, 20, 30]  # 4, 5, 2 and 1 items of users 0..3
    store = _store(tmp_path / "s", [4, 5, 2, 1], timestamps=times)
    split = make_split(store, heldout_fraction=0.0, seed=0, scheme="temporal", cutoff=8)
    # user 0: 2 before the cutoff -> train [0, 1), valid 1, test 2
    # user 1: 3 before -> train [4, 6), valid 6, test 7; user 2: 1 before -> test 10 only
    np.testing.assert_array_equal(split.train.user, [1])
    np.testing.assert_array_equal(split.train.start, [4])
    np.testing.assert_array_equal(split.train.end, [6])
    np.testing.assert_array_equal(split.valid.user, [0, 1])
    np.testing.assert_array_equal(split.valid.target_pos, [1, 6])
    np.testing.assert_array_equal(split.test.user, [0, 1, 2])
    np.testing.assert_array_equal(split.test.target_pos, [2, 7, 10])
    np.testing.assert_array_equal(split.test.context_start, [0, 4, 9])
    assert split.protocol["cutoff"] == 8
    for outside in (1, 0, 31):  # at or before the first interaction, after the last
        with pytest.raises(ConfigError, match=r"outside the log's time range.*\(1\).*\(30\)"):
            make_split(store, heldout_fraction=0.0, seed=0, scheme="temporal", cutoff=outside)
    by_quantile = make_split(
        store, heldout_fraction=0.0, seed=0, scheme="temporal", cutoff_quantile=0.5
    )
    assert by_quantile.protocol["cutoff"] == 8  # the 6th smallest of 12 timestamps


def test_count_before_in_chunks(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 30, 60)
    store = _store(tmp_path / "s", lengths)
    monkeypatch.setattr(splits, "_COUNT_CHUNK", 17)
    counts = splits._count_before(store, 500)
    expected = [
        int(np.sum(store.timestamps[a:b] < 500))
        for a, b in zip(store.offsets[:-1], store.offsets[1:], strict=True)
    ]
    np.testing.assert_array_equal(counts, expected)


def test_heldout_users_and_determinism(tmp_path):
    store = _store(tmp_path / "s", np.full(200, 6))
    split = make_split(store, heldout_fraction=0.25, seed=4)
    assert len(split.heldout) == 50 and len(split.train) == 150
    assert not set(split.heldout.user) & set(split.train.user)
    assert not set(split.heldout.user) & (set(split.test.user) | set(split.valid.user))
    np.testing.assert_array_equal(split.heldout.start, store.offsets[split.heldout.user])
    np.testing.assert_array_equal(split.heldout.end, store.offsets[split.heldout.user + 1])
    again = make_split(store, heldout_fraction=0.25, seed=4)
    np.testing.assert_array_equal(again.heldout.user, split.heldout.user)
    other = make_split(store, heldout_fraction=0.25, seed=5)
    assert set(other.heldout.user) != set(split.heldout.user)


def test_max_users_nested_ladder_with_fixed_eval_targets(tmp_path):
    store = _store(tmp_path / "s", np.arange(200) % 9 + 1)
    full = make_split(store, heldout_fraction=0.1, seed=2)
    small = make_split(store, heldout_fraction=0.1, seed=2, max_users=20)
    larger = make_split(store, heldout_fraction=0.1, seed=2, max_users=60)
    assert len(small.train) == 20 and len(larger.train) == 60
    assert set(small.train.user) <= set(larger.train.user) <= set(full.train.user)
    np.testing.assert_array_equal(small.test.target_pos, full.test.target_pos)
    np.testing.assert_array_equal(small.heldout.user, full.heldout.user)
    with pytest.raises(ConfigError, match=r"data\.max_users") as err:
        make_split(store, heldout_fraction=0.1, seed=2, max_users=len(full.train) + 1)
    assert err.value.key == "data.max_users"


def test_split_from_config(tmp_path):
    store = _store(tmp_path / "s", np.full(50, 5))
    cfg = DataConfig(heldout_users=0.2, split_seed=3, max_users=10)
    split = split_from_config(store, cfg)
    assert len(split.train) == 10 and len(split.heldout) == 10
    assert split.protocol["split_seed"] == 3


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(heldout_fraction=1.0), "data.heldout_users"),
        (dict(scheme="random"), "scheme"),
        (dict(scheme="temporal"), "cutoff"),
        (dict(scheme="temporal", cutoff=3, cutoff_quantile=0.5), "cutoff"),
        (dict(scheme="temporal", cutoff_quantile=1.5), "cutoff_quantile"),
        (dict(cutoff=3), "cutoff"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, key):
    store = _store(tmp_path / "s", [4, 4])
    args = dict(heldout_fraction=0.0, seed=0) | kwargs
    with pytest.raises(ConfigError) as err:
        make_split(store, **args)
    assert err.value.key == key


def _training_positions_from_sampler(store, split, mode):
    """Store positions of every input and counted target the sampler produces."""
    sampler = WindowSampler(
        store.items,
        split.train,
        batch_size=16,
        max_len=4,
        mode=mode,
        seed=0,
        stride=2,
        token_budget=None,
        prefetch=0,
    )
    used = set()
    for step in range(12):
        batch = sampler.batch(step)
        base = store.offsets[batch.user][:, None]
        used |= set((base + batch.positions)[batch.positions >= 0].tolist())
        used |= set((base + batch.positions + 1)[batch.mask].tolist())
    return used


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 14), min_size=4, max_size=30),
    fraction=st.sampled_from([0.0, 0.2, 0.5]),
    seed=st.integers(0, 3),
    temporal=st.booleans(),
    max_users=st.sampled_from([None, 2]),
)
def test_no_evaluated_position_is_trained_on(
    tmp_path_factory, lengths, fraction, seed, temporal, max_users
):
    store = _store(tmp_path_factory.mktemp("s") / "s", lengths, seed=seed)
    kwargs = dict(scheme="temporal", cutoff_quantile=0.6) if temporal else {}
    try:
        split = make_split(
            store, heldout_fraction=fraction, seed=seed, max_users=max_users, **kwargs
        )
    except ConfigError:  # fewer trainable users than max_users
        return
    train = set()
    for a, b in zip(split.train.start, split.train.end, strict=True):
        assert b - a >= 2
        train |= set(range(a, b))
    evaluated = set(split.valid.target_pos) | set(split.test.target_pos)
    for a, b in zip(split.heldout.start, split.heldout.end, strict=True):
        evaluated |= set(range(a, b))
    assert not train & evaluated
    # a target's context lies before it, within its user's history
    for t in (split.valid, split.test):
        assert np.all(store.offsets[t.user] == t.context_start)
        assert np.all(t.target_pos < store.offsets[t.user + 1])
        assert np.all(t.context_start < t.target_pos)
    if len(split.train):
        for mode in MODES:
            assert _training_positions_from_sampler(store, split, mode) <= train


def test_split_from_config_temporal(tmp_path):
    store = _store(tmp_path / "s", np.full(40, 6))
    split = split_from_config(
        store, DataConfig(heldout_users=0.0, split="temporal", temporal_cutoff_quantile=0.5)
    )
    assert split.protocol["scheme"] == "temporal"
    cutoff = np.quantile(np.asarray(store.timestamps), 0.5)
    test_times = np.asarray(store.timestamps)[split.test.target_pos]
    assert len(test_times) and np.all(test_times >= cutoff - 1e-9)

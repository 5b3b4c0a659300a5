"""Window sampler: batch invariants in every mode, determinism, stride coverage, recent
windows, token budget, recency and length weighting (statistical, stated tolerances),
the mixed schedule, held-out evaluation batches, prefetch and config errors."""

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srt_jax.config import DataConfig
from srt_jax.data.sampler import (
    MODES,
    Batch,
    WindowSampler,
    gather_windows,
    iter_eval_batches,
)
from srt_jax.data.splits import Segments
from srt_jax.data.store import write_store
from srt_jax.errors import ConfigError


def _data(lengths, n_items=50, seed=0):
    """(items int32 [n], segments covering each whole history) for history ``lengths``."""
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = np.random.default_rng(seed).integers(1, n_items + 1, offsets[-1]).astype(np.int32)
    return items, Segments(offsets[:-1], offsets[1:], np.arange(len(lengths), dtype=np.int64))


def _check_batch(batch: Batch, items, segments, batch_size, max_len, *, counted_all=True):
    """Every window is a contiguous slice of one segment, left-padded; mask == targets != 0."""
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (batch_size, max_len)
    assert batch.positions.shape == (batch_size, max_len)
    assert batch.inputs.dtype == batch.targets.dtype == np.int32
    assert batch.positions.dtype == np.int32 and batch.mask.dtype == bool
    assert batch.user.shape == (batch_size,) and batch.user.dtype == np.int64
    np.testing.assert_array_equal(batch.mask, batch.targets != 0)
    row_of_user = {int(u): j for j, u in enumerate(segments.user)}
    for b in range(batch_size):
        pos = batch.positions[b]
        real = pos >= 0
        if batch.user[b] < 0:
            assert not real.any() and not batch.mask[b].any()
            continue
        n_pad = int(np.argmax(real)) if real.any() else max_len
        assert not real[:n_pad].any() and real[n_pad:].all(), "padding must be on the left"
        assert np.all(batch.inputs[b, :n_pad] == 0)
        np.testing.assert_array_equal(np.diff(pos[n_pad:]), 1)  # contiguous
        seg = row_of_user[int(batch.user[b])]
        start, length = segments.start[seg], segments.end[seg] - segments.start[seg]
        assert pos[-1] + 1 < length, "the last target lies inside the user's segment"
        np.testing.assert_array_equal(batch.inputs[b, n_pad:], items[start + pos[n_pad:]])
        nxt = items[start + pos + 1]
        np.testing.assert_array_equal(batch.targets[b][batch.mask[b]], nxt[batch.mask[b]])
        assert not (batch.mask[b] & ~real).any()
        if counted_all:
            np.testing.assert_array_equal(batch.mask[b], real)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12).filter(lambda ls: max(ls) >= 2),
    max_len=st.integers(1, 12),
    batch_size=st.integers(1, 9),
    mode=st.sampled_from(MODES),
    stride=st.integers(1, 14),
    weighting=st.sampled_from(["uniform", "length"]),
    seed=st.integers(0, 2**31),
)
def test_batch_invariants_in_every_mode(
    lengths, max_len, batch_size, mode, stride, weighting, seed
):
    items, segments = _data(lengths, seed=seed % 7)
    if mode == "stride":
        weighting = "uniform"
    sampler = WindowSampler(
        items,
        segments,
        batch_size=batch_size,
        max_len=max_len,
        mode=mode,
        seed=seed,
        stride=stride,
        user_weighting=weighting,
        prefetch=0,
    )
    for step in (0, 1, 7):
        batch = sampler.batch(step)
        _check_batch(batch, items, segments, batch_size, max_len)
        assert batch.n_targets == sampler.batch_tokens(step)


def test_windows_match_a_real_store(tmp_path):
    lengths = [3, 60, 1, 25, 2]
    items, segments = _data(lengths, n_items=30)
    store = write_store(
        tmp_path / "s",
        items,
        np.arange(len(items)),
        np.concatenate([[0], np.cumsum(lengths)]),
        np.arange(31),
        np.arange(5),
        {"source": "test"},
    )
    for mode in MODES:
        sampler = WindowSampler(
            store.items, segments, batch_size=8, max_len=10, mode=mode, seed=1, prefetch=0
        )
        for step in range(5):
            _check_batch(sampler.batch(step), items, segments, 8, 10)


def test_gather_windows_by_hand():
    items = np.array([9, 1, 2, 3, 4, 5, 6], np.int32)  # user A = [1, 2, 3], user B = [4, 5, 6]
    batch = gather_windows(
        items, np.array([1, 4, 4]), np.array([4, 7, 6]), np.array([0, 1, 1]), max_len=3
    )
    np.testing.assert_array_equal(batch.inputs, [[0, 1, 2], [0, 4, 5], [0, 0, 4]])
    np.testing.assert_array_equal(batch.targets, [[0, 2, 3], [0, 5, 6], [0, 0, 5]])
    np.testing.assert_array_equal(batch.positions, [[-1, 0, 1], [-1, 0, 1], [-1, -1, 0]])
    counted = gather_windows(
        items, np.array([1]), np.array([4]), np.array([0]), max_len=3, counted=np.array([1])
    )
    np.testing.assert_array_equal(counted.targets, [[0, 0, 3]])
    np.testing.assert_array_equal(counted.inputs, [[0, 1, 2]])


def test_determinism_by_seed_and_step():
    items, segments = _data([30, 5, 80, 12])
    for mode in MODES:
        a = WindowSampler(items, segments, batch_size=16, max_len=8, mode=mode, seed=3)
        b = WindowSampler(items, segments, batch_size=16, max_len=8, mode=mode, seed=3)
        c = WindowSampler(items, segments, batch_size=16, max_len=8, mode=mode, seed=4)
        for step in (0, 5, 123):
            np.testing.assert_array_equal(a.batch(step).inputs, b.batch(step).inputs)
        # later steps do not depend on which earlier ones were drawn
        np.testing.assert_array_equal(a.batch(5).targets, b.batch(5).targets)
        assert not all(np.array_equal(a.batch(s).inputs, c.batch(s).inputs) for s in range(4))
        resumed = next(iter(a.iter_batches(start_step=5)))
        np.testing.assert_array_equal(resumed.inputs, b.batch(5).inputs)


def test_recent_mode_gives_the_last_items():
    lengths = [3, 60, 2, 25]
    items, segments = _data(lengths)
    sampler = WindowSampler(items, segments, batch_size=32, max_len=10, mode="recent", seed=0)
    batch = sampler.batch(0)
    for b, user in enumerate(batch.user):
        history = items[segments.start[user] : segments.end[user]]
        n = min(10, len(history) - 1)
        np.testing.assert_array_equal(batch.targets[b, -n:], history[-n:])
        assert batch.n_targets == int(np.sum(batch.mask)) and batch.mask[b].sum() == n


def _epoch_coverage(lengths, max_len, stride, mask_overlap, batch_size=7):
    items, segments = _data(lengths)
    sampler = WindowSampler(
        items,
        segments,
        batch_size=batch_size,
        max_len=max_len,
        mode="stride",
        stride=stride,
        mask_overlap=mask_overlap,
        seed=2,
    )
    n_windows = sampler.windows_per_epoch
    coverage = {}
    for step in range(math.ceil(n_windows / batch_size)):
        batch = sampler.batch(step)
        rows = min(batch_size, n_windows - step * batch_size)  # slots of the first epoch
        for b in range(rows):
            for j in np.flatnonzero(batch.mask[b]):
                key = (int(batch.user[b]), int(batch.positions[b, j]) + 1)
                coverage[key] = coverage.get(key, 0) + 1
    all_targets = {(u, p) for u, n in enumerate(lengths) for p in range(1, n)}
    return sampler, coverage, all_targets


@pytest.mark.parametrize(
    ("max_len", "stride", "mask_overlap"), [(5, 5, False), (5, 2, True), (6, 1, True), (4, 4, True)]
)
def test_stride_epoch_covers_every_target_exactly_once(max_len, stride, mask_overlap):
    sampler, coverage, all_targets = _epoch_coverage(
        [1, 2, 9, 23, 4, 17], max_len, stride, mask_overlap
    )
    assert set(coverage) == all_targets
    assert set(coverage.values()) == {1}
    assert sampler.expected_tokens_per_batch() * sampler.windows_per_epoch / 7 == pytest.approx(
        len(all_targets)
    )


@pytest.mark.parametrize(("max_len", "stride"), [(5, 2), (6, 1), (4, 7), (3, 3)])
def test_stride_epoch_token_count_matches_enumeration(max_len, stride):
    """Unmasked overlaps (and gaps when S > L): the closed-form epoch total is exact."""
    sampler, coverage, all_targets = _epoch_coverage(
        [2, 9, 23, 4, 17, 40], max_len, stride, mask_overlap=False
    )
    epoch_tokens = sum(coverage.values())
    assert sampler._stride.epoch_tokens() == epoch_tokens
    if stride <= max_len:
        assert set(coverage) == all_targets


def test_token_budget_is_exact_and_resumable():
    items, segments = _data([30, 5, 80, 12, 3])
    for mode in MODES:
        sampler = WindowSampler(
            items,
            segments,
            batch_size=8,
            max_len=6,
            mode=mode,
            seed=1,
            token_budget=1001,
            mixed_by="epoch",
        )
        batches = list(sampler.iter_batches())
        counts = [b.n_targets for b in batches]
        assert sum(counts) == 1001
        assert all(c == sampler.batch_tokens(k) for k, c in enumerate(counts[:-1]))
        assert counts[-1] <= sampler.batch_tokens(len(batches) - 1)
        for b in batches:
            np.testing.assert_array_equal(b.mask, b.targets != 0)
        resumed = list(sampler.iter_batches(start_step=len(batches) - 2))
        assert len(resumed) == 2
        np.testing.assert_array_equal(resumed[-1].mask, batches[-1].mask)
        with_record = list(sampler.iter_batches(start_step=3, tokens_before=sum(counts[:3])))
        assert sum(b.n_targets for b in with_record) == sum(counts[3:])


def test_recency_weighting_favours_recent_starts():
    """One long history (1000 items, L 10, half-life 20): ages of window ends follow the
    truncated geometric law. Tolerance: 5 standard errors of the mean (51,200 windows)."""
    items, segments = _data([1000])
    half_life = 20.0
    sampler = WindowSampler(
        items,
        segments,
        batch_size=256,
        max_len=10,
        mode="recency_weighted",
        recency_half_life=half_life,
        seed=0,
    )
    ages = np.concatenate([998 - sampler.batch(k).positions[:, -1] for k in range(200)])
    max_age = 1000 - 10 - 1
    support = np.arange(max_age + 1)
    pmf = 2.0 ** (-support / half_life)
    pmf /= pmf.sum()
    mean = float(np.dot(support, pmf))
    sd = math.sqrt(float(np.dot((support - mean) ** 2, pmf)))
    assert abs(ages.mean() - mean) < 5 * sd / math.sqrt(len(ages))
    assert ages.min() >= 0 and ages.max() <= max_age
    # half of the windows end within one half-life of the newest item
    assert abs(np.mean(ages < half_life) - 0.5) < 0.01
    uniform = WindowSampler(items, segments, batch_size=256, max_len=10, mode="sliding", seed=0)
    sliding_ages = np.concatenate([998 - uniform.batch(k).positions[:, -1] for k in range(50)])
    assert abs(sliding_ages.mean() - max_age / 2) < 5 * (max_age / math.sqrt(12)) / math.sqrt(
        len(sliding_ages)
    )


@pytest.mark.parametrize("weighting", ["uniform", "length"])
def test_user_weighting(weighting):
    """User frequencies over 51,200 windows: proportional to target positions (n - 1) for
    'length', equal for 'uniform'; each within 5 binomial standard deviations."""
    lengths = np.array([2, 5, 11, 41])
    items, segments = _data(lengths)
    sampler = WindowSampler(
        items, segments, batch_size=256, max_len=8, mode="sliding", user_weighting=weighting, seed=0
    )
    users = np.concatenate([sampler.batch(k).user for k in range(200)])
    counts = np.bincount(users, minlength=4)
    weights = lengths - 1 if weighting == "length" else np.ones(4)
    p = weights / weights.sum()
    n = len(users)
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)))
    expected = sampler.expected_tokens_per_batch()
    observed = np.mean([sampler.batch_tokens(k) for k in range(200)])
    assert abs(observed - expected) < 0.02 * expected


def test_mixed_schedules():
    items, segments = _data([200, 150, 90])
    by_batch = WindowSampler(
        items, segments, batch_size=4, max_len=5, mode="mixed", mixed_sliding_fraction=0.3, seed=0
    )
    modes = [by_batch.mode_at(k) for k in range(2000)]
    assert abs(modes.count("sliding") / 2000 - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 2000)
    k_recent = modes.index("recent")
    batch = by_batch.batch(k_recent)
    ends = segments.end[batch.user] - segments.start[batch.user]
    np.testing.assert_array_equal(batch.positions[:, -1] + 2, ends)

    budget = 40_000
    by_epoch = WindowSampler(
        items,
        segments,
        batch_size=4,
        max_len=5,
        mode="mixed",
        mixed_by="epoch",
        mixed_sliding_fraction=0.25,
        seed=0,
        token_budget=budget,
    )
    schedule = [by_epoch.mode_at(k) for k in range(budget // 20 + 1)]
    switch = schedule.index("recent")
    assert set(schedule[:switch]) == {"sliding"} and set(schedule[switch:]) == {"recent"}
    sliding_tokens = sum(by_epoch.batch_tokens(k) for k in range(switch))
    assert abs(sliding_tokens - 0.25 * budget) <= 20  # every window here has 5 targets


def test_eval_batches_cover_every_target_once_with_context():
    lengths = [1, 2, 9, 23, 4, 57]
    items, segments = _data(lengths)
    for stride in (None, 3, 1):
        max_len = 6
        seen = {}
        for batch in iter_eval_batches(
            items, segments, max_len=max_len, batch_size=5, stride=stride
        ):
            _check_batch(batch, items, segments, 5, max_len, counted_all=False)
            real = batch.positions >= 0
            for b, j in zip(*np.nonzero(batch.mask), strict=True):
                target_index = int(batch.positions[b, j]) + 1  # items before the target
                context = int(real[b, : j + 1].sum())
                s = max_len if stride is None else stride
                assert context >= min(target_index, max_len - s + 1)
                if stride == 1:
                    assert context == min(target_index, max_len)
                key = (int(batch.user[b]), target_index)
                seen[key] = seen.get(key, 0) + 1
        expected = {(u, p) for u, n in enumerate(lengths) for p in range(1, n)}
        assert set(seen) == expected and set(seen.values()) == {1}


def test_prefetch_gives_the_same_batches_and_stops_cleanly():
    items, segments = _data([30, 5, 80, 12])
    plain = WindowSampler(
        items, segments, batch_size=8, max_len=6, seed=1, prefetch=0, token_budget=500
    )
    ahead = WindowSampler(
        items, segments, batch_size=8, max_len=6, seed=1, prefetch=3, token_budget=500
    )
    for a, b in zip(plain.iter_batches(), ahead.iter_batches(), strict=True):
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.mask, b.mask)
    endless = WindowSampler(items, segments, batch_size=8, max_len=6, seed=1, prefetch=2)
    iterator = endless.iter_batches()
    for _ in range(3):
        next(iterator)
    iterator.close()
    assert not any(t.name == "window-prefetch" and t.is_alive() for t in threading.enumerate())


def test_prefetch_reraises_producer_errors():
    items, segments = _data([30, 5])
    broken = Segments(segments.start, segments.end + 1000, segments.user)  # beyond the items
    sampler = WindowSampler(items, broken, batch_size=4, max_len=6, mode="recent", prefetch=2)
    with pytest.raises(IndexError):
        next(iter(sampler.iter_batches()))


def test_from_config():
    items, segments = _data([30, 5, 80])
    cfg = DataConfig(max_len=7, sampler="stride", stride=3, prefetch=1)
    sampler = WindowSampler.from_config(
        items, segments, cfg, batch_size=4, seed=9, token_budget=100
    )
    assert (sampler.max_len, sampler.mode, sampler.stride, sampler.seed) == (7, "stride", 3, 9)
    assert sampler.token_budget == 100 and sampler.prefetch == 1
    assert sampler.tokens_per_epoch == 29 + 4 + 79
    assert sum(b.n_targets for b in sampler.iter_batches()) == 100


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(mode="stride", user_weighting="length"), "data.user_weighting"),
        (dict(mode="mixed", mixed_by="epoch"), "data.mixed_by"),
        (dict(mode="shuffled"), "data.sampler"),
        (dict(stride=0), "data.stride"),
        (dict(recency_half_life=0.0), "data.recency_half_life"),
        (dict(token_budget=0), "train.tokens"),
    ],
)
def test_bad_options_are_named(kwargs, key):
    items, segments = _data([30, 5])
    with pytest.raises(ConfigError) as err:
        WindowSampler(items, segments, batch_size=4, max_len=6, **kwargs)
    assert err.value.key == key


def test_no_trainable_segment_is_an_error():
    items, segments = _data([1, 1])
    with pytest.raises(ConfigError, match="nothing to train on"):
        WindowSampler(items, segments, batch_size=4, max_len=6)

"""Synthetic logs: store layout, determinism, the oracle loss against a slow dense
reference, the sampling distribution, and the long-term preference in old history."""

import math

import numpy as np
import pytest

from srt_jax.data.synthetic import (
    GeneratorOptions,
    SyntheticGenerator,
    _alias_table,
    synthesize_store,
)
from srt_jax.errors import ConfigError, DataError

TINY = dict(users=7, items=12, mean_length=9.0, seed=3, topics=3, chunk_users=4)


def _tiny_options() -> dict:
    return {k: v for k, v in TINY.items() if k not in ("users", "items", "mean_length", "seed")}


def _dense_distributions(
    gen: SyntheticGenerator,
    history: np.ndarray,
    interest: np.ndarray,
    favourites: np.ndarray,
    weights: np.ndarray,
) -> list[list[float]]:
    """p_t over items 1..n_items for every position t of one history, from the model's
    definition, with plain loops (index 0 of each list is item 0, never drawn)."""
    opts = gen.options
    w_user = [0.0] * opts.topics
    for topic, weight in zip(favourites, weights, strict=True):
        w_user[int(topic)] += float(weight)
    dists = []
    for t in range(len(history)):
        lam = opts.long_term_late + (opts.long_term_early - opts.long_term_late) * 2.0 ** (
            -t / opts.long_term_half_life
        )
        rho = opts.transition_prob if t > 0 else 0.0
        beta = opts.interest_weight
        p = [0.0] * (gen.n_items + 1)
        for i in range(1, gen.n_items + 1):
            k = int(gen.topic_of[i])
            pi_k = lam * w_user[k] + (1 - lam) * (
                beta * (k == interest[t]) + (1 - beta) * gen.topic_pop[k]
            )
            p[i] = (1 - rho) * pi_k * gen.within_topic[i]
            if t > 0:
                prev = int(history[t - 1])
                for slot in range(len(gen.successors[prev])):
                    if gen.successors[prev][slot] == i:
                        p[i] += rho * gen.successor_prob[prev][slot]
        dists.append(p)
    return dists


def _traced_histories(gen: SyntheticGenerator, lengths: np.ndarray, chunk_users: int):
    """(history, interest trace, favourites, favourite weights) of every user, chunk by chunk."""
    for chunk, u0 in enumerate(range(0, len(lengths), chunk_users)):
        part = lengths[u0 : u0 + chunk_users]
        result = gen.sample_chunk(part, chunk, trace=True)
        off = np.concatenate([[0], np.cumsum(part)])
        for j in range(len(part)):
            sl = slice(off[j], off[j + 1])
            yield (
                result.items[sl],
                result.interest[sl],
                result.favourites[j],
                result.favourite_weights[j],
            )


def test_oracle_loss_matches_slow_dense_reference(tmp_path):
    store = synthesize_store(tmp_path / "s", **TINY)
    gen = SyntheticGenerator(TINY["items"], GeneratorOptions(**_tiny_options()), TINY["seed"])
    lengths = store.lengths
    nll, n = 0.0, 0
    for u, (items, interest, fav, fav_w) in enumerate(
        _traced_histories(gen, lengths, TINY["chunk_users"])
    ):
        np.testing.assert_array_equal(items, store.history(u))
        dists = _dense_distributions(gen, items, interest, fav, fav_w)
        for t in range(1, len(items)):
            assert math.isclose(sum(dists[t]), 1.0, rel_tol=1e-12)
            nll -= math.log(dists[t][int(items[t])])
            n += 1
    assert store.meta["oracle_targets"] == n == int(np.sum(lengths - 1))
    assert store.meta["oracle_loss"] == pytest.approx(nll / n, rel=1e-12)
    assert 0 < store.meta["oracle_loss"] < math.log(TINY["items"])


def test_items_are_drawn_from_the_claimed_distribution():
    """Observed item counts over all positions match sum_t p_t(i) of the dense reference
    (|z| < 5 per item), and the mean NLL matches the mean entropy of p_t (within 5 s.e.)."""
    opts = GeneratorOptions(topics=3, chunk_users=400, long_term_half_life=5.0)
    gen = SyntheticGenerator(15, opts, seed=11)
    lengths = gen.lengths(400, 25.0)
    expected = np.zeros(16)
    variance = np.zeros(16)
    observed = np.zeros(16)
    nll, entropy = [], 0.0
    for items, interest, fav, fav_w in _traced_histories(gen, lengths, opts.chunk_users):
        for t, p in enumerate(_dense_distributions(gen, items, interest, fav, fav_w)):
            p = np.asarray(p)
            expected += p
            variance += p * (1 - p)
            observed[items[t]] += 1
            if t > 0:
                nll.append(-math.log(p[items[t]]))
                entropy -= float(np.sum(p[p > 0] * np.log(p[p > 0])))
    z = (observed[1:] - expected[1:]) / np.sqrt(variance[1:])
    assert np.max(np.abs(z)) < 5.0, z
    nll = np.asarray(nll)
    assert abs(nll.mean() - entropy / len(nll)) < 5 * nll.std() / math.sqrt(len(nll))


def test_store_layout_and_meta(tmp_path):
    store = synthesize_store(tmp_path / "s", users=300, items=50, mean_length=20, seed=0)
    assert store.n_users == 300 and store.n_items == 50
    items = np.asarray(store.items)
    assert items.min() >= 1 and items.max() <= 50
    assert store.lengths.min() >= 3
    assert abs(store.lengths.mean() - 20) < 3
    ts = np.asarray(store.timestamps)
    steps = np.diff(ts)
    boundaries = store.offsets[1:-1] - 1
    assert np.all(np.delete(steps, boundaries) >= 1)
    meta = store.meta
    assert meta["source"] == "synthetic"
    assert meta["generator"]["topics"] == 32 and meta["generator"]["seed"] == 0
    assert meta["oracle_targets"] == store.n_interactions - 300
    assert meta["oracle_loss_stderr"] > 0
    assert store.item_ids()[0] == -1 and store.item_ids()[7] == 7


def test_deterministic_by_seed(tmp_path):
    a = synthesize_store(tmp_path / "a", users=100, items=40, mean_length=10, seed=5)
    b = synthesize_store(tmp_path / "b", users=100, items=40, mean_length=10, seed=5)
    c = synthesize_store(tmp_path / "c", users=100, items=40, mean_length=10, seed=6)
    assert a.meta["checksum"] == b.meta["checksum"]
    assert a.meta["oracle_loss"] == b.meta["oracle_loss"]
    assert a.meta["checksum"] != c.meta["checksum"]


def test_zipf_popularity_shows_in_item_counts(tmp_path):
    popularity_only = dict(
        transition_prob=0.0, long_term_early=0.0, long_term_late=0.0, interest_weight=0.0
    )
    store = synthesize_store(
        tmp_path / "s", users=2000, items=200, mean_length=30, seed=2, **popularity_only
    )
    gen = SyntheticGenerator(200, GeneratorOptions(**popularity_only), 2)
    counts = np.bincount(np.asarray(store.items), minlength=201)[1:]
    popularity = gen.topic_pop[gen.topic_of[1:]] * gen.within_topic[1:]
    # With only the popularity component, the marginal is exactly the Zipf law.
    expected = popularity * store.n_interactions
    z = (counts - expected) / np.sqrt(expected)
    assert np.max(np.abs(z)) < 5.0
    top = np.sort(popularity)[::-1]
    assert top[0] / top[9] == pytest.approx(10.0)


def _old_history_gain(tmp_path, **options) -> float:
    """Mean log-likelihood gain, on each user's last 10 topics, of mixing the topic
    histogram of old history into that of the 20 items before them."""
    topics, recent, horizon = 16, 20, 10
    store = synthesize_store(
        tmp_path / "g",
        users=3000,
        items=400,
        mean_length=150,
        seed=1,
        topics=topics,
        overwrite=True,
        **options,
    )
    gen = SyntheticGenerator(400, GeneratorOptions(topics=topics, **options), 1)
    gain, n = 0.0, 0
    for u in range(store.n_users):
        topic = gen.topic_of[np.asarray(store.history(u))]
        if len(topic) < recent + horizon + 60:
            continue
        target = topic[-horizon:]
        p_recent = (np.bincount(topic[-horizon - recent : -horizon], minlength=topics) + 1) / (
            recent + topics
        )
        old = topic[: -horizon - recent]
        p_old = (np.bincount(old, minlength=topics) + 1) / (len(old) + topics)
        p_mixed = 0.5 * p_recent + 0.5 * p_old
        gain += float(np.sum(np.log(p_mixed[target]) - np.log(p_recent[target])))
        n += horizon
    return gain / n


def test_long_term_preference_rewards_old_history(tmp_path):
    """Old history helps predict the newest items only because of the long-term preference:
    without it (weights 0) mixing in old history hurts."""
    with_preference = _old_history_gain(tmp_path)
    without = _old_history_gain(tmp_path, long_term_early=0.0, long_term_late=0.0)
    assert with_preference > 0.01
    assert without < 0.0
    assert with_preference - without > 0.03


def test_alias_table_reproduces_distribution():
    p = np.random.default_rng(0).random(9) ** 3
    p /= p.sum()
    accept, alias = _alias_table(p)
    rebuilt = accept / len(p)
    np.add.at(rebuilt, alias, (1 - accept) / len(p))
    np.testing.assert_allclose(rebuilt, p, atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(topics=0), "topics"),
        (dict(topics=41), "topics"),
        (dict(transition_prob=1.0), "transition_prob"),
        (dict(long_term_late=0.9, long_term_early=0.5), "long_term_late"),
        (dict(min_length=1), "min_length"),
        (dict(mean_length=3.0), "mean_length"),
        (dict(users=0), "users"),
        (dict(colour="red"), "colour"),
    ],
)
def test_bad_options_are_named(tmp_path, kwargs, key):
    args = dict(users=10, items=40, mean_length=8.0, seed=0) | kwargs
    with pytest.raises(ConfigError) as err:
        synthesize_store(tmp_path / "s", **args)
    assert err.value.key == key and key in str(err.value)
    assert not (tmp_path / "s").exists()


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    real = SyntheticGenerator.sample_chunk

    def failing(self, lengths, chunk_index, **kw):
        if chunk_index == 1:
            raise RuntimeError("disk full")
        return real(self, lengths, chunk_index, **kw)

    monkeypatch.setattr(SyntheticGenerator, "sample_chunk", failing)
    with pytest.raises(RuntimeError):
        synthesize_store(tmp_path / "s", users=10, items=12, mean_length=8, seed=0, chunk_users=4)
    assert list(tmp_path.iterdir()) == []


def test_existing_store_needs_overwrite(tmp_path):
    synthesize_store(tmp_path / "s", users=5, items=12, mean_length=8, seed=0)
    with pytest.raises(DataError, match="already exists"):
        synthesize_store(tmp_path / "s", users=5, items=12, mean_length=8, seed=0)
    again = synthesize_store(
        tmp_path / "s", users=6, items=12, mean_length=8, seed=0, overwrite=True
    )
    assert again.n_users == 6

"""Extra test sets (old windows, long histories) and item-embedding quality: hand-checked
cases, invariants (old-window targets lie in held-out users' older history, drawn
deterministically), clear errors, and both in a trained run's summary."""

import numpy as np
import pytest
from test_item_features import TOKENS, store_with_features
from test_loop import tiny_config
from test_splits import _store

from srt_jax.data.item_features import from_token_lists
from srt_jax.data.splits import Segments, make_split
from srt_jax.data.synthetic import synthesize_store
from srt_jax.data.test_sets import (
    OLD_WINDOWS_PER_USER,
    build_test_sets,
    long_history_targets,
    old_window_targets,
)
from srt_jax.errors import ConfigError
from srt_jax.train.embedding_quality import (
    cooccurrence_recall,
    feature_agreement,
    feature_membership,
    nearest_neighbours,
    popularity_buckets,
    topic_agreement,
)
from srt_jax.train.loop import train


def test_old_windows_lie_before_the_last_L_items_of_held_out_users(tmp_path):
    lengths = [3, 6, 12, 20, 30, 9, 40, 15]
    store = _store(tmp_path / "s", lengths)
    split = make_split(store, heldout_fraction=0.5, seed=1)
    L = 5
    targets = old_window_targets(split, L, seed=1)
    heldout = dict(zip(split.heldout.user.tolist(), split.heldout.start.tolist(), strict=True))
    counts = {}
    for user, start, pos in zip(
        targets.user, targets.context_start, targets.target_pos, strict=True
    ):
        n = lengths[user]
        assert user in heldout and start == heldout[user] == store.offsets[user]
        assert start + 1 <= pos < start + n - L  # older part, at least one item of context
        counts[user] = counts.get(user, 0) + 1
    for user in heldout:
        eligible = max(0, lengths[user] - L - 1)
        assert counts.get(user, 0) == min(OLD_WINDOWS_PER_USER, eligible)
    again = old_window_targets(split, L, seed=1)
    np.testing.assert_array_equal(again.target_pos, targets.target_pos)
    other = old_window_targets(split, L, seed=2)
    assert not np.array_equal(other.target_pos, targets.target_pos)
    with pytest.raises(ConfigError, match="no held-out user has more than"):
        old_window_targets(split, 100, seed=1)


def test_long_history_keeps_targets_with_more_than_L_items_before_them(tmp_path):
    store = _store(tmp_path / "s", [4, 8, 12])  # offsets 0, 4, 12, 24
    split = make_split(store, heldout_fraction=0.0, seed=0)
    kept = long_history_targets(split.test, 6)
    assert kept.user.tolist() == [1, 2]  # 7 and 11 items before their last one
    assert kept.target_pos.tolist() == [11, 23]
    with pytest.raises(ConfigError, match="long_history"):
        long_history_targets(split.test, 11)
    assert set(build_test_sets(("long_history",), split, 6, 0)) == {"long_history"}


def test_nearest_neighbours_and_popularity_buckets_by_hand():
    table = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
    neighbours = nearest_neighbours(table, np.array([1, 3]), 2)
    assert neighbours.tolist() == [[2, 3], [2, 1]]  # cosine; never itself or padding
    counts = np.array([0, 50, 30, 15, 5, 0])
    # head: items making up the first half of interactions (item 1: 50 %), torso: up to 80 %
    assert popularity_buckets(counts).tolist() == ["", "head", "torso", "tail", "tail", "tail"]


def test_cooccurrence_recall_and_topic_agreement_by_hand():
    # item -> its 1 nearest neighbour: 1->2, 2->1, 3->1
    neighbours = np.array([[2], [1], [1]])
    query = np.array([1, 2, 3])
    items = np.array([1, 2, 1, 3, 2, 2, 3, 1])
    heldout = Segments(np.array([0, 4]), np.array([4, 8]), np.array([0, 1]))
    # pairs: (1,2) hit, (2,1) hit, (1,3) miss | (2,2) skipped, (2,3) miss, (3,1) hit
    bucket = np.array(["", "head", "torso", "tail"], object)
    recall = cooccurrence_recall(neighbours, query, items, heldout, bucket)
    assert recall["head"] == pytest.approx(0.5)  # item 1: 1 of 2
    assert recall["torso"] == pytest.approx(0.5)  # item 2: 1 of 2
    assert recall["tail"] == pytest.approx(1.0)  # item 3: 1 of 1
    assert recall["all"] == pytest.approx(2 / 3) and recall["items"] == 3
    topic_of = np.array([0, 0, 0, 1])
    agreement = topic_agreement(neighbours, query, topic_of, bucket)
    assert agreement["all"] == pytest.approx(2 / 3)  # 1->2 same, 2->1 same, 3->1 not
    assert agreement["chance"] == pytest.approx((2**2 + 1**2) / 9)


def test_feature_agreement_and_its_chance_by_hand(tmp_path):
    store = store_with_features(tmp_path / "s", from_token_lists(TOKENS))
    # genre values: 1 {a}, 2 {a}, 3 none, 4 {a, b}; the year and word columns are ignored
    members = feature_membership(store, "genre")
    assert members.toarray().tolist() == [[0, 0], [1, 0], [1, 0], [0, 0], [1, 1]]
    neighbours = np.array([[3, 2], [4, 3], [1, 2], [3, 1]])
    bucket = np.array(["", "head", "head", "torso", "tail"], object)
    agreement = feature_agreement(neighbours, np.arange(1, 5), members, bucket, seed=0)
    # 1: (3 no, 2 yes), 2: (4 yes, 3 no), 4: (3 no, 1 yes); item 3 has no genre: not averaged
    assert agreement["all"] == pytest.approx(0.5) and agreement["items"] == 3
    assert agreement["torso"] is None and agreement["tail"] == pytest.approx(0.5)
    # every item with a genre shares one with 2 of the 3 others
    assert agreement["chance"] == pytest.approx(2 / 3, abs=0.01)


def test_feature_agreement_needs_the_store_to_have_the_column(tmp_path):
    store = store_with_features(tmp_path / "s", from_token_lists(TOKENS))
    with pytest.raises(
        ConfigError, match=r"no colour=\.\.\. tokens; .*\['genre', 'word', 'year'\]"
    ):
        feature_membership(store, "colour")
    bare = store_with_features(tmp_path / "bare")
    with pytest.raises(ConfigError, match=r"needs item features, but the store at .* has none"):
        feature_membership(bare, "genre")
    with pytest.raises(ConfigError, match=r"eval\.embedding_feature"):
        tiny_config(tmp_path, "eval.embedding_feature=genre")  # without embedding_quality
    config = tiny_config(tmp_path, "eval.embedding_quality=true", "eval.embedding_feature=genre")
    with pytest.raises(ConfigError, match="needs item features"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_run_reports_its_test_sets_and_embedding_quality(tmp_path):
    store = synthesize_store(
        tmp_path / "store",
        users=150,
        items=40,
        mean_length=16,
        seed=0,
        feature_tokens=2,
        topic_tokens=3,
        progress=False,
    )
    config = tiny_config(
        tmp_path,
        f"data.dataset={store.path}",
        "eval.test_sets=[old_windows,long_history]",
        "eval.embedding_quality=true",
        "eval.embedding_feature=tag",
    )
    summary = train(config, tmp_path / "run", progress=False)
    sets = summary["test_sets"]
    assert set(sets) == {"old_windows", "long_history"}
    assert sets["old_windows"]["targets"] > 0 and 0 <= sets["old_windows"]["ndcg@10"] <= 1
    assert sets["long_history"]["targets"] <= summary["protocol"]["n_test_users"]
    assert set(summary["protocol"]["test_sets"]) == {"old_windows", "long_history"}
    quality = summary["embedding_quality"]
    assert quality["k"] == 10 and sum(quality["buckets"].values()) == 40
    assert 0 <= quality["cooccurrence_recall"]["all"] <= 1
    assert 0 <= quality["topic_agreement"]["all"] <= 1  # a synthetic store: topics known
    features = quality["feature_agreement"]
    assert features["column"] == "tag" and features["items"] == 40
    assert 0 <= features["all"] <= 1 and 0 < features["chance"] < 1

"""Item features: the store's ragged token arrays, the features item encoder (pooling,
parameter count independent of the catalog, FLOPs), and transfer to a new catalog through a
shared vocabulary (token rows aligned by string, freezing, the pull to the pre-trained
values, the parent's compute recorded)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_loop import tiny_config

from srt_jax.config import ModelConfig, TrainConfig, TransferConfig, from_dict
from srt_jax.data.item_features import (
    NO_FEATURES,
    ItemFeatures,
    features_for_items,
    from_token_lists,
    subset_features,
)
from srt_jax.data.store import SequenceStore, write_store
from srt_jax.data.synthetic import synthesize_store
from srt_jax.errors import ConfigError, DataError
from srt_jax.models.counting import count_params, flops_per_token
from srt_jax.models.factory import build_model
from srt_jax.train.loop import train
from srt_jax.train.transfer import gate, unfreeze_points

TOKENS = [["genre=a", "year=1995"], ["genre=a"], [], ["genre=b", "genre=a", "word=x"]]


def test_token_lists_become_a_sorted_vocabulary_and_ragged_arrays():
    features = from_token_lists(TOKENS)
    assert features.vocab == ("[pad]", NO_FEATURES, "genre=a", "genre=b", "word=x", "year=1995")
    assert features.offsets.tolist() == [0, 0, 2, 3, 4, 7]
    assert features.item_tokens(3) == [NO_FEATURES]
    assert features.item_tokens(4) == ["genre=b", "genre=a", "word=x"]
    assert features.counts.tolist() == [0, 2, 1, 1, 3]
    assert features.token_items.tolist() == [1, 1, 2, 3, 4, 4, 4]
    assert features.items_without_features == 1


def test_side_table_rows_are_matched_by_original_id_and_counted():
    item_ids = np.array([-1, 10, 20, 30])
    features, counts = features_for_items(
        item_ids, ["20", "10", "99"], [["g=x"], ["g=y", "g=x"], ["g=z"]]
    )
    assert features.item_tokens(1) == ["g=y", "g=x"]
    assert features.item_tokens(2) == ["g=x"]
    assert features.item_tokens(3) == [NO_FEATURES]
    assert counts == {
        "items_with_features": 2,
        "items_without_features": 1,
        "rows_unmatched": 1,
        "tokens_dropped": 0,
    }
    assert "g=z" not in features.vocab  # only the log's items make the vocabulary
    with pytest.raises(DataError, match="no row of the item features matches"):
        features_for_items(item_ids, ["1", "2"], [["g=x"], ["g=y"]])


def test_tokens_on_too_few_items_are_dropped():
    item_ids = np.array([-1, 1, 2, 3])
    rows = [["g=a", "w=solo"], ["g=a", "g=b"], ["w=only"]]
    features, counts = features_for_items(item_ids, ["1", "2", "3"], rows, min_token_items=2)
    assert features.vocab == ("[pad]", NO_FEATURES, "g=a")
    assert features.item_tokens(2) == ["g=a"]
    assert features.item_tokens(3) == [NO_FEATURES]  # all its tokens were rare
    assert counts["tokens_dropped"] == 3 and counts["items_without_features"] == 1


def test_sub_catalog_keeps_its_items_tokens_only():
    features = from_token_lists(TOKENS)
    sub = subset_features(features, np.array([4, 3]))
    assert sub.item_tokens(1) == ["genre=b", "genre=a", "word=x"]
    assert sub.item_tokens(2) == [NO_FEATURES]
    assert "year=1995" not in sub.vocab


def store_with_features(path, features=None, **meta):
    items = np.array([1, 2, 3, 4, 1, 2], np.int32)
    return write_store(
        path,
        items,
        np.arange(6),
        np.array([0, 3, 6]),
        np.array([-1, 10, 20, 30, 40]),
        np.array([0, 1]),
        {"source": "test"},
        item_features=features,
        item_features_meta=meta,
    )


def test_store_round_trip_and_old_stores_still_open(tmp_path):
    features = from_token_lists(TOKENS)
    store = store_with_features(tmp_path / "s", features, rows_unmatched=0)
    reopened = SequenceStore(store.path)
    assert reopened.meta["format_version"] == 2
    assert reopened.meta["item_features"]["vocab_size"] == len(features.vocab)
    loaded = reopened.item_features()
    assert loaded.vocab == features.vocab
    np.testing.assert_array_equal(loaded.tokens, features.tokens)
    np.testing.assert_array_equal(loaded.offsets, features.offsets)
    plain = store_with_features(tmp_path / "plain")
    meta = json.loads((plain.path / "meta.json").read_text())
    meta["format_version"] = 1  # as written before item features existed
    (plain.path / "meta.json").write_text(json.dumps(meta))
    old = SequenceStore(plain.path)
    assert not old.has_item_features and old.item_features() is None


def test_damaged_features_are_an_error_naming_the_store(tmp_path):
    store = store_with_features(tmp_path / "s", from_token_lists(TOKENS))
    np.save(store.path / "feature_offsets.npy", np.array([0, 0, 2, 3], np.int64))
    with pytest.raises(DataError, match="invalid item features: offsets"):
        SequenceStore(store.path).item_features()
    (store.path / "feature_vocab.json").write_text("not json")
    with pytest.raises(DataError, match="cannot read the item features"):
        SequenceStore(store.path).item_features()


def features_model(features, encoder="features", pooling="mean", **more):
    cfg = ModelConfig(d_model=8, n_layers=1, item_encoder=encoder, feature_pooling=pooling, **more)
    return build_model(cfg, features.n_items, 5, nnx.Rngs(0), item_features=features)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_item_vector_pools_its_token_rows(pooling):
    features = from_token_lists(TOKENS)
    model = features_model(features, pooling=pooling)
    rows = np.asarray(model.item_encoder.feature_table_OxD[...])
    table = np.asarray(model.item_table())
    for item in range(1, 5):
        ids = [features.vocab.index(t) for t in features.item_tokens(item)]
        pooled = rows[ids].sum(0) if pooling == "sum" else rows[ids].mean(0)
        np.testing.assert_allclose(table[item], pooled, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(table[0], 0.0)  # padding has no tokens
    np.testing.assert_allclose(model.item_encoder(jnp.array([4, 2])), table[[4, 2]])


def test_gradient_reaches_only_the_tokens_of_the_scored_items():
    features = from_token_lists(TOKENS)
    model = features_model(features)

    grads = nnx.grad(lambda encoder: encoder(jnp.array([2])).sum())(model.item_encoder)
    touched = np.flatnonzero(np.abs(np.asarray(grads["feature_table_OxD"][...])).sum(1))
    assert touched.tolist() == [features.vocab.index("genre=a")]


def test_parameter_count_does_not_grow_with_the_catalog():
    small = from_token_lists(TOKENS)
    double = from_token_lists(TOKENS * 2)  # twice the items, the same vocabulary
    assert double.vocab == small.vocab
    counts = {
        (encoder, n): count_params(features_model(f, encoder))
        for encoder in ("features", "features+id", "id")
        for n, f in (("small", small), ("double", double))
    }
    assert counts["features", "small"] == counts["features", "double"]
    assert counts["features", "small"].embedding == len(small.vocab) * 8 + 5 * 8  # + positions
    grown = counts["features+id", "double"].total - counts["features+id", "small"].total
    assert grown == 4 * 8  # the ID part grows by one row per item
    assert counts["id", "double"].total > counts["id", "small"].total


def test_features_encoder_needs_a_store_with_features():
    cfg = ModelConfig(d_model=8, n_layers=1, item_encoder="features")
    with pytest.raises(ConfigError, match="needs a store with item features"):
        build_model(cfg, 4, 5, nnx.Rngs(0))


def test_flops_count_the_token_sums_per_step():
    features = from_token_lists(TOKENS)  # 7 tokens for 4 items: 3 extra additions per step
    train_cfg = TrainConfig(batch_size=2)
    base = flops_per_token(ModelConfig(d_model=8, n_layers=1), 4, 5, train_cfg)
    cfg = ModelConfig(d_model=8, n_layers=1, item_encoder="features")
    with_features = flops_per_token(cfg, 4, 5, train_cfg, item_features=features)
    assert with_features.embedding == pytest.approx(2 * 3 * 8 / (2 * 5))
    assert with_features.backbone == base.backbone


# ---------------------------------------------------------------- transfer between domains


def test_progressive_unfreezing_points_and_gate():
    model = build_model(ModelConfig(d_model=8, n_layers=2), 6, 5, nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    cfg = TransferConfig(freeze="progressive", unfreeze_every=0.25)
    points = {
        jax.tree_util.keystr(p): float(v)
        for p, v in jax.tree_util.tree_flatten_with_path(unfreeze_points(params, cfg, 2))[0]
    }
    assert points["['item_encoder']['table_VxD'].value"] == 0.0
    assert points["['blocks'][1]['attn']['qkv']['kernel'].value"] == 0.25  # top block first
    assert points["['blocks'][0]['attn']['qkv']['kernel'].value"] == 0.5
    assert points["['final_norm']['scale'].value"] == 0.25
    frozen = unfreeze_points(params, TransferConfig(freeze="backbone"), 2)
    gated = gate(params, frozen, jnp.float32(1.0))
    assert np.all(np.asarray(gated["blocks"][0]["attn"]["qkv"]["kernel"][...]) == 0)
    np.testing.assert_array_equal(
        gated["item_encoder"]["table_VxD"][...], params["item_encoder"]["table_VxD"][...]
    )


@pytest.mark.parametrize(
    "section, message",
    [
        ({"transfer": {"freeze": "backbone"}}, "null unless train.init_from"),
        (
            {"init_from": "x", "transfer": {"unfreeze_every": 0.5}},
            "with train.transfer.freeze = 'progressive'",
        ),
        ({"init_from": "x", "transfer": {"l2_to_init": -1}}, "a number >= 0"),
        ({"init_from": "x", "transfer": {"freezee": "none"}}, "freezee"),
    ],
)
def test_bad_transfer_config_is_an_error(section, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, section, where="train")


def domain(path, seed, offset, topics):
    return synthesize_store(
        path,
        users=150,
        items=40,
        mean_length=16,
        seed=seed,
        feature_tokens=3,
        topic_tokens=4,
        topics=topics,
        item_id_offset=offset,
        progress=False,
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    source = domain(root / "source", seed=1, offset=0, topics=5)
    target = domain(root / "target", seed=2, offset=1000, topics=6)  # a bigger vocabulary
    config = tiny_config(
        root / "cache", f"data.dataset={source.path}", "model.item_encoder=features"
    )
    summary = train(config, root / "pre", progress=False)
    return root, source, target, summary


def fine_tune_config(root, target, *more):
    return tiny_config(
        root / "cache",
        f"data.dataset={target.path}",
        "model.item_encoder=features",
        f"train.init_from={root / 'pre'}",
        "train.tokens=600",
        *more,
    )


def test_fine_tuning_on_a_new_catalog_aligns_tokens_and_records_the_parent(pretrained):
    from srt_jax.train.build import build_run
    from srt_jax.train.run_eval import restore_best

    root, source, target, pre = pretrained
    config = fine_tune_config(root, target)
    start = build_run(config, progress=False).model
    saved = restore_best(root / "pre").params
    source_vocab, target_vocab = source.item_features().vocab, target.item_features().vocab
    shared = sorted(set(source_vocab[1:]) & set(target_vocab[1:]))
    assert shared and len(shared) < len(target_vocab) - 1  # most tokens, not all
    new_rows = np.asarray(start.item_encoder.feature_table_OxD[...])
    old_rows = np.asarray(saved["item_encoder"]["feature_table_OxD"][...])
    for token in shared:
        np.testing.assert_array_equal(
            new_rows[target_vocab.index(token)], old_rows[source_vocab.index(token)]
        )
    np.testing.assert_array_equal(
        start.blocks[0].attn.qkv.kernel[...], saved["blocks"][0]["attn"]["qkv"]["kernel"][...]
    )
    summary = train(config, root / "tuned", progress=False)
    assert summary["status"] == "done"
    record = summary["init_from"]
    assert record["items_matched"] == 0 and record["items_new"] == target.n_items
    assert record["tokens_matched"] == len(shared)
    assert record["tokens_new"] == len(target_vocab) - 1 - len(shared)
    assert record["parent_flops"] == pre["train_flops"]
    assert record["parent_params"] == pre["params_total"]
    assert record["parent_tokens"] == pre["train_tokens"]


def kernel(params):
    return np.asarray(params["blocks"][0]["ffn"]["up"]["kernel"][...])


def test_frozen_backbone_stays_at_the_pretrained_values(pretrained, tmp_path):
    from srt_jax.train.build import build_run
    from srt_jax.train.run_eval import restore_best

    root, _, target, _ = pretrained
    config = fine_tune_config(root, target, "train.transfer.freeze=backbone")
    start = nnx.state(build_run(config, progress=False).model, nnx.Param)
    train(config, tmp_path / "frozen", progress=False)
    tuned = restore_best(tmp_path / "frozen").params
    np.testing.assert_array_equal(kernel(tuned), kernel(restore_best(root / "pre").params))
    tokens = tuned["item_encoder"]["feature_table_OxD"][...]
    assert not np.array_equal(tokens, start["item_encoder"]["feature_table_OxD"][...])


def test_pull_to_init_keeps_the_backbone_closer_to_the_pretrained_values(pretrained, tmp_path):
    from srt_jax.train.run_eval import restore_best

    root, _, target, _ = pretrained
    pre = kernel(restore_best(root / "pre").params)
    distance = {}
    for name, more in (("plain", ()), ("pulled", ("train.transfer.l2_to_init=1000",))):
        train(fine_tune_config(root, target, *more), tmp_path / name, progress=False)
        tuned = kernel(restore_best(tmp_path / name).params)
        distance[name] = float(np.linalg.norm(tuned - pre))
    assert 0 < distance["pulled"] < 0.5 * distance["plain"]


def test_id_rows_follow_their_items_into_a_sub_catalog(pretrained, tmp_path):
    from srt_jax.data.subsets import subset_store
    from srt_jax.train.build import build_run
    from srt_jax.train.run_eval import restore_best

    root, source, _, _ = pretrained
    id_run = tmp_path / "id"
    train(tiny_config(root / "cache", f"data.dataset={source.path}"), id_run, progress=False)
    keep = np.zeros(source.n_items + 1, bool)
    keep[1::2] = True  # every other item: a new catalog of the same ids
    sub = subset_store(source, tmp_path / "sub", keep)
    config = tiny_config(root / "cache", f"data.dataset={sub.path}", f"train.init_from={id_run}")
    start = build_run(config, progress=False).model
    old = np.asarray(restore_best(id_run).params["item_encoder"]["table_VxD"][...])
    new = np.asarray(start.item_encoder.table_VxD[...])
    old_ids, new_ids = source.item_ids().tolist(), sub.item_ids().tolist()
    assert sub.n_items < source.n_items
    for row, item in enumerate(new_ids[1:], start=1):
        np.testing.assert_array_equal(new[row], old[old_ids.index(item)])


def test_features_fine_tune_from_an_id_run_is_an_error(pretrained, tmp_path):
    root, source, target, _ = pretrained
    id_run = tmp_path / "id"
    train(tiny_config(root / "cache", f"data.dataset={source.path}"), id_run, progress=False)
    config = tiny_config(
        root / "cache",
        f"data.dataset={target.path}",
        "model.item_encoder=features",
        f"train.init_from={id_run}",
    )
    with pytest.raises(ConfigError, match="has no feature vocabulary"):
        train(config, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def test_item_features_class_checks_its_arrays():
    vocab = ("[pad]", NO_FEATURES, "a=1")
    bad = ItemFeatures(vocab, np.array([2, 5], np.int32), np.array([0, 0, 1, 2]))
    with pytest.raises(DataError, match=r"token indices must lie in 1\.\.2"):
        bad.check("here", 2)


def test_fit_report_says_the_count_does_not_depend_on_the_catalog(pretrained):
    from srt_jax.scaling.loaders import load_run_dirs

    root, _, _, summary = pretrained
    assert summary["item_encoder"] == "features"
    assert summary["params_grow_with_catalog"] is False
    (note,) = load_run_dirs(root / "pre").notes
    assert "does not depend on the catalog size" in note

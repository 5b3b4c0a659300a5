"""Ranking and held-out loss against numpy brute force; item chunking; sampled candidates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srt_jax.config import EvalConfig, ModelConfig
from srt_jax.data.splits import make_split
from srt_jax.data.store import SequenceStore, write_store
from srt_jax.models.factory import build_model
from srt_jax.train.evaluate import BATCH_USERS, Evaluator, context_widths, rank_targets
from srt_jax.train.mesh import data_mesh

rng = np.random.default_rng(0)


def brute_force_ranks(hidden, table, targets, seen, candidates=None):
    """Pessimistic ranks over items 1..V-1 in plain numpy (unfiltered, filtered)."""
    ranks, filtered = [], []
    for u in range(len(targets)):
        scores = table @ hidden[u]
        t = targets[u]
        allowed = np.ones(len(table), bool)
        allowed[[0, t]] = False
        if candidates is not None:
            in_set = np.zeros(len(table), bool)
            in_set[candidates[u]] = True
            allowed &= in_set
        above = allowed & (scores >= scores[t])
        ranks.append(1 + above.sum())
        unseen = np.ones(len(table), bool)
        unseen[[s for s in seen[u] if s not in (0, t)]] = False
        filtered.append(1 + (above & unseen).sum())
    return np.array(ranks), np.array(filtered)


def random_case(U=7, V=23, D=5, H=6):
    hidden = rng.normal(size=(U, D)).astype(np.float32)
    table = rng.normal(size=(V, D)).astype(np.float32)
    targets = rng.integers(1, V, size=U).astype(np.int32)
    seen = rng.integers(0, V, size=(U, H)).astype(np.int32)
    seen[0, 0] = targets[0]  # a repeated target must not filter itself
    return hidden, table, targets, seen


@pytest.mark.parametrize("item_chunk", [23, 5, 1, 64])
def test_rank_targets_equals_brute_force_for_any_item_chunk(item_chunk):
    hidden, table, targets, seen = random_case()
    ranks, filtered = rank_targets(hidden, table, targets, seen, None, item_chunk)
    expected, expected_filtered = brute_force_ranks(hidden, table, targets, seen)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(filtered, expected_filtered)
    assert np.all(filtered <= ranks)


def test_ties_are_pessimistic_and_padding_is_never_a_candidate():
    # every item scores the same: the target ranks behind all n_items - 1 others
    table = np.ones((11, 3), np.float32)
    table[0] = 100.0  # the padding row would win if it were scored
    hidden = np.ones((2, 3), np.float32)
    targets = np.array([4, 10], np.int32)
    seen = np.array([[1, 2, 0], [0, 0, 0]], np.int32)
    ranks, filtered = rank_targets(hidden, table, targets, seen, None, 4)
    np.testing.assert_array_equal(ranks, [10, 10])
    np.testing.assert_array_equal(filtered, [8, 10])


def test_sampled_candidates_rank_only_among_the_candidates():
    hidden, table, targets, seen = random_case()
    candidates = np.stack(
        [rng.choice(np.setdiff1d(np.arange(1, 23), [t]), 8, replace=False) for t in targets]
    ).astype(np.int32)
    ranks, filtered = rank_targets(hidden, table, targets, seen, candidates, 4)
    expected, expected_filtered = brute_force_ranks(hidden, table, targets, seen, candidates)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(filtered, expected_filtered)
    assert ranks.max() <= 9


# --------------------------------------------------------------------------- the Evaluator


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    lengths = rng.integers(3, 30, size=40)
    items = rng.integers(1, 31, size=lengths.sum()).astype(np.int32)
    path = tmp_path_factory.mktemp("store") / "tiny"
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    write_store(
        path,
        items=items,
        timestamps=np.arange(len(items), dtype=np.int64),
        offsets=offsets,
        item_ids=np.arange(31),
        user_ids=np.arange(40),
        meta={"source": "test"},
    )
    return SequenceStore(path)


def _evaluator(store, eval_cfg, max_len=8, model_cfg=None):
    split = make_split(store, heldout_fraction=0.2, seed=0)
    model_cfg = model_cfg or ModelConfig(d_model=16, n_layers=1, n_heads=2)
    model = build_model(model_cfg, store.n_items, max_len, nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    evaluator = Evaluator(
        model,
        store.items,
        split,
        n_items=store.n_items,
        max_len=max_len,
        eval_cfg=eval_cfg,
        mesh=data_mesh(1),
    )
    return model, params, split, evaluator


def _numpy_context(items, start, pos, max_len):
    context = items[max(start, pos - max_len) : pos]
    return np.concatenate([np.zeros(max_len - len(context), np.int32), context]).astype(np.int32)


def _full_window_ranks(model, store, targets, max_len):
    """Brute-force (unfiltered, filtered) ranks of ``targets`` from the model's full forward
    over each target's left-padded max_len window."""
    model.eval()
    items = np.asarray(store.items)
    spans = list(zip(targets.context_start, targets.target_pos, strict=True))
    inputs = np.stack([_numpy_context(items, s, p, max_len) for s, p in spans])
    hidden = np.asarray(model(jnp.asarray(inputs))[:, -1])
    seen = [items[s:p] for s, p in spans]
    table = np.asarray(model.item_table())
    return brute_force_ranks(hidden, table, items[targets.target_pos], seen)


@pytest.mark.parametrize("batch_users", [5, 64])
def test_evaluator_full_ranking_equals_brute_force(tiny_store, batch_users):
    max_len = 8
    model, params, split, evaluator = _evaluator(
        tiny_store, EvalConfig(batch_users=batch_users, item_chunk=7), max_len
    )
    ranks, filtered = evaluator.ranks(params, "test")
    expected, expected_filtered = _full_window_ranks(model, tiny_store, split.test, max_len)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(filtered, expected_filtered)
    metrics = evaluator.metrics(params, "test")
    assert metrics["hr@5"] == pytest.approx(np.mean(expected <= 5))
    assert metrics["hr@5_filtered"] == pytest.approx(np.mean(expected_filtered <= 5))


def test_users_per_call_default_to_the_platforms_measured_choice(tiny_store):
    _, _, _, evaluator = _evaluator(tiny_store, EvalConfig())
    assert evaluator.protocol()["batch_users"] == BATCH_USERS["cpu"] == 64
    _, _, _, evaluator = _evaluator(tiny_store, EvalConfig(batch_users=5))
    assert evaluator.protocol()["batch_users"] == 5


def test_heldout_loss_equals_brute_force(tiny_store):
    max_len = 8
    model, params, split, evaluator = _evaluator(tiny_store, EvalConfig(batch_users=6), max_len)
    model.eval()
    items = np.asarray(tiny_store.items)
    table = np.asarray(model.item_table())
    total, count = 0.0, 0
    for s, e in zip(split.heldout.start, split.heldout.end, strict=True):
        for f in range(e, s + 1, -max_len):  # stride windows ending at e, e - L, ...
            window = items[max(s, f - max_len - 1) : f]
            window = np.concatenate([np.zeros(max_len + 1 - len(window), np.int32), window])
            hidden = np.asarray(model(jnp.asarray(window[None, :-1]))[0])
            for slot in range(max_len):
                if window[slot] == 0:  # a target counts where its input is a real item
                    continue
                logits = table[1:] @ hidden[slot]
                top = logits.max()
                target = window[slot + 1]
                total += np.log(np.exp(logits - top).sum()) + top - logits[target - 1]
                count += 1
    assert count == split.heldout.n_targets
    assert evaluator.heldout_loss(params) == pytest.approx(total / count, rel=1e-5)


def test_sampled_protocol_is_seeded_and_labelled(tiny_store):
    cfg = EvalConfig(sampled_candidates=10, candidate_seed=3, batch_users=8)
    _, params, _, evaluator = _evaluator(tiny_store, cfg)
    first, _ = evaluator.ranks(params, "valid")
    again, _ = _evaluator(tiny_store, cfg)[3].ranks(params, "valid")
    np.testing.assert_array_equal(first, again)
    assert first.max() <= 11
    protocol = evaluator.protocol()
    assert protocol["ranking"] == "sampled"
    assert protocol["sampled_candidates"] == 10 and protocol["candidate_seed"] == 3
    full = _evaluator(tiny_store, EvalConfig())[3].protocol()
    assert full["ranking"] == "full" and full["candidate_seed"] is None


def test_compiled_evaluation_equals_jitted(tiny_store):
    _, params, _, evaluator = _evaluator(tiny_store, EvalConfig(batch_users=8))
    before = evaluator.ranks(params, "valid"), evaluator.heldout_loss(params)
    assert evaluator.compile() > 0
    after = evaluator.ranks(params, "valid"), evaluator.heldout_loss(params)
    np.testing.assert_array_equal(before[0][0], after[0][0])
    assert before[1] == after[1]
    jax.block_until_ready(params)


def test_context_widths_double_from_16_and_end_at_max_len():
    assert context_widths(8) == [8]
    assert context_widths(40) == [16, 32, 40]
    assert context_widths(200) == [16, 32, 64, 128, 200]
    assert context_widths(256) == [16, 32, 64, 128, 256]


@pytest.mark.parametrize(
    "model_cfg",
    [
        ModelConfig(d_model=16, n_layers=2, n_heads=2),
        ModelConfig(d_model=16, n_layers=2, n_heads=2, positions="rope"),
        ModelConfig(d_model=16, n_layers=2, backbone="mamba"),
    ],
    ids=["learned", "rope", "mamba"],
)
def test_ranking_at_shorter_context_widths_equals_the_full_window(tiny_store, model_cfg):
    """Histories of 3-30 items at max_len 40: chunks at widths 16, 32 and 40, every real item
    at its full-window position; the ranks are those of the full left-padded windows."""
    max_len = 40
    model, params, split, evaluator = _evaluator(
        tiny_store, EvalConfig(batch_users=4), max_len, model_cfg
    )
    evaluator.compile()
    plan = evaluator._plans["test"]
    assert set(plan.contexts) == {16, 32}  # contexts of at most 29 items, 4 users a chunk
    ranks, filtered = evaluator.ranks(params, "test")
    expected, expected_filtered = _full_window_ranks(model, tiny_store, split.test, max_len)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(filtered, expected_filtered)

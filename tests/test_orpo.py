"""ORPO (train.objective = orpo) against numpy; its rejected-item rules; the targets' ratings
in the batch; lambda = 0 equals the plain objective exactly; ORPO after train.init_from."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loop import tiny_config
from test_step import batches, make_step

from srt_jax.config import ORPOConfig, TrainConfig, from_dict
from srt_jax.data.sampler import WindowSampler
from srt_jax.data.splits import Segments
from srt_jax.errors import ConfigError
from srt_jax.train.loop import train
from srt_jax.train.orpo import log_odds, orpo_term, rejected_items

N_ITEMS, D = 6, 4
rng = np.random.default_rng(0)
HIDDEN = rng.normal(size=(2, 3, D))
TABLE = rng.normal(size=(N_ITEMS + 1, D))
TARGETS = np.array([[0, 2, 5], [1, 6, 3]], np.int32)
REJECTED = np.array([[4, 3, 1], [2, 2, 6]], np.int32)
PAIRS = np.array([[False, True, True], [True, True, False]])


def orpo_numpy(hidden, table, targets, rejected, pairs):
    """The term's sum over pairs and its gradients (float64, by the chain rule by hand)."""
    items = table[1:]
    loss, d_hidden, d_items = 0.0, np.zeros_like(hidden), np.zeros_like(items)
    for b, l in zip(*np.nonzero(pairs), strict=True):
        logits = items @ hidden[b, l]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        c, r = targets[b, l] - 1, rejected[b, l] - 1
        ratio = np.log(p[c] / (1 - p[c])) - np.log(p[r] / (1 - p[r]))
        loss += np.log1p(np.exp(-ratio))
        # d log odds(y) / d logits = (onehot(y) - p) / (1 - p_y)
        d_ratio = (np.eye(len(p))[c] - p) / (1 - p[c]) - (np.eye(len(p))[r] - p) / (1 - p[r])
        d_logits = -1.0 / (1.0 + np.exp(ratio)) * d_ratio
        d_hidden[b, l] = d_logits @ items
        d_items += np.outer(d_logits, hidden[b, l])
    return loss, d_hidden, np.concatenate([np.zeros((1, table.shape[1])), d_items])


def test_orpo_term_and_its_gradient_match_numpy():
    def total(hidden, table):
        return orpo_term(hidden, table, TARGETS, REJECTED, PAIRS, hard=False).loss_sum

    h, t = jnp.asarray(HIDDEN, jnp.float32), jnp.asarray(TABLE, jnp.float32)
    value, (d_hidden, d_table) = jax.value_and_grad(total, argnums=(0, 1))(h, t)
    expected, hand_hidden, hand_table = orpo_numpy(HIDDEN, TABLE, TARGETS, REJECTED, PAIRS)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(d_hidden, hand_hidden, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d_table, hand_table, rtol=1e-4, atol=1e-6)
    term = orpo_term(h, t, TARGETS, REJECTED, PAIRS, hard=False)
    assert float(term.pairs) == 4


def test_hard_rejects_the_highest_scored_other_item():
    logits = np.einsum("bld,vd->blv", HIDDEN, TABLE[1:])
    masked = np.where(np.arange(N_ITEMS) == TARGETS[..., None] - 1, -np.inf, logits)
    hardest = masked.argmax(-1) + 1
    expected, *_ = orpo_numpy(HIDDEN, TABLE, TARGETS, hardest, PAIRS)
    h, t = jnp.asarray(HIDDEN, jnp.float32), jnp.asarray(TABLE, jnp.float32)
    term = orpo_term(h, t, TARGETS, np.zeros_like(TARGETS), PAIRS, hard=True)
    np.testing.assert_allclose(term.loss_sum, expected, rtol=1e-5)


def test_log_odds_is_finite_at_p_one():
    np.testing.assert_allclose(log_odds(jnp.log(0.25)), np.log(1 / 3), rtol=1e-6)
    assert np.isfinite(log_odds(jnp.float32(0.0)))


@pytest.mark.parametrize("rule", ["uniform", "popularity"])
def test_drawn_rejected_items_are_real_items_other_than_the_target(rule):
    targets = jnp.asarray(np.random.default_rng(1).integers(1, 5, (64, 32)), jnp.int32)
    mask = jnp.ones_like(targets, bool)
    log_q = jnp.log(jnp.array([0.0, 0.7, 0.1, 0.1, 0.1]))  # item 1 is drawn most
    rejected, pairs = rejected_items(
        ORPOConfig(rejected=rule), jax.random.key(0), targets, mask, 4, log_q_V=log_q
    )
    rejected, pairs = np.asarray(rejected), np.asarray(pairs)
    assert set(np.unique(rejected)) == {1, 2, 3, 4}
    assert not np.any(pairs & (rejected == np.asarray(targets)))
    # lost only where both popularity draws hit the target: E[q_t^2] = 0.13 here
    assert pairs.mean() > (0.8 if rule == "popularity" else 0.99)


def test_disliked_rule_pairs_liked_targets_with_a_disliked_item_of_the_window():
    targets = jnp.array([[3, 5, 7, 9], [2, 4, 6, 8], [1, 2, 0, 0]], jnp.int32)
    mask = targets != 0
    ratings = jnp.array([[5.0, 1.0, 4.0, 2.0], [4.0, 4.0, 5.0, 3.0], [1.0, 2.0, 0.0, 0.0]])
    rejected, pairs = rejected_items(
        ORPOConfig(rejected="disliked"), jax.random.key(0), targets, mask, 9, ratings_BxL=ratings
    )
    rejected, pairs = np.asarray(rejected), np.asarray(pairs)
    assert rejected[0, 0] in (5, 9) and len(set(rejected[0])) == 1  # one per window
    np.testing.assert_array_equal(pairs[0], [True, False, True, False])  # liked targets
    assert not pairs[1].any()  # nothing disliked in the window
    assert not pairs[2].any()  # nothing liked


def test_ratings_travel_into_the_batch_at_the_targets():
    items = np.arange(1, 13, dtype=np.int32)
    ratings = np.arange(12, dtype=np.float32) / 2
    segments = Segments(np.array([0, 5]), np.array([5, 12]), np.array([0, 1]))
    sampler = WindowSampler(
        items, segments, batch_size=4, max_len=4, seed=0, prefetch=0, ratings=ratings
    )
    batch = sampler.batch(0)
    at = batch.targets - 1  # item i sits at store position i - 1
    np.testing.assert_array_equal(batch.ratings, np.where(batch.mask, ratings[at], 0))
    assert batch.truncated(1).ratings[batch.truncated(1).mask].size == 1


def test_weight_zero_equals_the_next_item_objective_exactly():
    data = batches(3)
    plain = make_step()
    orpo = make_step(
        TrainConfig(
            learning_rate=1e-2,
            warmup_fraction=0.0,
            objective="orpo",
            orpo=ORPOConfig(weight=0.0, rejected="hard"),
        )
    )
    state_a, state_b = plain.init_state(), orpo.init_state()
    for k, batch in enumerate(data):
        state_a, m_a = plain(state_a, plain.put_batch(batch), k, 0)
        state_b, m_b = orpo(state_b, orpo.put_batch(batch), k, 0)
        assert float(m_a["loss_sum"]) == float(m_b["loss_sum"])
        assert float(m_a["grad_norm"]) == float(m_b["grad_norm"])
        assert float(m_b["orpo"]) > 0
    for a, b in zip(
        jax.tree.leaves(state_a["params"]), jax.tree.leaves(state_b["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_orpo_raises_the_log_odds_ratio():
    data = batches(12)
    cfg = TrainConfig(
        learning_rate=1e-2,
        warmup_fraction=0.0,
        objective="orpo",
        orpo=ORPOConfig(weight=1.0, rejected="uniform"),
    )
    step = make_step(cfg)
    state, ratios = step.init_state(), []
    for k, batch in enumerate(data):
        state, metrics = step(state, step.put_batch(batch), k, 0)
        ratios.append(float(metrics["log_odds_ratio"]))
    assert np.mean(ratios[-3:]) > np.mean(ratios[:3]) + 0.5


@pytest.mark.parametrize(
    "section, message",
    [
        ({"objective": "orpo", "orpo": {"weight": -1.0}}, "train.orpo.weight"),
        ({"orpo": {"weight": 1.0}}, "train.orpo is a orpo key"),
        ({"objective": "orpo", "orpo": {"rejected": "worst"}}, "train.orpo.rejected"),
        ({"objective": "dpo"}, "train.objective"),
    ],
)
def test_bad_orpo_config_is_an_error(section, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, section, where="train")


# ------------------------------------------------------------------ a fine-tuning stage


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("orpo")
    train(tiny_config(root / "cache"), root / "base", progress=False)
    return root


def test_orpo_fine_tunes_from_a_run_and_records_it(base_run):
    from flax import nnx

    from srt_jax.train.build import build_run
    from srt_jax.train.run_eval import restore_best

    more = ("train.objective=orpo", "train.orpo.rejected=popularity", "train.tokens=600")
    config = tiny_config(base_run / "cache", f"train.init_from={base_run / 'base'}", *more)
    source = restore_best(base_run / "base")
    start = nnx.state(build_run(config, progress=False).model, nnx.Param)
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(source.params), strict=True):
        np.testing.assert_array_equal(a, b)
    summary = train(config, base_run / "orpo", progress=False)
    assert summary["init_from"]["step"] == source.step
    assert summary["init_from"]["items_matched"] == summary["dataset"]["n_items"]
    assert summary["protocol"]["objective"] == "orpo"
    assert str(base_run / "base") in summary["protocol"]["init_from"]
    lines = (base_run / "orpo" / "metrics.jsonl").read_text().splitlines()
    train_lines = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    assert all(np.isfinite(r["orpo"]) and "log_odds_ratio" in r for r in train_lines)


@pytest.mark.parametrize(
    "more, message",
    [
        (("train.init_from={root}/nowhere",), "is not a run directory"),
        (("train.init_from={root}/base", "model.d_model=32"), "does not match this run's"),
        (
            ("train.init_from={root}/base", "model.backbone=mamba", "model.n_heads=null"),
            "is a transformer run",
        ),
        (("train.objective=orpo", "train.orpo.rejected=disliked"), "needs ratings"),
    ],
)
def test_bad_fine_tuning_stage_is_an_error_and_writes_nothing(base_run, more, message):
    config = tiny_config(base_run / "cache", *(m.format(root=base_run) for m in more))
    out = base_run / "refused"
    with pytest.raises(ConfigError, match=message):
        train(config, out, progress=False)
    assert not out.exists()


def test_disliked_orpo_trains_on_a_store_with_ratings(base_run):
    from srt_jax.data.store import SequenceStore, write_store

    (synthetic,) = (base_run / "cache" / "stores").glob("synthetic-*")
    store = SequenceStore(synthetic)
    ratings = np.random.default_rng(0).integers(1, 6, store.n_interactions).astype(np.float32)
    rated = base_run / "rated"
    write_store(
        rated,
        np.asarray(store.items),
        np.asarray(store.timestamps),
        store.offsets,
        store.item_ids(),
        store.user_ids(),
        {"source": "synthetic, random ratings"},
        ratings=ratings,
    )
    config = tiny_config(
        base_run / "cache",
        f"data.dataset={rated}",
        "train.objective=orpo",
        "train.orpo.rejected=disliked",
        "train.orpo.weight=1.0",
        "train.tokens=600",
    )
    summary = train(config, base_run / "disliked", progress=False)
    lines = (base_run / "disliked" / "metrics.jsonl").read_text().splitlines()
    train_lines = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    assert summary["status"] == "done"
    assert all(np.isfinite(r["orpo"]) and r["orpo"] > 0 for r in train_lines)

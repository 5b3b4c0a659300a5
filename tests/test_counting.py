"""Parameter split and analytic FLOPs, the latter against XLA's cost analysis."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from srt_jax.config import ModelConfig, TrainConfig
from srt_jax.models.counting import count_params, flops_per_token, six_n_d
from srt_jax.models.factory import build_model
from srt_jax.train.losses import compute_loss, full_softmax_loss

XLA_TOLERANCE = 0.08
"""XLA counts every elementwise op (LayerNorm, GELU, softmax, logsumexp, residual adds,
hashing) that the analytic count leaves out; for d_model >= 64 these are O(d + d_ff + L + V)
per position against O(d^2 + L d + V d) for the matmuls, 1-5% on the shapes below. So XLA's
figure must lie in [analytic, analytic x 1.08]: below means a counted matmul is not computed,
above means an uncounted one is."""


def test_param_split_matches_the_parameter_tree_and_hand_count():
    d, d_ff, n_items, max_len = 32, 48, 100, 20
    cfg = ModelConfig(d_model=d, d_ff=d_ff, n_layers=3, n_heads=4)
    model = build_model(cfg, n_items, max_len, nnx.Rngs(0))
    counts = count_params(model)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert counts.total == sum(leaf.size for leaf in leaves)
    assert counts.total == counts.embedding + counts.non_embedding
    assert counts.embedding == (n_items + 1) * d + max_len * d
    per_layer = (d * 3 * d + 3 * d) + (d * d + d) + (d * d_ff + d_ff) + (d_ff * d + d) + 4 * d
    assert counts.non_embedding == 3 * per_layer + 2 * d  # + final LayerNorm (pre-LN)


@pytest.mark.parametrize(
    "changes, embedding",
    [
        ({"tie_embeddings": False}, 2 * 101 * 32 + 20 * 32),
        ({"item_encoder": "hashed", "hash_buckets": 64}, 64 * 32 + 20 * 32),
        ({"positions": "rope", "norm": "post"}, 101 * 32),
    ],
)
def test_embedding_classification_and_abstract_models(changes, embedding):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, **changes)
    abstract = nnx.eval_shape(lambda: build_model(cfg, 100, 20, nnx.Rngs(0)))
    counts = count_params(abstract)
    assert counts.embedding == embedding
    assert counts == count_params(build_model(cfg, 100, 20, nnx.Rngs(0)))


def test_flops_formula_by_hand():
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2)
    full = flops_per_token(cfg, 1682, 50, TrainConfig())
    assert full.backbone == 2 * (2 * 64 * 192 + 2 * 64 * 64 + 2 * 2 * 64 * 256)
    assert full.attention == 2 * (2 * 2 * 50 * 64)
    assert full.output == 2 * 64 * 1682 and full.embedding == 0
    assert full.total == 3 * full.forward == 3 * (full.backbone + full.attention + full.output)
    sampled = flops_per_token(cfg, 1682, 50, TrainConfig(loss="sampled_softmax", num_negatives=99))
    assert sampled.output == 2 * 64 * 100
    assert flops_per_token(cfg, 1682, 50, TrainConfig(loss="bce")).output == 2 * 64 * 2
    hashed = flops_per_token(
        ModelConfig(item_encoder="hashed", n_hashes=3), 999, 50, TrainConfig(batch_size=4)
    )
    assert hashed.embedding == 2 * 64 + 1000 * 2 * 64 / (4 * 50)
    assert six_n_d(1000, 1e6) == 6e9


def xla_forward_flops_per_position(model_cfg, train_cfg, n_items, max_len):
    """XLA's flop count of the compiled forward pass (model + loss), per position."""
    model = build_model(model_cfg, n_items, max_len, nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)

    def forward(state, inputs, targets, mask, key):
        m = nnx.merge(graphdef, state)
        if train_cfg.loss == "full_softmax":  # one chunk: XLA counts a loop body only once
            return full_softmax_loss(
                m(inputs), m.item_table(), targets, mask, max_chunk_logits=2**62
            )
        return compute_loss(m(inputs), m.item_table(), targets, mask, train_cfg=train_cfg, key=key)

    batch = jnp.ones((train_cfg.batch_size, max_len), jnp.int32)
    compiled = jax.jit(forward).lower(state, batch, batch, batch > 0, jax.random.key(0)).compile()
    return compiled.cost_analysis()["flops"] / batch.size


@pytest.mark.parametrize(
    "model_changes, train_changes, n_items, max_len",
    [
        ({}, {}, 1682, 50),
        ({"d_model": 128, "n_heads": 4, "n_layers": 3}, {"loss": "sampled_softmax"}, 20_000, 64),
        (
            {"positions": "rope", "norm": "post", "d_ff": 96},
            {"loss": "sampled_softmax", "num_negatives": 30},
            500,
            40,
        ),
        ({"item_encoder": "hashed", "tie_embeddings": False}, {"loss": "gbce"}, 1682, 50),
        ({}, {"loss": "bce"}, 1682, 50),
    ],
)
def test_forward_flops_agree_with_xla_cost_analysis(model_changes, train_changes, n_items, max_len):
    model_cfg = ModelConfig(**{"d_model": 64, "n_layers": 2, "n_heads": 2, **model_changes})
    train_cfg = TrainConfig(**{"batch_size": 16, **train_changes})
    analytic = flops_per_token(model_cfg, n_items, max_len, train_cfg).forward
    xla = xla_forward_flops_per_position(model_cfg, train_cfg, n_items, max_len)
    assert analytic <= xla <= analytic * (1 + XLA_TOLERANCE)

"""SeqRecTransformer: shapes, dtypes, gradients, causality, padding, options."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srt_jax.config import ModelConfig
from srt_jax.errors import ConfigError
from srt_jax.models.counting import count_params
from srt_jax.models.factory import build_model
from srt_jax.models.item_encoders import hash_buckets_of
from srt_jax.models.layers import compute_dtype, fused_attention
from srt_jax.models.transformer import Dropout, SeqRecTransformer, attention_bias

N_ITEMS, MAX_LEN, B = 40, 8, 3
SMALL = ModelConfig(d_model=16, n_layers=2, n_heads=2, dropout=0.1)


def make(seed: int = 0, n_items: int = N_ITEMS, **changes) -> SeqRecTransformer:
    model = build_model(dataclasses.replace(SMALL, **changes), n_items, MAX_LEN, nnx.Rngs(seed))
    model.eval()
    return model


def random_inputs(seed: int = 0, n_pad: int = 0) -> jax.Array:
    """``B x MAX_LEN`` items in 1..N_ITEMS, the first ``n_pad`` columns padding."""
    items = np.random.default_rng(seed).integers(1, N_ITEMS + 1, size=(B, MAX_LEN))
    items[:, :n_pad] = 0
    return jnp.asarray(items, dtype=jnp.int32)


VARIANTS = [
    {},
    {"norm": "post"},
    {"positions": "rope"},
    {"tie_embeddings": False},
    {"item_encoder": "hashed", "hash_buckets": 32, "n_hashes": 3},
]


@pytest.mark.parametrize(
    "changes", VARIANTS, ids=lambda c: ",".join(map(str, c.values())) or "default"
)
def test_shapes_and_finite_nonzero_gradients(changes):
    model = make(**changes)
    model.train()
    inputs = random_inputs(n_pad=2)
    targets = jnp.roll(inputs, -1, axis=1)

    def loss_fn(m):
        hidden = m(inputs, rngs=nnx.Rngs(dropout=1))
        logits = hidden @ m.item_table().T
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1).mean()

    hidden = model(inputs)
    assert hidden.shape == (B, MAX_LEN, SMALL.d_model) and hidden.dtype == jnp.float32
    assert model.item_table().shape == (N_ITEMS + 1, SMALL.d_model)
    grads = nnx.grad(loss_fn)(model)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.isfinite(g).all()), path
        assert float(jnp.abs(g).max()) > 0, path


@pytest.mark.parametrize("changes", VARIANTS[:3], ids=["pre", "post", "rope"])
@pytest.mark.parametrize("n_pad", [0, 3])
def test_causality_future_inputs_never_change_past_outputs(changes, n_pad):
    model = make(**changes)
    inputs = random_inputs(n_pad=n_pad)
    base = model(inputs)
    rng = np.random.default_rng(1)
    for t in range(MAX_LEN - 1):
        changed = np.array(inputs)
        changed[:, t + 1 :] = rng.integers(1, N_ITEMS + 1, size=(B, MAX_LEN - t - 1))
        out = model(jnp.asarray(changed))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("changes", VARIANTS[:3], ids=["pre", "post", "rope"])
def test_padding_never_affects_real_positions(changes):
    model = make(**changes)
    padded = random_inputs(n_pad=3)
    base = model(padded)
    # The padding item's vector does not matter ...
    table = model.item_encoder.table_VxD
    table[...] = table[...].at[0].set(100.0)
    np.testing.assert_allclose(model(padded)[:, 3:], base[:, 3:], atol=1e-5)
    # ... and a left-padded window equals the same items unpadded at the same positions.
    short = padded[:, 3:]
    positions = jnp.broadcast_to(jnp.arange(MAX_LEN - 3), short.shape)
    padded_positions = jnp.concatenate([jnp.zeros((B, 3), jnp.int32), positions], axis=1)
    np.testing.assert_allclose(
        model(short, positions), model(padded, padded_positions)[:, 3:], atol=1e-5
    )


def test_rope_needs_an_even_head_size():
    with pytest.raises(ConfigError, match="even head size") as err:
        make(d_model=18, n_heads=2, positions="rope")
    assert err.value.key == "model.positions"


def test_rope_is_relative_and_learned_is_absolute():
    inputs = random_inputs()
    shifted = jnp.broadcast_to(jnp.arange(MAX_LEN) + 5, inputs.shape)
    rope_model = make(positions="rope")
    np.testing.assert_allclose(rope_model(inputs, shifted), rope_model(inputs), atol=1e-4)
    learned = make()
    shifted_within_table = jnp.broadcast_to(jnp.arange(MAX_LEN) // 2, inputs.shape)
    assert not np.allclose(learned(inputs, shifted_within_table), learned(inputs), atol=1e-3)
    assert (
        count_params(learned).embedding - count_params(rope_model).embedding
        == MAX_LEN * SMALL.d_model
    )


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_wiring_pre_and_post_layernorm(norm):
    model = make(norm=norm)
    block = model.blocks[0]
    x = jax.random.normal(jax.random.key(0), (B, MAX_LEN, SMALL.d_model))
    bias = attention_bias(random_inputs(n_pad=2))
    positions = jnp.broadcast_to(jnp.arange(MAX_LEN), (B, MAX_LEN))

    def attn(h):
        return block.attn(h, bias, positions)

    if norm == "pre":
        h = x + attn(block.attn_norm(x))
        expected = h + block.ffn(block.ffn_norm(h))
    else:
        h = block.attn_norm(x + attn(x))
        expected = block.ffn_norm(h + block.ffn(h))
    np.testing.assert_allclose(block(x, bias, positions, None), expected, atol=1e-5)
    assert (model.final_norm is None) == (norm == "post")
    assert (model.embed_norm is None) == (norm == "pre")


def test_tied_and_separate_output_tables():
    tied, separate = make(), make(tie_embeddings=False)
    np.testing.assert_array_equal(tied.item_table(), tied.item_encoder.table())
    assert not np.allclose(separate.item_table(), separate.item_encoder.table())
    extra = count_params(separate).embedding - count_params(tied).embedding
    assert extra == (N_ITEMS + 1) * SMALL.d_model


def test_hashed_encoder_params_do_not_grow_with_catalog():
    hashed = {"item_encoder": "hashed", "hash_buckets": 64, "n_hashes": 2}
    small, large = make(n_items=50, **hashed), make(n_items=50_000, **hashed)
    assert count_params(small) == count_params(large)
    assert count_params(make(n_items=50)).total < count_params(make(n_items=50_000)).total
    assert large.item_table().shape == (50_001, SMALL.d_model)


def test_hash_buckets_are_the_documented_function():
    ids = np.array([0, 1, 2, 12345, 2**31 + 7])
    expected = [
        [
            (((0x9E3779B1 * (2 * i + 1) % 2**32) * int(x) + 0x85EBCA6B * (i + 1)) % 2**32 >> 8)
            % 1000
            for i in range(3)
        ]
        for x in ids
    ]
    got = jax.jit(hash_buckets_of, static_argnums=(1, 2))(jnp.asarray(ids, jnp.uint32), 3, 1000)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == jnp.int32


def test_hashed_item_vector_is_sum_of_its_buckets():
    model = make(item_encoder="hashed", hash_buckets=32, n_hashes=3)
    encoder = model.item_encoder
    ids = jnp.array([1, 7, N_ITEMS])
    rows = encoder.buckets_MxD[...][hash_buckets_of(ids, 3, 32)]
    np.testing.assert_allclose(encoder(ids), rows.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(model.item_table()[ids], rows.sum(axis=1), rtol=1e-6)


def test_dropout_follows_train_and_eval_modes():
    model = make(dropout=0.5)
    inputs = random_inputs()
    np.testing.assert_array_equal(model(inputs), model(inputs))
    model.train()
    assert not np.allclose(model(inputs), model(inputs))
    np.testing.assert_array_equal(
        model(inputs, rngs=nnx.Rngs(dropout=3)), model(inputs, rngs=nnx.Rngs(dropout=3))
    )


def test_bfloat16_compute_keeps_float32_params():
    model = make(dtype="bfloat16")
    hidden = jax.jit(lambda m, x: m(x))(model, random_inputs(n_pad=2))
    assert hidden.dtype == jnp.bfloat16 and bool(jnp.isfinite(hidden).all())
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    reference = make()(random_inputs(n_pad=2))
    np.testing.assert_allclose(hidden.astype(jnp.float32), reference, atol=0.1)


def test_attention_bias_masks_future_and_padding_keys_but_never_the_diagonal():
    bias = np.asarray(attention_bias(jnp.array([[0, 0, 5, 6]])))[0, 0]
    allowed = bias == 0.0
    np.testing.assert_array_equal(allowed, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
    assert (bias[~allowed] <= -1e29).all()


def test_byte_dropout_keeps_its_quantised_rate_and_the_mean():
    dropout = Dropout(0.2, rngs=nnx.Rngs(0))
    x = jnp.ones((401, 999))  # an element count that is not a multiple of 4
    y = dropout(x)
    kept = np.asarray(y) != 0
    assert abs(kept.mean() - 205 / 256) < 0.003
    np.testing.assert_allclose(np.asarray(y)[kept], 256 / 205, rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.005
    assert not np.array_equal(np.asarray(dropout(x)) != 0, kept)
    np.testing.assert_array_equal(
        dropout(x, rngs=nnx.Rngs(dropout=1)), dropout(x, rngs=nnx.Rngs(dropout=1))
    )
    dropout.eval()
    np.testing.assert_array_equal(dropout(x), x)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("changes", VARIANTS[:3], ids=["pre", "post", "rope"])
def test_last_hidden_equals_the_full_forward_at_the_last_position(changes, n_layers):
    model = make(n_layers=n_layers, **changes)
    inputs = random_inputs(seed=3, n_pad=2)
    last = model.last_hidden(inputs)
    assert last.shape == (B, SMALL.d_model)
    np.testing.assert_allclose(last, model(inputs)[:, -1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("changes", VARIANTS[:3], ids=["pre", "post", "rope"])
def test_fused_attention_equals_the_einsum_form(changes):
    einsum, fused = make(attention="einsum", **changes), make(attention="fused", **changes)
    inputs = random_inputs(seed=4, n_pad=3)
    segments = jnp.asarray(np.repeat([[0, 0, 0, 1, 1, 2, 2, 2]], B, axis=0))  # packed rows
    for kwargs in ({}, {"segments_BxL": segments}):
        np.testing.assert_allclose(
            fused(inputs, **kwargs), einsum(inputs, **kwargs), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(
        fused.last_hidden(inputs), einsum.last_hidden(inputs), rtol=1e-5, atol=1e-5
    )

    def grads(model):
        def loss(m):
            return jnp.sum(jnp.sin(m(inputs, segments_BxL=segments)))

        return jax.tree.leaves(nnx.grad(loss)(model))

    for g, e in zip(grads(fused), grads(einsum), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))


def test_auto_dtype_and_attention_are_float32_and_einsum_on_a_cpu():
    assert compute_dtype("auto") == jnp.float32 and compute_dtype("bfloat16") == jnp.bfloat16
    assert not fused_attention("auto") and fused_attention("fused")
    model = make()
    assert model.dtype == jnp.float32 and not model.blocks[0].attn.fused

"""Mamba4Rec backbone and selective scan: reference math, causality, padding, recurrent
serving, scan modes, gradients, counting, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srt_jax.config import TrainConfig, load_config
from srt_jax.errors import ConfigError
from srt_jax.models.counting import count_params, flops_per_token
from srt_jax.models.factory import build_model, shape_label
from srt_jax.models.mamba import Mamba4Rec
from srt_jax.models.selective_scan import selective_scan, selective_scan_step
from srt_jax.train.losses import full_softmax_loss
from srt_jax.train.optim import decay_mask

N_ITEMS, MAX_LEN, B = 40, 8, 3
SMALL = ["model.backbone=mamba", "model.d_model=16", "model.mamba.d_state=4", "model.dropout=0.1"]


def mamba_cfg(*overrides: str):
    return load_config(None, [*SMALL, *overrides]).model


def make(*overrides: str, seed: int = 0) -> Mamba4Rec:
    model = build_model(mamba_cfg(*overrides), N_ITEMS, MAX_LEN, nnx.Rngs(seed))
    model.eval()
    return model


@nnx.jit
def forward(model: Mamba4Rec, inputs: jax.Array) -> jax.Array:
    """``model(inputs)`` compiled once per model and shape (eager scans recompile every call)."""
    return model(inputs)


def random_inputs(seed: int = 0, n_pad: int = 0, length: int = MAX_LEN) -> jax.Array:
    items = np.random.default_rng(seed).integers(1, N_ITEMS + 1, size=(B, length))
    items[:, :n_pad] = 0
    return jnp.asarray(items, dtype=jnp.int32)


def reference_scan(u, delta, A, Bm, C, D, keep=None):
    """The recurrence of mamba_ssm's selective_scan_ref, in float64 numpy, one step at a time;
    where ``keep`` is 0 the state starts afresh."""
    u, delta, A, Bm, C, D = (np.asarray(x, np.float64) for x in (u, delta, A, Bm, C, D))
    batch, L, I = u.shape
    h = np.zeros((batch, I, A.shape[1]))
    ys = []
    for t in range(L):
        if keep is not None:
            h = h * np.asarray(keep)[:, t, None, None]
        h = (
            np.exp(delta[:, t, :, None] * A) * h
            + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        )
        ys.append(np.einsum("bis,bs->bi", h, C[:, t]) + D * u[:, t])
    return np.stack(ys, axis=1)


def scan_inputs(L: int = 11, I: int = 5, S: int = 3, seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 6)
    u = jax.random.normal(k[0], (2, L, I))
    delta = jax.nn.softplus(jax.random.normal(k[1], (2, L, I)))
    A = -jnp.exp(jax.random.normal(k[2], (I, S)))
    Bm, C = jax.random.normal(k[3], (2, L, S)), jax.random.normal(k[4], (2, L, S))
    D = jax.random.normal(k[5], (I,))
    return u, delta, A, Bm, C, D


@pytest.mark.parametrize(
    "mode, chunk, remat",
    [
        ("parallel", 64, False),
        ("chunked", 4, False),
        ("chunked", 1, False),
        ("chunked", 3, True),
        ("sequential", 64, False),
    ],
)
def test_selective_scan_equals_the_reference_recurrence(mode, chunk, remat):
    args = scan_inputs()
    y = selective_scan(*args, mode=mode, chunk_size=chunk, remat=remat)
    np.testing.assert_allclose(y, reference_scan(*args), rtol=1e-5, atol=1e-5)


KEEP = jnp.asarray([[1, 1, 1, 0, 1, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 0, 0, 1, 1, 1]], jnp.float32)


@pytest.mark.parametrize("mode, chunk", [("parallel", 64), ("chunked", 4), ("sequential", 64)])
def test_a_kept_zero_restarts_the_state_in_every_mode(mode, chunk):
    args = scan_inputs(L=10)
    y = selective_scan(*args, mode=mode, chunk_size=chunk, keep_BxL=KEEP)
    np.testing.assert_allclose(y, reference_scan(*args, keep=KEEP), rtol=1e-5, atol=1e-5)
    assert not np.allclose(y, reference_scan(*args), atol=1e-3)


def test_sequential_gradients_with_restarts_equal_the_parallel_scan():
    args = scan_inputs(L=10)

    def grads(mode):
        def f(*a):
            return jnp.sum(jnp.sin(selective_scan(*a, mode=mode, keep_BxL=KEEP)))

        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4, 5)))(*args)

    for g, e in zip(grads("sequential"), grads("parallel"), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_scan_step_equals_one_position_of_the_scan():
    u, delta, A, Bm, C, D = scan_inputs()
    h = jnp.zeros((2, u.shape[2], A.shape[1]))
    ys = []
    for t in range(u.shape[1]):
        h, y = selective_scan_step(h, u[:, t], delta[:, t], A, Bm[:, t], C[:, t], D)
        ys.append(y)
    np.testing.assert_allclose(
        jnp.stack(ys, 1), reference_scan(u, delta, A, Bm, C, D), rtol=1e-5, atol=1e-5
    )


def test_sequential_chunked_and_remat_gradients_equal_the_parallel_scan():
    args = scan_inputs(L=10)

    def loss(mode, chunk, remat):
        def f(*a):
            return jnp.sum(jnp.sin(selective_scan(*a, mode=mode, chunk_size=chunk, remat=remat)))

        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4, 5)))(*args)

    expected = loss("parallel", 64, False)
    for got in (loss("chunked", 3, False), loss("chunked", 4, True), loss("sequential", 0, False)):
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


VARIANTS = [
    ["model.mamba.chunk_size=3", "model.mamba.remat=true"],
    ["model.n_layers=1", "model.mamba.scan=parallel", "model.mamba.init=mamba"],
    ["model.tie_embeddings=false", "model.item_encoder=hashed", "model.hash_buckets=32"],
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(o) or "default")
def test_shapes_and_finite_nonzero_gradients(overrides):
    model = make(*overrides)
    model.train()
    inputs = random_inputs(n_pad=2)
    targets = jnp.roll(inputs, -1, axis=1)

    def loss_fn(m):
        hidden = m(inputs, rngs=nnx.Rngs(dropout=1))
        logits = hidden @ m.item_table().T
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1).mean()

    hidden = forward(model, inputs)
    assert hidden.shape == (B, MAX_LEN, 16) and hidden.dtype == jnp.float32
    assert model.item_table().shape == (N_ITEMS + 1, 16)
    grads = nnx.jit(nnx.grad(loss_fn))(model)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.isfinite(g).all()), path
        if "item_encoder" in str(path) and "buckets" not in str(path):
            continue  # rows of items absent from the batch have zero gradient
        assert float(jnp.abs(g).max()) > 0, path


@pytest.mark.parametrize("overrides", [[], ["model.mamba.scan=parallel"]], ids=["chunk", "par"])
@pytest.mark.parametrize("n_pad", [0, 3])
def test_causality_future_inputs_never_change_past_outputs(overrides, n_pad):
    model = make(*overrides, "model.mamba.chunk_size=3")
    inputs = random_inputs(n_pad=n_pad)
    base = forward(model, inputs)
    rng = np.random.default_rng(1)
    for t in range(MAX_LEN - 1):
        changed = np.array(inputs)
        changed[:, t + 1 :] = rng.integers(1, N_ITEMS + 1, size=(B, MAX_LEN - t - 1))
        out = forward(model, jnp.asarray(changed))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_padding_never_changes_later_states(n_layers):
    model = make(f"model.n_layers={n_layers}")
    padded = random_inputs(n_pad=3)
    base = forward(model, padded)
    # The padding item's vector does not matter ...
    table = model.item_encoder.table_VxD
    table[...] = table[...].at[0].set(100.0)
    np.testing.assert_allclose(forward(model, padded)[:, 3:], base[:, 3:], atol=1e-5)
    # ... and a left-padded window equals the same items unpadded.
    np.testing.assert_allclose(forward(model, padded[:, 3:]), base[:, 3:], atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [[], ["model.n_layers=3", "model.mamba.scan=parallel"], ["model.mamba.d_conv=1"]],
    ids=["default", "3 layers", "no conv history"],
)
def test_recurrent_steps_equal_the_parallel_forward_at_every_position(overrides):
    model = make(*overrides)
    inputs = random_inputs(n_pad=2, length=12)  # longer than the training windows
    expected = forward(model, inputs)
    cache = model.init_cache(B)
    step = jax.jit(lambda c, items: model.step(c, items))
    outputs = []
    for t in range(inputs.shape[1]):
        cache, hidden = step(cache, inputs[:, t])
        outputs.append(hidden)
    np.testing.assert_allclose(jnp.stack(outputs, 1)[:, 2:], expected[:, 2:], atol=2e-5)


def test_dropout_follows_train_and_eval_modes():
    model = make("model.dropout=0.5")
    inputs = random_inputs()
    np.testing.assert_array_equal(forward(model, inputs), forward(model, inputs))
    model.train()
    assert not np.allclose(forward(model, inputs), forward(model, inputs))
    with_key = nnx.jit(lambda m, x, key: m(x, rngs=nnx.Rngs(dropout=key)))
    key = jax.random.key(3)
    np.testing.assert_array_equal(with_key(model, inputs, key), with_key(model, inputs, key))


def test_single_layer_has_no_residual_around_the_mixer_as_in_mamba4rec():
    one = make("model.n_layers=1")
    assert one.layers[0].residual is False
    assert all(layer.residual for layer in make("model.n_layers=2").layers)


def test_param_count_by_hand_and_no_decay_on_a_log_d_and_biases():
    d, I, S, R, W, F = 16, 32, 4, 1, 4, 64
    model = make()
    counts = count_params(model)
    mixer = d * 2 * I + (W * I + I) + I * (R + 2 * S) + (R * I + I) + I * S + I + I * d
    layer = mixer + 2 * d + (d * F + F + F * d + d) + 2 * d
    assert counts.embedding == (N_ITEMS + 1) * d
    assert counts.non_embedding == 2 * layer + 2 * d
    mask = decay_mask(nnx.state(model, nnx.Param), decay_embeddings=False)
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): v
        for path, v in jax.tree_util.tree_leaves_with_path(mask)
    }
    assert not flat["layers/0/mixer/A_log"] and not flat["layers/0/mixer/D"]
    assert not flat["layers/0/mixer/dt_proj/bias"] and not flat["layers/0/mixer/conv/bias"]
    assert flat["layers/0/mixer/in_proj/kernel"] and flat["layers/0/mixer/conv/kernel"]


def test_flops_formula_by_hand_and_shape_label():
    cfg = mamba_cfg("model.d_model=64", "model.n_layers=2", "model.mamba.d_state=32")
    flops = flops_per_token(cfg, 1682, 50, TrainConfig())
    I, S, R, W, d = 128, 32, 4, 4, 64
    per_layer = 2 * d * 2 * I + 2 * I * (R + 2 * S) + 2 * R * I + 2 * I * d + 2 * 2 * d * 4 * d
    assert flops.backbone == 2 * per_layer
    assert flops.scan == 2 * (2 * W * I + 6 * I * S + 2 * I)
    assert flops.attention == 0 and flops.output == 2 * d * 1682
    assert shape_label(cfg) == "2x64 s32 e2 ff256"
    # the window length does not change a state-space model's cost per position
    assert flops_per_token(cfg, 1682, 4096, TrainConfig()).forward == flops.forward


@pytest.mark.parametrize(
    "overrides, n_items",
    [
        ([], 1682),
        (["model.d_model=128", "model.n_layers=3"], 20_000),
        (["model.n_layers=1", "model.mamba.d_state=16", "model.tie_embeddings=false"], 500),
        (["model.mamba.expand=4", "model.d_ff=96", "model.item_encoder=hashed"], 1682),
    ],
)
def test_flops_agree_with_xla_cost_analysis_of_the_recurrence(overrides, n_items):
    """The analytic count is the model's arithmetic: XLA's count of one recurrent step (the
    recurrence itself, plus the full-softmax loss) per position must lie within 10% above it.
    (The parallel scan does more arithmetic than the recurrence — see benchmarks/README.md.)"""
    cfg = load_config(None, ["model.backbone=mamba", *overrides]).model
    batch = 16
    model = build_model(cfg, n_items, 50, nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)

    def forward(state, cache, items):
        m = nnx.merge(graphdef, state)
        cache, hidden_BxD = m.step(cache, items)
        loss = full_softmax_loss(
            hidden_BxD[:, None],
            m.item_table(),
            items[:, None],
            items[:, None] > 0,
            max_chunk_logits=2**62,
        )
        return loss, cache

    items = jnp.ones(batch, jnp.int32)
    compiled = jax.jit(forward).lower(state, model.init_cache(batch), items).compile()
    xla = compiled.cost_analysis()["flops"] / batch
    # one position per row per call: the hashed table is built once per `batch` positions
    analytic = flops_per_token(cfg, n_items, 1, TrainConfig(batch_size=batch)).forward
    assert analytic <= xla <= analytic * 1.10


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.backbone=mamba", "model.n_heads=2"], "model.n_heads"),
        (["model.backbone=mamba", "model.positions=rope"], "model.positions"),
        (["model.mamba.d_state=8"], "model.mamba"),
        (["model.backbone=mamba", "model.mamba.d_state=0"], "model.mamba.d_state"),
        (["model.backbone=mamba", "model.mamba.chunk_size=-2"], "model.mamba.chunk_size"),
        (["model.backbone=mamba", "model.mamba.scan=fast"], "model.mamba.scan"),
        (["model.backbone=mamba", "model.mamba.heads=2"], "model.mamba.heads"),
    ],
)
def test_keys_of_the_other_backbone_and_bad_values_are_errors(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert err.value.key == key and key in str(err.value)


def test_bfloat16_compute_keeps_float32_params_and_scan():
    model = make("model.dtype=bfloat16")
    hidden = jax.jit(lambda m, x: m(x))(model, random_inputs(n_pad=2))
    assert hidden.dtype == jnp.bfloat16 and bool(jnp.isfinite(hidden).all())
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    reference = forward(make(), random_inputs(n_pad=2))
    np.testing.assert_allclose(hidden.astype(jnp.float32), reference, atol=0.15)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
def test_last_hidden_equals_the_full_forward_at_the_last_position(n_layers):
    model = make(f"model.n_layers={n_layers}")
    inputs = random_inputs(seed=3, n_pad=2)
    last = nnx.jit(lambda m, x: m.last_hidden(x))(model, inputs)
    assert last.shape == (B, 16)
    np.testing.assert_allclose(last, forward(model, inputs)[:, -1], rtol=1e-5, atol=1e-6)

"""Item tables split over the ``items`` mesh axis (``train.item_shards``): padding, the
layout of the train state, and equivalence with one device on 4 forced CPU devices."""

from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from forced_devices import run_on_cpu_devices
from jax.sharding import PartitionSpec

from srt_jax.config import ModelConfig, load_config
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model
from srt_jax.train.build import run_mesh
from srt_jax.train.item_shards import (
    item_table_rows,
    pad_item_tables,
    padded_rows,
    state_shardings,
    unpad_item_tables,
)
from srt_jax.train.mesh import data_mesh

REPO = Path(__file__).resolve().parents[1]


def tiny_params(n_items=30, tie=True):
    cfg = ModelConfig(d_model=8, n_layers=1, n_heads=2, tie_embeddings=tie)
    _, params, _ = nnx.split(build_model(cfg, n_items, 6, nnx.Rngs(0)), nnx.Param, ...)
    return params


def leaves_by_path(tree):
    return {
        jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def table_leaves(tree):
    return {path: leaf for path, leaf in leaves_by_path(tree).items() if "table_VxD" in path}


def test_padded_rows():
    assert [padded_rows(v, 4) for v in (1, 4, 5, 31, 32)] == [4, 4, 8, 32, 32]
    assert padded_rows(31, 1) == 31


def test_pad_and_unpad_touch_only_item_tables_and_their_optimiser_state():
    params = tiny_params(30, tie=False)
    assert item_table_rows(params) == 31
    padded = pad_item_tables(params, 4)
    tables = table_leaves(padded)
    assert len(tables) == 2  # the input and the untied output table
    for table in tables.values():
        assert table.shape == (32, 8)
        np.testing.assert_array_equal(table[31:], 0.0)
    before, after = leaves_by_path(params), leaves_by_path(padded)
    for path, leaf in before.items():  # every other parameter as it was
        if path not in tables:
            np.testing.assert_array_equal(after[path], leaf)
    for path, leaf in leaves_by_path(unpad_item_tables(padded, 31)).items():
        np.testing.assert_array_equal(leaf, before[path])
    moments = table_leaves(pad_item_tables(optax.adamw(1e-3).init(params), 4))
    assert len(moments) == 4 and all(m.shape == (32, 8) for m in moments.values())  # mu, nu


def test_one_device_mesh_replicates_everything():
    mesh = data_mesh(1, 1)
    assert dict(mesh.shape) == {"data": 1, "items": 1}
    specs = {s.spec for s in jax.tree.leaves(state_shardings(tiny_params(), mesh))}
    assert specs == {PartitionSpec()}


def test_item_shards_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.item_shards"):
        load_config(None, ["train.item_shards=0"])
    visible = jax.device_count()
    with pytest.raises(ConfigError, match=rf"item_shards = {visible + 1} .* {visible} device"):
        data_mesh(None, visible + 1)


def test_a_saved_run_is_evaluated_on_one_device_when_its_mesh_does_not_fit():
    config = load_config(None, [f"train.item_shards={jax.device_count() + 1}"])
    with pytest.raises(ConfigError, match=r"train\.item_shards"):
        run_mesh(config)
    assert dict(run_mesh(config, fit_devices=True).shape) == {"data": 1, "items": 1}


FOUR_DEVICES = """
import json, sys
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from srt_jax.config import ModelConfig, TrainConfig
from srt_jax.models.factory import build_model
from srt_jax.train.evaluate import rank_targets
from srt_jax.train.losses import full_softmax_loss, log_q_from_counts
from srt_jax.train.build import run_mesh
from srt_jax.train.mesh import data_mesh
from srt_jax.train.step import TrainStep
from tests.test_step import B, L, N_ITEMS, batches

assert jax.device_count() == 4, jax.devices()
MESHES = [(1, 4), (2, 2), (1, 2)]
out = {}

# the full softmax and its gradients, V = 38 rows (not a multiple of 4), 4-logit chunks
rng = np.random.default_rng(0)
h = jnp.asarray(rng.normal(size=(4, 6, 8)), jnp.float32)
table = jnp.asarray(rng.normal(size=(38, 8)), jnp.float32)
targets = jnp.asarray(rng.integers(1, 38, size=(4, 6)), jnp.int32)
mask = jnp.asarray(rng.random((4, 6)) > 0.3)

def softmax(mesh):
    def loss(h, table):
        return full_softmax_loss(h, table, targets, mask, mesh=mesh, max_chunk_logits=100)[0]
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(h, table)
    return [float(value), np.asarray(grads[0]).tolist(), np.asarray(grads[1]).tolist()]

out["softmax"] = {str(m): softmax(None if m is None else data_mesh(*m)) for m in [None, *MESHES]}

# full ranking with seen items and with sampled candidates, 5-item chunks
hidden = jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)
tgt = jnp.asarray(rng.integers(1, 38, size=8), jnp.int32)
seen = jnp.asarray(rng.integers(0, 38, size=(8, 6)), jnp.int32)
cand = jnp.asarray(rng.integers(1, 38, size=(8, 7)), jnp.int32)

def ranks(mesh, candidates):
    fn = jax.jit(lambda *a: rank_targets(*a, 5, mesh=mesh))
    return np.asarray(fn(hidden, table, tgt, seen, candidates)).tolist()

out["ranks"] = {
    str(m): [ranks(None if m is None else data_mesh(*m), c) for c in (None, cand)]
    for m in [None, *MESHES]
}

# training steps: full softmax, and sampled softmax with popularity logQ
counts = np.arange(N_ITEMS + 1)
for loss, extra in [("full_softmax", {}), ("sampled_softmax", {"num_negatives": 5,
                                                               "negatives": "popularity"})]:
    runs = {}
    for data, shards in [(1, 1), (1, 4), (2, 2)]:
        model = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, dropout=0.1),
                            N_ITEMS, L, nnx.Rngs(0))
        cfg = TrainConfig(learning_rate=1e-2, warmup_fraction=0.0, loss=loss,
                          item_shards=shards, **extra)
        log_q = np.asarray(log_q_from_counts(counts)) if extra else None
        step = TrainStep(model, cfg, total_tokens=2000, mesh=data_mesh(data, shards),
                         item_log_q=log_q)
        state, losses = step.init_state(), []
        for k, batch in enumerate(batches(6)):
            state, metrics = step(state, step.put_batch(batch), k, k * B * L)
            losses.append(float(metrics["loss_sum"] / metrics["count"]))
        layout = {
            jax.tree_util.keystr(path): [str(leaf.sharding.spec),
                                         list(leaf.addressable_shards[0].data.shape)]
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)
            if "table_VxD" in jax.tree_util.keystr(path)
        }
        table = step.eval_params(state)["item_encoder"]["table_VxD"]
        runs[f"{data}x{shards}"] = {"losses": losses, "layout": layout,
                                    "table": np.asarray(table).tolist()}
    out[loss] = runs

# a 1M-item catalog: the compiled step's memory plan per device, 1 and 4 item shards
memory = {}
for shards in (1, 4):
    model = build_model(ModelConfig(d_model=32, n_layers=1, n_heads=2), 1_000_000, 16,
                        nnx.Rngs(0))
    step = TrainStep(model, TrainConfig(item_shards=shards), total_tokens=1000,
                     mesh=data_mesh(1, shards))
    step.compile(16, 16)
    memory[shards] = step.memory_bytes()
out["memory"] = memory
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices():
    return run_on_cpu_devices(FOUR_DEVICES)


@pytest.mark.slow
def test_split_full_softmax_equals_one_device(four_devices):
    """Loss and both gradients of the shard-by-shard softmax equal the one-device ones on
    1x4, 2x2 and 1x2 meshes (38 rows: padded to 40)."""
    runs = four_devices["softmax"]
    reference = runs.pop("None")
    assert len(runs) == 3
    for value, dh, dtable in runs.values():
        assert value == pytest.approx(reference[0], rel=1e-6)
        np.testing.assert_allclose(dh, reference[1], atol=1e-5)
        np.testing.assert_allclose(dtable, reference[2], atol=1e-5)


@pytest.mark.slow
def test_split_ranking_equals_one_device(four_devices):
    runs = four_devices["ranks"]
    reference = runs.pop("None")
    assert len(runs) == 3 and all(ranks == reference for ranks in runs.values())
    full, sampled = reference
    assert max(full[0]) > 8 and max(sampled[0]) <= 8  # 37 items ranked, or 7 candidates + 1


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax"])
def test_split_training_steps_equal_one_device(four_devices, loss):
    """Six steps on 1x4 and 2x2 meshes give the one-device losses and parameters; the item
    table and its AdamW moments are stored split by rows (31 rows padded to 32)."""
    runs = four_devices[loss]
    reference = runs.pop("1x1")
    assert all(spec == "P()" for spec, _ in reference["layout"].values())
    for name, run in runs.items():
        np.testing.assert_allclose(run["losses"], reference["losses"], rtol=1e-5)
        np.testing.assert_allclose(run["table"], reference["table"], atol=1e-5)
        shards = int(name.split("x")[1])
        assert len(run["layout"]) == 3  # the table, AdamW's mu and nu
        for spec, shard_shape in run["layout"].values():
            assert spec == "P('items', None)" and shard_shape == [32 // shards, 16]
    assert np.array(reference["table"]).shape == (31, 16)


@pytest.mark.slow
def test_a_million_item_catalog_fits_a_quarter_of_the_memory_per_device(four_devices):
    """The compiled step of a 1M-item, d32 model: split over 4 devices, each holds a
    quarter of the table and its optimiser state and at most 30% of the one-device peak."""
    one, four = four_devices["memory"]["1"], four_devices["memory"]["4"]
    table_state = 3 * 1_000_001 * 32 * 4  # the table and AdamW's two moments, float32
    assert one["arguments"] > table_state and four["arguments"] < 0.3 * table_state
    assert four["peak"] < 0.3 * one["peak"]

"""Memory per device of a catalog-scale item table split over the ``items`` mesh axis
(``train.item_shards``).

For a synthetic catalog of ``--items`` items (default 1,000,000) and a ``--d-model``-wide,
2-block transformer, builds the training step (AdamW) with the item table and its optimiser
state on 1, 2 and 4 item shards of ``--devices`` forced CPU devices (``XLA_FLAGS
--xla_force_host_platform_device_count``; on a GPU host JAX's own devices are used), for
the full softmax and the sampled softmax, and prints XLA's memory plan of one device:
arguments (train state and batch), temporaries (activations, logits, gradients) and the
peak, each as a ratio to the unsplit table in the same run; then the same for the
full-ranking kernel of the evaluation (``--users`` users against the whole catalog), and
the time of a few steps. Every variant must give the unsplit step's loss on the same batch
within 1e-5 relative, or the script fails.

The forced CPU devices share this machine's cores, so the step times say that the split
step runs, not how it scales; the memory plan is what a device of a real mesh would hold.

    python benchmarks/bench_item_shards.py [--items 1000000] [--d-model 64] [--devices 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEVICES_FLAG = "--xla_force_host_platform_device_count"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="windows per step")
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--users", type=int, default=64, help="users per ranking call")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    return parser.parse_args()


ARGS = parse_args()
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DEVICES_FLAG}={ARGS.devices}"

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from srt_jax.config import ModelConfig, TrainConfig  # noqa: E402
from srt_jax.data.sampler import Batch  # noqa: E402
from srt_jax.models.factory import build_model  # noqa: E402
from srt_jax.train.evaluate import rank_targets  # noqa: E402
from srt_jax.train.item_shards import padded_rows  # noqa: E402
from srt_jax.train.mesh import ITEMS_AXIS, data_mesh  # noqa: E402
from srt_jax.train.step import TrainStep  # noqa: E402

MIB = 2**20


def random_batch(rows: int, length: int, n_items: int) -> Batch:
    rng = np.random.default_rng(0)
    window = rng.integers(1, n_items + 1, size=(rows, length + 1)).astype(np.int32)
    mask = np.ones((rows, length), bool)
    return Batch(window[:, :-1], window[:, 1:], mask, np.zeros((rows, length), np.int32), None)


def step_figures(model_cfg: ModelConfig, loss: str, shards: int) -> dict[str, float]:
    """Memory plan (MiB per device), step ms and first-step loss of one variant."""
    model = build_model(model_cfg, ARGS.items, ARGS.max_len, nnx.Rngs(0))
    train_cfg = TrainConfig(loss=loss, item_shards=shards, warmup_fraction=0.0)
    step = TrainStep(model, train_cfg, total_tokens=10**9, mesh=data_mesh(1, shards))
    compile_s = step.compile(ARGS.batch, ARGS.max_len)
    memory = {name: size / MIB for name, size in step.memory_bytes().items()}
    batch = step.put_batch(random_batch(ARGS.batch, ARGS.max_len, ARGS.items))
    state = step.init_state()
    state, metrics = step(state, batch, 0, 0)
    first_loss = float(metrics["loss_sum"] / metrics["count"])
    start = time.perf_counter()
    for k in range(1, ARGS.steps + 1):
        state, metrics = step(state, batch, k, 0)
    jax.block_until_ready(metrics)
    step_ms = (time.perf_counter() - start) / ARGS.steps * 1e3
    return {**memory, "step_ms": step_ms, "compile_s": compile_s, "loss": first_loss}


def ranking_memory(d_model: int, shards: int) -> float:
    """Temporaries plus arguments (MiB per device) of ranking ``--users`` users, the table
    given as the evaluator holds it (padded, split over ``items``)."""
    mesh = data_mesh(1, shards)
    U, V = ARGS.users, ARGS.items + 1

    def rank(hidden_UxD, table_XxD, targets_U, seen_UxA):
        table_VxD = table_XxD[:V]
        return rank_targets(hidden_UxD, table_VxD, targets_U, seen_UxA, None, 8192, mesh=mesh)

    split = NamedSharding(mesh, PartitionSpec(ITEMS_AXIS))
    args = (
        jax.ShapeDtypeStruct((U, d_model), jnp.float32),
        jax.ShapeDtypeStruct((padded_rows(V, shards), d_model), jnp.float32, sharding=split),
        jax.ShapeDtypeStruct((U,), jnp.int32),
        jax.ShapeDtypeStruct((U, 64), jnp.int32),
    )
    plan = jax.jit(rank).lower(*args).compile().memory_analysis()
    return (plan.temp_size_in_bytes + plan.argument_size_in_bytes) / MIB


def main() -> int:
    devices = jax.devices()
    print(
        f"{len(devices)} {devices[0].platform} device(s); catalog {ARGS.items:,} items, "
        f"d_model {ARGS.d_model}, 2 blocks, batch {ARGS.batch} x {ARGS.max_len}"
    )
    model_cfg = ModelConfig(d_model=ARGS.d_model, n_layers=2, n_heads=2)
    table_mib = (ARGS.items + 1) * ARGS.d_model * 4 / MIB
    print(f"item table {table_mib:,.0f} MiB; with AdamW's two moments {3 * table_mib:,.0f} MiB")
    shard_counts = [s for s in (1, 2, 4) if s <= len(devices)]
    failed = False
    for loss in ("full_softmax", "sampled_softmax"):
        print(f"\n{loss}: memory plan of one device, MiB (ratio to 1 shard)")
        print("| item shards | arguments | temporaries | peak | step ms | compile s |")
        print("| --- | --- | --- | --- | --- | --- |")
        base = None
        for shards in shard_counts:
            fig = step_figures(model_cfg, loss, shards)
            base = base or fig
            cells = [
                f"{fig[k]:,.0f} ({fig[k] / base[k]:.2f})"
                for k in ("arguments", "temporaries", "peak")
            ]
            print(
                f"| {shards} | {' | '.join(cells)} | {fig['step_ms']:,.0f} | "
                f"{fig['compile_s']:.1f} |",
                flush=True,
            )
            if abs(fig["loss"] - base["loss"]) > 1e-5 * abs(base["loss"]):
                print(f"  loss {fig['loss']} differs from the unsplit {base['loss']}")
                failed = True
    print(f"\nfull ranking of {ARGS.users} users: arguments + temporaries of one device, MiB")
    base_rank = None
    for shards in shard_counts:
        mib = ranking_memory(ARGS.d_model, shards)
        base_rank = base_rank or mib
        print(f"  {shards} item shard(s): {mib:,.0f} ({mib / base_rank:.2f})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

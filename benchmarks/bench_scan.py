"""The selective scan's forms on this machine (time and XLA's arithmetic count, per mode),
and the Mamba backbone's analytic FLOPs against XLA's count.

For each shape (B rows, L positions; I = 128 channels, S = 32 states: Mamba4Rec's d_model 64)
times the jitted forward and forward + backward of ``selective_scan`` in each mode
(``sequential``, ``chunked`` at a few chunk sizes, with and without remat, ``parallel``) and
prints them beside a float32 matmul measured in the same process, with XLA's flop count of
each forward per (position, channel, state) — the recurrence itself costs 6 there (see
``srt_jax.models.mamba.mamba_block_flops``). This is the measurement behind ``scan: auto``
(``sequential`` on CPU). Modes are timed in interleaved rounds, each keeping its best time.

With ``--flops`` it first prints, for a few Mamba shapes, the analytic forward FLOPs per
position (``srt_jax.models.counting.flops_per_token``) beside XLA's count of one recurrent
step plus the full-softmax loss — the recurrence's own arithmetic (tests/test_mamba.py
requires the ratio to lie in [1, 1.10]).

    python benchmarks/bench_scan.py [--shapes 32x50 8x200 2x4096] [--rounds 3] [--flops]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from srt_jax.config import TrainConfig, load_config
from srt_jax.models.counting import flops_per_token
from srt_jax.models.factory import build_model
from srt_jax.models.selective_scan import selective_scan
from srt_jax.train.losses import full_softmax_loss

CHANNELS, STATES = 128, 32
MODES = (
    ("sequential", 0, False),
    ("chunked", 16, False),
    ("chunked", 64, False),
    ("chunked", 64, True),
    ("parallel", 0, False),
)


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of one ``fn()`` call, waited for."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def scan_inputs(batch: int, length: int) -> tuple[jax.Array, ...]:
    """Random scan inputs of one shape (step sizes positive, A negative)."""
    k = jax.random.split(jax.random.key(0), 5)
    return (
        jax.random.normal(k[0], (batch, length, CHANNELS)),
        jax.nn.softplus(jax.random.normal(k[1], (batch, length, CHANNELS))),
        -jnp.exp(jax.random.normal(k[2], (CHANNELS, STATES))),
        jax.random.normal(k[3], (batch, length, STATES)),
        jax.random.normal(k[4], (batch, length, STATES)),
        jnp.ones(CHANNELS),
    )


def bench_shape(batch: int, length: int, rounds: int) -> None:
    """Time every mode on one shape against a matmul; print the table."""
    args = scan_inputs(batch, length)
    elements = batch * length * CHANNELS * STATES
    fns: dict[str, Callable[[], object]] = {}
    flops: dict[str, float] = {}
    for mode, chunk, remat in MODES:
        label = f"{mode}{f' T={chunk}' if chunk else ''}{' remat' if remat else ''}"

        def scan(*a, mode=mode, chunk=chunk, remat=remat):
            return selective_scan(*a, mode=mode, chunk_size=chunk or 64, remat=remat)

        forward = jax.jit(scan)
        both = jax.jit(jax.grad(lambda *a, f=scan: f(*a).sum(), argnums=(0, 1, 3, 4)))
        fns[f"{label} fwd"] = lambda f=forward: f(*args)
        fns[f"{label} fwd+bwd"] = lambda f=both: f(*args)
        flops[label] = forward.lower(*args).compile().cost_analysis()["flops"] / elements
    n = 2048
    a = jax.random.normal(jax.random.key(9), (n, n))
    matmul = jax.jit(lambda x: x @ x)
    fns["matmul"] = lambda: matmul(a)
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():  # compile and warm up
        seconds(fn)
    for _ in range(rounds):
        for label, fn in fns.items():
            best[label] = min(best[label], seconds(fn))
    rate = 2 * n**3 / best.pop("matmul")
    print(
        f"\nB {batch}, L {length}, I {CHANNELS}, S {STATES}: {elements / 1e6:.1f}M states; "
        f"float32 matmul {rate / 1e9:.0f} GFLOP/s"
    )
    print(f"{'mode':24s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'XLA flops/state (fwd)':>22s}")
    for label in flops:
        print(
            f"{label:24s} {best[f'{label} fwd'] * 1e3:9.1f} {best[f'{label} fwd+bwd'] * 1e3:11.1f}"
            f" {flops[label]:22.1f}"
        )


FLOPS_SHAPES = (
    ((), 1682),
    (("model.d_model=128", "model.n_layers=3"), 20_000),
    (("model.n_layers=1", "model.mamba.d_state=16", "model.tie_embeddings=false"), 500),
    (("model.mamba.expand=4", "model.d_ff=96", "model.item_encoder=hashed"), 1682),
)


def flops_check(batch: int = 16) -> None:
    """Analytic forward FLOPs per position of Mamba shapes against XLA's count of one
    recurrent step + full-softmax loss (per row)."""
    print("| shape | items | analytic FLOPs / position | XLA | XLA / analytic |")
    print("| --- | --- | --- | --- | --- |")
    for overrides, n_items in FLOPS_SHAPES:
        cfg = load_config(None, ["model.backbone=mamba", *overrides]).model
        model = build_model(cfg, n_items, 50, nnx.Rngs(0))
        model.eval()
        graphdef, state = nnx.split(model)

        def forward(state, cache, items_B, graphdef=graphdef):
            net = nnx.merge(graphdef, state)
            cache, hidden_BxD = net.step(cache, items_B)
            targets = items_B[:, None]
            return full_softmax_loss(
                hidden_BxD[:, None],
                net.item_table(),
                targets,
                targets > 0,
                max_chunk_logits=2**62,
            ), cache

        items = jnp.ones(batch, jnp.int32)
        compiled = jax.jit(forward).lower(state, model.init_cache(batch), items).compile()
        xla = compiled.cost_analysis()["flops"] / batch
        analytic = flops_per_token(cfg, n_items, 1, TrainConfig(batch_size=batch)).forward
        label = " ".join(overrides) or "defaults (d 64, 2 layers, S 32)"
        print(f"| {label} | {n_items:,} | {analytic:,.0f} | {xla:,.0f} | {xla / analytic:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes", nargs="+", default=["32x50", "8x200", "2x4096"], help="BxL shapes"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flops", action="store_true", help="also check Mamba's FLOP count")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    if args.flops:
        flops_check()
    for shape in args.shapes:
        batch, length = map(int, shape.split("x"))
        bench_shape(batch, length, args.rounds)


if __name__ == "__main__":
    main()

"""Forward + backward speed of the transformer and its loss, against a big matmul.

For each issue shape, times ``jax.jit(value_and_grad(loss))`` of the model + loss (dropout
on, as in training; no optimizer) and prints the achieved FLOP/s — the analytic training
FLOPs of ``srt_jax.models.counting`` over every computed position — as a fraction of a
large float32 matmul's FLOP/s measured in the same process. With ``--variants`` it also
times parts (no dropout, backbone only, loss only, forward only) to show where the time
goes. The machine is shared, so the variants and the matmul (3 times) are timed in
interleaved rounds and each keeps its fastest time.

    python benchmarks/bench_model.py [--shapes small large] [--rounds 5] [--variants]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from srt_jax.config import ModelConfig, TrainConfig
from srt_jax.models.counting import TRAINING_PER_FORWARD, flops_per_token
from srt_jax.models.factory import build_model
from srt_jax.progress import progress_bar
from srt_jax.train.loop import peak_rss_mb
from srt_jax.train.losses import compute_loss

N_ITEMS = 1682  # MovieLens-100K
SHAPES = {
    "small": (ModelConfig(d_model=64, n_layers=2, n_heads=2), 50, 256),
    "large": (ModelConfig(d_model=256, n_layers=4, n_heads=4), 200, 256),
}


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of one ``fn()`` call, waited for."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def matmul(n: int = 3072) -> tuple[Callable[[], jax.Array], float]:
    """A jitted float32 ``n x n @ n x n`` matmul and its FLOPs."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    fn = jax.jit(lambda x: x @ x)
    return lambda: fn(a), 2.0 * n**3


def batch(max_len: int, batch_size: int) -> dict[str, jax.Array]:
    """Random full windows (no padding), as the sampler's batches."""
    items = jax.random.randint(jax.random.key(1), (batch_size, max_len + 1), 1, N_ITEMS + 1)
    return {
        "inputs": items[:, :-1],
        "targets": items[:, 1:],
        "mask": jnp.ones((batch_size, max_len), bool),
    }


def step_fns(
    model_cfg: ModelConfig, train_cfg: TrainConfig, max_len: int, data: dict[str, jax.Array]
) -> dict[str, Callable[[], jax.Array]]:
    """Jitted forward+backward of the whole model+loss and of its parts, as thunks."""
    model = build_model(model_cfg, N_ITEMS, max_len, nnx.Rngs(0))
    key = jax.random.key(2)
    hidden = jax.random.normal(key, (*data["inputs"].shape, model_cfg.d_model))

    def model_loss(m, key):
        h = m(data["inputs"], rngs=nnx.Rngs(dropout=key))
        loss_sum, count = compute_loss(
            h, m.item_table(), data["targets"], data["mask"], train_cfg=train_cfg, key=key
        )
        return loss_sum / count

    def backbone_only(m, key):
        return jnp.mean(m(data["inputs"], rngs=nnx.Rngs(dropout=key)) ** 2)

    def loss_only(m, key):
        loss_sum, count = compute_loss(
            hidden, m.item_table(), data["targets"], data["mask"], train_cfg=train_cfg, key=key
        )
        return loss_sum / count

    def jitted(loss_fn, train: bool = True, grad: bool = True):
        """``loss_fn(model, key)`` (or its value and gradient) jitted over the parameters."""
        model.train() if train else model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def pure(params, key):
            return loss_fn(nnx.merge(graphdef, params, rest), key)

        fn = jax.jit(jax.value_and_grad(pure) if grad else pure)
        return lambda: fn(params, key)

    return {
        "model+loss fwd+bwd": jitted(model_loss),
        "  without dropout": jitted(model_loss, train=False),
        "  backbone only": jitted(backbone_only),
        "  loss only": jitted(loss_only),
        "  forward only": jitted(model_loss, grad=False),
    }


def bench_shape(name: str, loss: str, rounds: int, variants: bool) -> None:
    """Time one shape's variants against the matmul, in interleaved rounds; print the table."""
    model_cfg, max_len, batch_size = SHAPES[name]
    train_cfg = TrainConfig(loss=loss, batch_size=batch_size)
    flops = flops_per_token(model_cfg, N_ITEMS, max_len, train_cfg)
    positions = batch_size * max_len
    print(
        f"\n[{name}] d_model {model_cfg.d_model}, {model_cfg.n_layers} layers, "
        f"{model_cfg.n_heads} heads, L {max_len}, B {batch_size}, {loss} over {N_ITEMS} "
        f"items: {flops.total * positions / 1e9:.1f} GFLOP per step; forward per position "
        f"{dataclasses.asdict(flops)}"
    )
    fns = step_fns(model_cfg, train_cfg, max_len, batch(max_len, batch_size))
    work = {
        "model+loss fwd+bwd": flops.total,
        "  without dropout": flops.total,
        "  backbone only": TRAINING_PER_FORWARD * (flops.backbone + flops.attention),
        "  loss only": TRAINING_PER_FORWARD * flops.output,
        "  forward only": flops.forward,
    }
    if not variants:
        fns = dict(list(fns.items())[:1])
    reference, reference_flops = matmul()
    best = dict.fromkeys([*fns, "matmul"], float("inf"))
    for fn in [*fns.values(), reference]:  # compile
        seconds(fn)
    with progress_bar(rounds, f"timing {name}", "round") as bar:
        for _ in range(rounds):
            for label, fn in [*fns.items(), *[("matmul", reference)] * 3]:
                best[label] = min(best[label], seconds(fn))
            bar.update()
    matmul_rate = reference_flops / best["matmul"]
    print(f"{'float32 matmul 3072^3':22s} {matmul_rate / 1e9:6.1f} GFLOP/s (reference)")
    for label in fns:
        rate = work[label] * positions / best[label]
        print(
            f"{label:22s} {best[label] * 1e3:8.1f} ms/step {positions / best[label]:9.0f} "
            f"positions/s {rate / 1e9:6.1f} GFLOP/s = {rate / matmul_rate:5.1%} of matmul"
        )
    print(f"peak RSS so far: {peak_rss_mb() / 1024:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["small", "large"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", action="store_true", help="also time the parts")
    parser.add_argument(
        "--loss", default="full_softmax", choices=["full_softmax", "sampled_softmax", "bce", "gbce"]
    )
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    for name in args.shapes:
        bench_shape(name, args.loss, args.rounds, args.variants)


if __name__ == "__main__":
    main()

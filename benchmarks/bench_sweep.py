"""Per-run fixed overhead of a sweep: worker process start, and a run's compile + set-up cost
with a cold and a warm persistent compilation cache.

Each measurement runs in a fresh subprocess pinned to one core with the thread settings of a
sweep worker (:func:`srt_jax.sweep.worker.worker_environment`). A "run" is
:func:`srt_jax.sweep.worker.run_claimed` of a config whose budget is a single batch, so its
wall time is almost all fixed cost: opening the data, building the model, tracing and
compiling the step and the evaluation functions, the final evaluation, checkpoints and the
summary. The runs, in order, with one shared cache directory:

- ``cold``: an empty cache;
- ``warm, same config``: the same config again in a new run directory;
- ``warm, other seed``: the same shape with ``train.seed`` changed (how grid seeds differ);
- ``warm, other budget``: the same shape with ``train.tokens`` doubled (how IsoFLOP runs of
  one shape differ).

Figures are printed in seconds and as multiples of a reference measured in this process:
the wall time of one jitted float32 1024 x 1024 matmul (median of 50).

    python benchmarks/bench_sweep.py [--dataset movielens-100k|synthetic] [--d-model 64]
        [--layers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from srt_jax.sweep.worker import worker_environment

PROCESS_START = (
    "import time; t = time.perf_counter(); import jax, srt_jax.sweep.worker, "
    "srt_jax.train.loop; jax.numpy.zeros(1).block_until_ready(); "
    "print(time.perf_counter() - t)"
)
ONE_RUN = """
import json, sys, time
from srt_jax.sweep.worker import run_claimed
from srt_jax.train.loop import train
config, run_dir, cache_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
start = time.perf_counter()
outcome = run_claimed(config, run_dir, cache_dir, train)
assert outcome.status == "done", outcome.error
wall_s = time.perf_counter() - start
print(json.dumps({"wall_s": wall_s, "tokens": outcome.summary["train_tokens"]}))
"""


def reference_matmul_s() -> float:
    """Median wall seconds of a jitted float32 1024x1024 matmul on this core."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((1024, 1024), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    times = []
    for _ in range(50):
        start = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def python(code: str, *args: str, env: dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter on one core; return its last stdout line."""
    core = min(os.sched_getaffinity(0))
    command = ["taskset", "-c", str(core), sys.executable, "-c", code, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return result.stdout.strip().splitlines()[-1]


def run_config(args: argparse.Namespace, seed: int, batches: int) -> dict:
    batch_size, max_len = 256, 50
    data: dict = {"dataset": args.dataset, "max_len": max_len}
    if args.dataset == "synthetic":
        data["synthetic"] = {"users": 2000, "items": 1000, "mean_length": 50}
    return {
        "data": data,
        "model": {"d_model": args.d_model, "n_layers": args.layers, "n_heads": 2},
        "train": {
            "batch_size": batch_size,
            "tokens": batches * batch_size * max_len // 2,
            "epochs": None,
            "seed": seed,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="process-start repeats")
    args = parser.parse_args()
    env = worker_environment({**os.environ, "JAX_PLATFORMS": "cpu"}, 1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    reference = reference_matmul_s()
    print(f"reference: jitted 1024^3 float32 matmul {reference * 1e3:.2f} ms on one core")
    starts = [float(python(PROCESS_START, env=env)) for _ in range(args.repeats)]
    rows = [("worker process start (import jax + srt_jax, first op)", statistics.median(starts))]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "jax_cache"
        cases = (
            ("run, cold cache", run_config(args, 0, 1)),
            ("run, warm cache, same config", run_config(args, 0, 1)),
            ("run, warm cache, other seed", run_config(args, 1, 1)),
            ("run, warm cache, other budget", run_config(args, 0, 2)),
        )
        for i, (name, config) in enumerate(cases):
            out = json.loads(
                python(ONE_RUN, json.dumps(config), str(Path(tmp) / f"run{i}"), str(cache), env=env)
            )
            rows.append((f"{name} ({out['tokens']} tokens)", out["wall_s"]))
    shape = f"d_model {args.d_model}, {args.layers} layers, batch 256 x 50, {args.dataset}"
    print(f"per-run fixed overhead ({shape}):")
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"  {name.ljust(width)}  {seconds:7.2f} s  = {seconds / reference:9,.0f} x reference")
    print("command: python benchmarks/bench_sweep.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

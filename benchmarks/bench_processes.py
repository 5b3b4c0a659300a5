"""Training throughput of one run spread over several processes (``jax.distributed``).

Trains the same run (``--config``, default MovieLens-100K's ``configs/ml100k_sasrec.yaml``
model, a fixed ``--tokens`` budget, one evaluation at the end) with ``srt-jax train`` as:

- **1 process, 1 core** — the reference: one CPU device, pinned to one core;
- **P processes, 1 core each** — the multi-process run of ``--processes`` P: one CPU device
  per process, each pinned to its own core, the same global batch (data-parallel across
  processes, gradients summed over gloo);
- **1 process, P cores** — for comparison, the usual way to use P cores: one device whose
  XLA thread pool spans them.

Throughput is trained tokens per second between the first and the last train line of
``metrics.jsonl`` (compilation, start-up and the final evaluation left out), printed with
its ratio to the reference (P processes ideally give P x). Every variant must log the same
loss curve as the reference within 1e-5 relative, or the script fails.

    python benchmarks/bench_processes.py [--config configs/ml100k_sasrec.yaml]
                                         [--tokens 150000] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from srt_jax.sweep.worker import worker_environment

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ml100k_sasrec.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def train_processes(
    args: argparse.Namespace, run_dir: Path, cores: list[list[int]], distributed: bool
) -> list[dict]:
    """Run ``srt-jax train`` in one process per entry of ``cores`` (each pinned to its
    cores); the train lines of the run's ``metrics.jsonl``."""
    overrides = [
        f"train.tokens={args.tokens}",
        "train.epochs=null",
        "train.eval_every_tokens=null",
        "train.checkpoint_every=100000",
        "train.log_every=10",
        f"data.cache_dir={run_dir.parent / 'cache'}",
    ]
    command = [sys.executable, "-m", "srt_jax.cli", "train", str(args.config), "--quiet"]
    command += ["--out", str(run_dir)] + [x for o in overrides for x in ("--set", o)]
    address = f"localhost:{free_port()}"
    procs = []
    for index, own in enumerate(cores):
        env = worker_environment(os.environ, len(own))
        if distributed:
            env.update(
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=str(len(cores)),
                JAX_PROCESS_ID=str(index),
            )
        pinned = ["taskset", "-c", ",".join(map(str, own)), *command]
        procs.append(
            subprocess.Popen(
                pinned, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        )
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"srt-jax train failed:\n{err[-3000:]}")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == "train"]


def throughput(lines: list[dict]) -> float:
    """Tokens per second between the first and the last train line."""
    first, last = lines[0], lines[-1]
    return (last["tokens"] - first["tokens"]) / (last["wall_s"] - first["wall_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--tokens", type=int, default=150_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    P = args.processes
    if len(cores) < P:
        raise SystemExit(f"--processes {P} needs {P} cores; this process may use {len(cores)}")
    variants = {
        "1 process, 1 core (reference)": ([cores[:1]], False),
        f"{P} processes, 1 core each": ([[c] for c in cores[:P]], True),
        f"1 process, {P} cores": ([cores[:P]], False),
    }
    print(f"{args.config.name}, {args.tokens:,} tokens, cores {cores[:P]}")
    print("| variant | tokens/s | ratio |")
    print("| --- | --- | --- |")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        for index, (name, (groups, distributed)) in enumerate(variants.items()):
            lines = train_processes(args, Path(tmp) / f"run{index}", groups, distributed)
            rate = throughput(lines)
            reference = reference or (rate, [line["loss"] for line in lines])
            print(f"| {name} | {rate:,.0f} | {rate / reference[0]:.2f}x |", flush=True)
            losses = [line["loss"] for line in lines]
            worst = max(abs(a - b) / abs(b) for a, b in zip(losses, reference[1], strict=True))
            if worst > 1e-5:
                print(f"  loss curve differs from the reference by {worst:.2e} (relative)")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Crash safety in figures: SIGKILL a sweep's launcher, a worker or an export at random
moments, resume, and count what was lost.

A tiny synthetic sweep (4 runs of a few seconds, checkpointing every few steps) is run to
completion uninterrupted once (the reference), then again in another root while
``--kills`` times one of these is killed with SIGKILL at a random moment — the launcher
(``srt-jax sweep run``, its workers orphaned), one worker process (mid-step, mid-checkpoint
or mid-evaluation), or a ``sweep export`` — after which the sweep is simply run again, as a
user would. With ``--backend ray`` the sweeps run as Ray tasks on a local Ray cluster that
this script starts once (the launcher is then the Ray driver, and a worker is the Ray worker
process running a run's task). At the end the sweep is finished and checked:

- runs lost: runs of the spec that are not ``done`` in the registry;
- runs duplicated: runs whose ``metrics.jsonl`` repeats or skips a record (its train and eval
  lines differ from the reference run's, timings aside — resume must equal no interruption);
- checkpoints unreadable: runs whose best checkpoint does not restore;
- registry states wrong: runs left ``running``, or a registry that does not open;
- exports: the final export's ``runs.csv`` must list every run once.

    python benchmarks/fault_injection.py [--kills 20] [--seed 0] [--workers 2]
        [--backend local|ray]

Latest figures: docs/reliability.md. Exit status 1 if any count is not 0.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from srt_jax.sweep.registry import Registry
from srt_jax.train.run_dir import RunDirectory
from srt_jax.train.run_eval import restore_best

TIMING_KEYS = ("wall_s", "loop_s", "eval_s")
RUN_OPTIONS = ["--heartbeat-timeout", "3", "--max-attempts", "1000", "--quiet"]


def write_spec(root: Path) -> Path:
    """4 runs (2 widths x 2 seeds) of a few seconds each on a tiny synthetic log."""
    spec = {
        "name": "faults",
        "config": {
            "data": {
                "dataset": "synthetic",
                "cache_dir": str(root / "cache"),
                "synthetic": {"users": 200, "items": 60, "mean_length": 20},
                "max_len": 10,
            },
            "model": {"n_layers": 1, "n_heads": 2},
            "train": {
                "tokens": 30_000,
                "epochs": None,
                "batch_size": 16,
                "eval_every_tokens": 7_500,
                "checkpoint_every": 8,
                "keep_checkpoints": 2,
                "log_every": 4,
            },
            "eval": {"batch_users": 64},
        },
        "grid": {"model.d_model": [16, 24], "train.seed": [0, 1]},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "srt_jax.cli", *args]


class Sweeps:
    """Launches ``sweep run`` with ``workers`` runs at a time, as local worker processes or,
    given a Ray cluster's ``address``, as Ray tasks."""

    def __init__(self, workers: int, ray_address: str | None) -> None:
        self.workers, self.ray_address = workers, ray_address

    def launch(self, spec: Path, root: Path) -> subprocess.Popen:
        options = [*RUN_OPTIONS, "--workers", str(self.workers)]
        if self.ray_address:
            options += ["--backend", "ray", "--address", self.ray_address]
        return subprocess.Popen(
            cli("sweep", "run", str(spec), "--root", str(root), *options),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: workers can be found and killed
        )

    def workers_of(self, launcher: subprocess.Popen) -> list[int]:
        """Process ids of the processes running the launcher's runs: its children, or the
        Ray workers running a task (Ray titles them ``ray::ray_task``)."""
        pattern = ["-f", "^ray::ray_task"] if self.ray_address else ["-P", str(launcher.pid)]
        found = subprocess.run(["pgrep", *pattern], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def window_s(self, rng: random.Random) -> float:
        """Seconds from a launch to its kill (Ray's drivers and workers start slower)."""
        return rng.uniform(5.0, 20.0) if self.ray_address else rng.uniform(3.0, 12.0)


def metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl records without their timings."""
    records = RunDirectory(run_dir).read_metrics()
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def inject(
    spec: Path, root: Path, kills: int, rng: random.Random, sweeps: Sweeps
) -> dict[str, int]:
    """``kills`` random SIGKILLs while the sweep at ``root`` runs; the kinds killed."""
    killed = {"launcher": 0, "worker": 0, "export": 0}
    for k in range(kills):
        kind = rng.choice(list(killed))
        if kind == "export":
            exporting = subprocess.Popen(
                cli("sweep", "export", "--root", str(root), "--quiet"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.2, 3.0))
            if exporting.poll() is None:
                exporting.send_signal(signal.SIGKILL)
                killed[kind] += 1
            exporting.wait()
            continue
        launcher = sweeps.launch(spec, root)
        time.sleep(sweeps.window_s(rng))
        if launcher.poll() is not None:  # the sweep finished before the kill
            print(f"kill {k + 1}: the sweep had finished", flush=True)
            break
        if kind == "worker":
            if not (pids := sweeps.workers_of(launcher)):
                kind = "launcher"  # no run was running yet: the launcher is what gets killed
            else:
                os.kill(rng.choice(pids), signal.SIGKILL)
                time.sleep(rng.uniform(1.0, 4.0))  # the launcher replaces it; then stop all
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        killed[kind] += 1
        print(f"kill {k + 1}: {kind}", flush=True)
    return killed


def check(root: Path, reference: Path) -> dict[str, int]:
    """The counts of the module docstring for the finished sweep at ``root``."""
    counts = {"lost": 0, "duplicated": 0, "unreadable": 0, "registry": 0, "export": 0}
    try:
        with Registry(root) as registry:
            runs = registry.runs()
    except Exception:
        counts["registry"] += 1
        return counts
    with Registry(reference) as registry:
        expected = {run["run_id"] for run in registry.runs()}
    done = {run["run_id"] for run in runs if run["status"] == "done"}
    counts["lost"] = len(expected - done)
    counts["registry"] = sum(run["status"] == "running" for run in runs)
    for run_id in expected & done:
        if metrics(root / "runs" / run_id) != metrics(reference / "runs" / run_id):
            counts["duplicated"] += 1
        try:
            restore_best(root / "runs" / run_id)
        except Exception:
            counts["unreadable"] += 1
    subprocess.run(
        cli("sweep", "export", "--root", str(root), "--quiet"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(root / "export" / "runs.csv") as handle:
        exported = [row["run_id"] for row in csv.DictReader(handle)]
    counts["export"] = int(sorted(exported) != sorted(expected))
    return counts


@contextlib.contextmanager
def ray_cluster(args: argparse.Namespace) -> Iterator[str | None]:
    """With ``--backend ray``, a local Ray cluster of ``--workers`` CPUs for the duration;
    its address (None for local workers)."""
    if args.backend != "ray":
        yield None
        return
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"  # drivers in other processes connect freely
    ray.init(
        num_cpus=args.workers,
        include_dashboard=False,
        object_store_memory=100_000_000,
        configure_logging=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (0)")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time per launch (2)")
    parser.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="how runs are run (local)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch, ray_cluster(args) as address:
        work = Path(scratch)
        spec = write_spec(work)
        sweeps = Sweeps(args.workers, address)
        started = time.perf_counter()
        sweeps.launch(spec, work / "reference").wait()
        print(f"reference sweep: {time.perf_counter() - started:.0f} s", flush=True)
        killed = inject(spec, work / "faults", args.kills, rng, sweeps)
        sweeps.launch(spec, work / "faults").wait()
        counts = check(work / "faults", work / "reference")
        with Registry(work / "faults") as registry:
            attempts = sum(run["attempts"] for run in registry.runs())
    print(f"kills: {killed}; claims over the 4 runs: {attempts}")
    print(
        f"runs lost {counts['lost']}, runs duplicated {counts['duplicated']}, checkpoints "
        f"unreadable {counts['unreadable']}, registry states wrong {counts['registry']}, "
        f"export wrong {counts['export']}"
    )
    return 1 if any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

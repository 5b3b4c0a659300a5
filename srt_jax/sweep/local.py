"""The local executor: K worker processes on this machine, sharing its cores.

The launcher starts K ``srt-jax sweep worker`` subprocesses, each pinned to its own share of
the cores (:func:`srt_jax.sweep.worker.split_cores`) with matching thread counts, writing to
``<root>/logs/worker-<i>.log``. The workers claim runs from the registry themselves; the
launcher only shows progress and replaces a worker that died while work is left (at most
``max_respawns`` times in all). If the launcher itself is killed, its workers notice within
a second, give their runs back and exit, so running the same command again resumes the
sweep at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from srt_jax.errors import SrtJaxError
from srt_jax.sweep.monitor import SweepMonitor
from srt_jax.sweep.registry import Registry
from srt_jax.sweep.worker import DEFAULT_RUN_FN, split_cores, worker_environment

POLL_S = 1.0


def worker_command(
    root: Path,
    label: str,
    cores: list[int],
    *,
    heartbeat_timeout: float,
    max_attempts: int,
    run_fn: str,
) -> list[str]:
    """The command line of one worker process."""
    return [
        sys.executable,
        "-m",
        "srt_jax.cli",
        "sweep",
        "worker",
        "--root",
        str(root),
        "--label",
        label,
        "--cores",
        ",".join(map(str, cores)),
        "--heartbeat-timeout",
        str(heartbeat_timeout),
        "--max-attempts",
        str(max_attempts),
        "--parent-pid",
        str(os.getpid()),
        "--run-fn",
        run_fn,
    ]


def run_local(
    root: str | Path,
    *,
    workers: int,
    heartbeat_timeout: float,
    max_attempts: int,
    run_fn: str = DEFAULT_RUN_FN,
    max_respawns: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Run every unfinished run of the sweep at ``root`` with ``workers`` processes.

    Returns the final counts per status. Raises SrtJaxError if the workers keep dying
    (more than ``max_respawns`` replacements, default ``2 x workers``).
    """
    root = Path(root)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    core_sets = split_cores(os.sched_getaffinity(0), workers)
    max_respawns = 2 * workers if max_respawns is None else max_respawns
    procs: dict[int, subprocess.Popen] = {}

    def spawn(i: int) -> subprocess.Popen:
        command = worker_command(
            root,
            f"w{i}",
            core_sets[i],
            heartbeat_timeout=heartbeat_timeout,
            max_attempts=max_attempts,
            run_fn=run_fn,
        )
        env = worker_environment(os.environ, len(core_sets[i]))
        with open(logs / f"worker-{i}.log", "ab") as log:
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    respawns = 0
    with Registry(root) as registry:
        monitor = SweepMonitor(registry, disable=not progress)
        try:
            for i in range(workers if registry.unfinished() else 0):
                procs[i] = spawn(i)
            while procs:
                time.sleep(POLL_S)
                monitor.update()
                for i, proc in list(procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del procs[i]
                    if code != 0 and registry.unfinished():
                        if respawns >= max_respawns:
                            raise SrtJaxError(
                                f"sweep workers keep dying (last: worker {i}, exit status "
                                f"{code}; {respawns} replaced); see {logs}/worker-*.log"
                            )
                        respawns += 1
                        procs[i] = spawn(i)
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            monitor.close()
        return registry.counts()

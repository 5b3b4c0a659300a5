"""Running a sweep's runs: the run function, worker environments, heartbeats, the worker loop.

Every executor (local worker processes, Ray tasks) runs a claimed run the same way,
:func:`run_claimed`: point JAX at the sweep's persistent compilation cache
(``<root>/jax_cache``, so runs of the same shape compile once across processes), build the
:class:`RunConfig` and call the run function (``srt_jax.train.loop:train`` unless a test
names another ``module:function``) on the run directory, which resumes from its last
checkpoint if an earlier attempt died.

Thread budgets: in JAX 0.10 the XLA CPU runtime sizes its thread pool from the process's CPU
affinity (``--xla_cpu_multi_thread_eigen`` bounds only Eigen-backed ops, and
``intra_op_parallelism_threads`` is not an XLA flag any more: XLA aborts on it), so each
worker gets a disjoint set of cores (:func:`split_cores`, set with ``sched_setaffinity``
before JAX starts) and the BLAS/OpenMP thread counts of that size through its environment
(:func:`worker_environment`).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srt_jax.config import RunConfig, from_dict
from srt_jax.errors import ConfigError, SrtJaxError
from srt_jax.sweep.registry import Registry
from srt_jax.train.run_dir import SUMMARY_FILE

DEFAULT_RUN_FN = "srt_jax.train.loop:train"
JAX_CACHE_DIR = "jax_cache"
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# Compilations faster than this are not worth a cache entry (a disk read costs about that).
CACHE_MIN_COMPILE_S = 0.1

# A worker with nothing to claim polls this often while other workers' runs are running.
IDLE_POLL_S = 1.0

RunFn = Callable[..., dict]


@dataclass(frozen=True)
class RunOutcome:
    """How one attempt at a run ended: ``status`` done or failed, the summary and error."""

    status: str
    summary: dict[str, Any] | None
    error: str | None


# --------------------------------------------------------------------------- environment


def split_cores(cores: Collection[int], workers: int) -> list[list[int]]:
    """Disjoint core sets for ``workers`` workers (round-robin single cores if too few)."""
    cores = sorted(cores)
    if workers <= len(cores):
        size, extra = divmod(len(cores), workers)
        sets, start = [], 0
        for i in range(workers):
            end = start + size + (1 if i < extra else 0)
            sets.append(cores[start:end])
            start = end
        return sets
    return [[cores[i % len(cores)]] for i in range(workers)]


def worker_environment(base: Mapping[str, str], threads: int) -> dict[str, str]:
    """``base`` with BLAS/OpenMP thread counts set to ``threads`` and, for one thread,
    ``--xla_cpu_multi_thread_eigen=false`` added to ``XLA_FLAGS``."""
    env = dict(base)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    flags = env.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if flags:
        env["XLA_FLAGS"] = flags
    return env


def configure_compilation_cache(cache_dir: str | Path) -> None:
    """Use the persistent JAX compilation cache in ``cache_dir`` for this process."""
    import jax

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def resolve_run_fn(path: str) -> RunFn:
    """The function ``module:function`` names (the run function of the workers)."""
    module_name, _, name = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"run function {path!r} not found (expected module:function): {err}"
        ) from None
    if not callable(function):
        raise ConfigError(f"run function {path!r} is not callable")
    return function


# --------------------------------------------------------------------------- one run


def run_claimed(
    config: Mapping[str, Any], run_dir: str | Path, cache_dir: str | Path, run_fn: RunFn
) -> RunOutcome:
    """Run (or resume) one run: ``run_fn(RunConfig, run_dir, progress=False)``.

    A run that raises, or returns a summary whose status is not ``done``, has failed; the
    error is one line (user errors) or the exception and its innermost frame (bugs; the full
    traceback goes to stderr, i.e. the worker's log).
    """
    configure_compilation_cache(cache_dir)
    try:
        run_config: RunConfig = from_dict(RunConfig, config)
        summary = run_fn(run_config, Path(run_dir), progress=False)
    except SrtJaxError as err:
        return RunOutcome("failed", _read_summary(run_dir), f"{type(err).__name__}: {err}")
    except Exception as err:  # a bug in a run must not take the worker down
        traceback.print_exc()
        frame = traceback.extract_tb(err.__traceback__)[-1]
        where = f" ({Path(frame.filename).name}:{frame.lineno})"
        return RunOutcome("failed", _read_summary(run_dir), f"{type(err).__name__}: {err}{where}")
    if summary.get("status", "done") != "done":
        return RunOutcome("failed", summary, str(summary.get("error") or "run did not finish"))
    return RunOutcome("done", summary, None)


def _read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record(registry: Registry, run_id: str, worker: str, outcome: RunOutcome) -> bool:
    """Store ``outcome`` in the registry (False if ``worker`` no longer held the run)."""
    if outcome.status == "done":
        return registry.complete(run_id, worker, outcome.summary or {})
    return registry.fail(run_id, worker, outcome.error or "failed", outcome.summary)


# --------------------------------------------------------------------------- heartbeats


class Heartbeat(threading.Thread):
    """Refreshes the heartbeat of the runs a worker holds every ``interval_s`` seconds.

    Uses its own registry connection. ``on_lost(run_ids)`` is called when the registry says
    the worker no longer holds some of them (their heartbeat expired and another worker took
    them over); ``on_orphaned()`` when the process's parent (``parent_pid``) is gone.
    """

    def __init__(
        self,
        root: str | Path,
        worker: str,
        run_ids: set[str],
        interval_s: float,
        *,
        on_lost: Callable[[list[str]], None],
        parent_pid: int | None = None,
        on_orphaned: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{worker}", daemon=True)
        self.root, self.worker, self.run_ids = root, worker, run_ids
        self.interval_s = interval_s
        self.on_lost, self.on_orphaned, self.parent_pid = on_lost, on_orphaned, parent_pid
        self._stopping = threading.Event()

    def run(self) -> None:
        with Registry(self.root) as registry:
            last = 0.0
            while not self._stopping.wait(min(self.interval_s, 0.5)):
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    if self.on_orphaned is not None:
                        self.on_orphaned()
                    return
                if time.monotonic() - last < self.interval_s:
                    continue
                last = time.monotonic()
                lost = registry.heartbeat(sorted(self.run_ids), self.worker)
                if lost:
                    self.on_lost(lost)

    def stop(self) -> None:
        """Stop beating (the thread ends within half a second)."""
        self._stopping.set()


def heartbeat_interval(timeout_s: float) -> float:
    """Seconds between heartbeats: a quarter of the timeout, so three may be missed."""
    return max(0.05, timeout_s / 4.0)


# --------------------------------------------------------------------------- worker loop


def worker_name(label: str) -> str:
    """A worker's registry name: ``host/label/pid`` (unique while the process lives)."""
    return f"{socket.gethostname()}/{label}/{os.getpid()}"


def worker_loop(
    root: str | Path,
    label: str,
    *,
    heartbeat_timeout: float,
    max_attempts: int,
    run_fn: RunFn,
    parent_pid: int | None = None,
) -> int:
    """Claim and run runs until none is pending or running; return how many it finished.

    While another worker's run is still running the loop waits (polling every second), so
    that it can take the run over if that worker dies. If ``parent_pid`` (the launcher)
    disappears, the worker gives its run back and exits at once; if the registry says its
    run was taken over, it exits too (the run is someone else's now).
    """
    root = Path(root)
    worker = worker_name(label)
    held: set[str] = set()
    interval = heartbeat_interval(heartbeat_timeout)

    def orphaned() -> None:
        with Registry(root) as registry:
            for run_id in list(held):
                registry.release(run_id, worker, "launcher exited")
        print(f"{worker}: launcher {parent_pid} is gone; run(s) released, exiting", flush=True)
        os._exit(3)

    def lost(run_ids: list[str]) -> None:
        print(f"{worker}: lost run(s) {', '.join(run_ids)} to another worker; exiting", flush=True)
        os._exit(4)

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    finished = 0
    with Registry(root) as registry:
        while True:
            if parent_pid is not None and os.getppid() != parent_pid:
                orphaned()
            claim = registry.claim(
                worker, heartbeat_timeout=heartbeat_timeout, max_attempts=max_attempts
            )
            if claim is None:
                if registry.unfinished() == 0:
                    return finished
                time.sleep(min(interval, IDLE_POLL_S))
                continue
            print(f"{worker}: run {claim.run_id} (attempt {claim.attempt})", flush=True)
            held.add(claim.run_id)
            beat = Heartbeat(
                root,
                worker,
                held,
                interval,
                on_lost=lost,
                parent_pid=parent_pid,
                on_orphaned=orphaned,
            )
            beat.start()
            try:
                outcome = run_claimed(claim.config, claim.run_dir, root / JAX_CACHE_DIR, run_fn)
            except BaseException:
                beat.stop()
                registry.release(claim.run_id, worker, "worker interrupted")
                raise
            beat.stop()
            beat.join()
            held.discard(claim.run_id)
            if record(registry, claim.run_id, worker, outcome):
                finished += 1
            print(
                f"{worker}: run {claim.run_id} {outcome.status} {outcome.error or ''}", flush=True
            )


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

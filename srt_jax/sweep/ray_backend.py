"""The Ray executor: the sweep's runs as Ray tasks on an existing Ray cluster.

The launcher (the Ray driver) is the only process that touches the registry: it claims up
to K runs, submits each as a task that calls :func:`srt_jax.sweep.worker.run_claimed` (the
same run function as local workers), keeps the heartbeats of the runs in flight fresh, and
records each task's outcome. Tasks get ``cpus_per_run`` CPUs each and matching
thread-count environment variables; Ray does not retry them (the registry's attempts do).

With ``gpus_per_run`` a task also holds that many of the cluster's GPUs: a whole number,
or a share below 1 (0.5: two runs on each GPU). Ray pins each task to its GPUs by setting
``CUDA_VISIBLE_DEVICES``; with a share, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` limits each
run's JAX to 90% of its share of the GPU's memory instead of JAX's default 75% of all of it
(which would leave the second run nothing). A cluster with fewer GPUs than one task needs
is an error, not a sweep that waits forever. If the driver
dies, Ray ends its tasks, their heartbeats expire and the next ``sweep run`` reclaims them;
they resume from their checkpoints.

Requirements: ``pip install 'srt-jax[ray]'`` on the driver and every node, and the sweep
root on a filesystem every node sees at the same path (run directories are written by the
tasks; the SQLite registry only by the driver).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from srt_jax.errors import SrtJaxError, first_line
from srt_jax.sweep.monitor import SweepMonitor
from srt_jax.sweep.registry import Claim, Registry
from srt_jax.sweep.worker import (
    DEFAULT_RUN_FN,
    IDLE_POLL_S,
    JAX_CACHE_DIR,
    Heartbeat,
    RunOutcome,
    heartbeat_interval,
    record,
    resolve_run_fn,
    run_claimed,
    worker_environment,
    worker_name,
)

GPU_MEMORY_USE = 0.9
"""Share of its part of a GPU's memory that a run sharing the GPU lets JAX take."""


def ray_task(config: dict[str, Any], run_dir: str, cache_dir: str, run_fn: str) -> RunOutcome:
    """The body of one Ray task: run (or resume) one run on a Ray worker."""
    return run_claimed(config, run_dir, cache_dir, resolve_run_fn(run_fn))


def run_ray(
    root: str | Path,
    *,
    address: str | None,
    workers: int,
    heartbeat_timeout: float,
    max_attempts: int,
    run_fn: str = DEFAULT_RUN_FN,
    cpus_per_run: int = 1,
    gpus_per_run: float = 0.0,
    progress: bool = True,
) -> dict[str, int]:
    """Run every unfinished run of the sweep at ``root`` as Ray tasks, ``workers`` at a time.

    ``address`` is the Ray cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); None
    starts a Ray instance on this machine for the duration. Returns the counts per status.
    """
    try:
        import ray
    except ImportError:
        raise SrtJaxError(
            "--backend ray needs Ray: pip install 'srt-jax[ray]' (ray[default]>=2.9,<3)"
        ) from None
    root = Path(root).resolve()
    env_vars = worker_environment({}, cpus_per_run)
    if 0 < gpus_per_run < 1:
        env_vars["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{GPU_MEMORY_USE * gpus_per_run:.3f}"
    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env_vars})
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < gpus_per_run:
            raise SrtJaxError(f"--gpus-per-run {gpus_per_run:g}: the Ray cluster has {gpus:g} GPUs")
        with Registry(root) as registry:
            driver = _RayDriver(
                registry,
                ray.remote(ray_task).options(
                    num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0
                ),
                workers=workers,
                heartbeat_timeout=heartbeat_timeout,
                max_attempts=max_attempts,
                run_fn=run_fn,
            )
            monitor = SweepMonitor(registry, disable=not progress)
            driver.beat.start()
            try:
                while driver.step():
                    monitor.update()
            except BaseException:
                driver.abandon()
                raise
            finally:
                driver.beat.stop()
                monitor.close()
            return registry.counts()
    finally:
        ray.shutdown()


class _RayDriver:
    """Keeps ``workers`` Ray tasks in flight, one per claimed run, and records outcomes."""

    def __init__(
        self,
        registry: Registry,
        remote: Any,
        *,
        workers: int,
        heartbeat_timeout: float,
        max_attempts: int,
        run_fn: str,
    ) -> None:
        self.registry, self.remote, self.workers = registry, remote, workers
        self.heartbeat_timeout, self.max_attempts, self.run_fn = (
            heartbeat_timeout,
            max_attempts,
            run_fn,
        )
        self.worker = worker_name("ray")
        self.cache_dir = str(registry.root / JAX_CACHE_DIR)
        self.in_flight: dict[Any, Claim] = {}
        self.held: set[str] = set()
        self._lost: list[str] = []
        self._lock = threading.Lock()
        self.beat = Heartbeat(
            registry.root,
            self.worker,
            self.held,
            heartbeat_interval(heartbeat_timeout),
            on_lost=self._on_lost,
        )

    def _on_lost(self, run_ids: list[str]) -> None:
        with self._lock:
            self._lost.extend(run_ids)

    def step(self) -> bool:
        """Submit, wait up to a second, record; False once no run is pending or running."""
        import ray

        while len(self.in_flight) < self.workers:
            claim = self.registry.claim(
                self.worker,
                heartbeat_timeout=self.heartbeat_timeout,
                max_attempts=self.max_attempts,
            )
            if claim is None:
                break
            ref = self.remote.remote(claim.config, str(claim.run_dir), self.cache_dir, self.run_fn)
            self.in_flight[ref] = claim
            self.held.add(claim.run_id)
        if not self.in_flight:
            if self.registry.unfinished() == 0:
                return False
            time.sleep(min(heartbeat_interval(self.heartbeat_timeout), IDLE_POLL_S))
            return True
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            claim = self.in_flight.pop(ref)
            self.held.discard(claim.run_id)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as err:  # the task or its worker process died
                error = f"ray task failed (attempt {claim.attempt} of {self.max_attempts}): "
                error += first_line(err)
                if claim.attempt < self.max_attempts:  # again, resuming from its checkpoint
                    self.registry.release(claim.run_id, self.worker, error, attempt_counts=True)
                    continue
                outcome = RunOutcome("failed", None, error)
            record(self.registry, claim.run_id, self.worker, outcome)
        self._cancel_lost()
        return True

    def _cancel_lost(self) -> None:
        """Cancel the tasks of runs whose heartbeat expired (another worker took them)."""
        import ray

        with self._lock:
            lost, self._lost = set(self._lost), []
        for ref, claim in list(self.in_flight.items()):
            if claim.run_id in lost:
                ray.cancel(ref, force=True)
                del self.in_flight[ref]
                self.held.discard(claim.run_id)

    def abandon(self) -> None:
        """Cancel every task in flight and give its run back to the registry."""
        import ray

        for ref, claim in self.in_flight.items():
            ray.cancel(ref, force=True)
            self.registry.release(claim.run_id, self.worker, "ray driver interrupted")
        self.in_flight.clear()

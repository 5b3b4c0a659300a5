"""Launching a sweep: register a spec's runs in its registry, then run what is not done.

Used by ``srt-jax sweep run`` and ``srt-jax quickstart``. Registering is idempotent (a
config runs once per sweep), so launching the same spec again after an interruption only
runs what is unfinished; killed runs resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from srt_jax.config import RunConfig, to_dict
from srt_jax.errors import SrtJaxError
from srt_jax.sweep.plan import make_plan
from srt_jax.sweep.registry import NewRun, Registry
from srt_jax.sweep.spec import SweepSpec
from srt_jax.sweep.worker import DEFAULT_RUN_FN, resolve_run_fn

STATUSES = ("done", "running", "pending", "failed")


@dataclass(frozen=True)
class Registered:
    """What :func:`register_sweep` did: runs added now, counts per status, skipped combos."""

    added: int
    counts: dict[str, int]
    skipped: int


def with_sweep_tracking(config: RunConfig, root: Path, name: str) -> RunConfig:
    """A sweep run's config with the sweep's MLflow defaults: one store for all its runs,
    ``sqlite:///ROOT/mlflow.db`` (unless the spec sets ``train.tracking_uri`` or
    ``$MLFLOW_TRACKING_URI`` is set), and one experiment, ``srt-jax sweep NAME`` (unless the
    spec sets ``train.tracking_experiment``). Tracking keys never change a run's id."""
    train = config.train
    if "mlflow" not in train.trackers:
        return config
    uri = train.tracking_uri
    if uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        uri = f"sqlite:///{root.resolve() / 'mlflow.db'}"
    experiment = train.tracking_experiment or f"srt-jax sweep {name}"
    tracked = dataclasses.replace(train, tracking_uri=uri, tracking_experiment=experiment)
    return dataclasses.replace(config, train=tracked)


def register_sweep(spec: SweepSpec, root: str | Path) -> Registered:
    """Expand ``spec`` and add its runs (biggest compute first) to the registry at ``root``;
    runs that log to MLflow share the sweep's store and experiment
    (:func:`with_sweep_tracking`)."""
    plan = make_plan(spec, calibrate=False)
    rows = sorted(plan.rows, key=lambda row: -row.run.compute)
    with Registry(root, create=True) as registry:
        registry.set_name(spec.name)
        added = registry.add_runs(
            NewRun(
                run_id=row.run.run_id,
                config=to_dict(with_sweep_tracking(row.run.config, Path(root), spec.name)),
                n_params=row.params.total,
                n_non_embedding=row.params.non_embedding,
                tokens=row.run.tokens,
                flops=row.run.compute,
                budget=row.run.budget,
            )
            for row in rows
        )
        registry.set_skipped((s.assignments, s.budget, s.tokens, s.reason) for s in plan.skipped)
        counts = registry.counts()
    return Registered(added, counts, len(plan.skipped))


def check_backend_options(backend: str, gpus_per_run: float) -> None:
    """Raise SrtJaxError for options the executor ``backend`` cannot honour."""
    if gpus_per_run and backend != "ray":
        raise SrtJaxError(
            "--gpus-per-run needs --backend ray (local workers are pinned to CPU cores; on "
            "one machine, start one `sweep run` per GPU on the same root, each with its own "
            "CUDA_VISIBLE_DEVICES)"
        )


def execute_sweep(
    root: str | Path,
    *,
    backend: str = "local",
    workers: int = 1,
    address: str | None = None,
    cpus_per_run: int = 1,
    gpus_per_run: float = 0.0,
    heartbeat_timeout: float = 60.0,
    max_attempts: int = 3,
    run_fn: str = DEFAULT_RUN_FN,
    progress: bool = True,
) -> dict[str, int]:
    """Run every unfinished run of the registered sweep at ``root``; final counts per status.

    ``backend`` is ``local`` (``workers`` processes on this machine) or ``ray`` (tasks on
    the Ray cluster at ``address``, each with ``cpus_per_run`` CPUs and ``gpus_per_run``
    GPUs); ``progress`` shows the sweep's progress bar.
    """
    resolve_run_fn(run_fn)
    check_backend_options(backend, gpus_per_run)
    options = {
        "workers": workers,
        "heartbeat_timeout": heartbeat_timeout,
        "max_attempts": max_attempts,
        "run_fn": run_fn,
        "progress": progress,
    }
    if backend == "ray":
        from srt_jax.sweep.ray_backend import run_ray

        return run_ray(
            root,
            address=address,
            cpus_per_run=cpus_per_run,
            gpus_per_run=gpus_per_run,
            **options,
        )
    from srt_jax.sweep.local import run_local

    return run_local(root, **options)


def counts_text(counts: dict[str, int]) -> str:
    """``"3 done, 1 running, 0 pending, 0 failed"``."""
    return ", ".join(f"{counts[s]} {s}" for s in STATUSES)

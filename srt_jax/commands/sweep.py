"""``srt-jax sweep``: plan, run, inspect, retry and export sweeps over model and data sizes.

A sweep lives in its root directory (default ``sweeps_out/<spec name>`` under the working
directory): ``registry.sqlite`` (the runs and their status), ``runs/<run_id>/`` (one run
directory each), ``jax_cache/`` (the shared compilation cache), ``calibration.json`` (step
times measured by ``plan``), ``logs/`` (worker logs) and ``export/`` (``sweep export``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from srt_jax.commands.argtypes import gpu_share, int_list, positive_float, positive_int
from srt_jax.commands.output import finish, note
from srt_jax.config import ModelConfig, from_dict
from srt_jax.errors import DataError
from srt_jax.sweep.export import export_sweep
from srt_jax.sweep.registry import REGISTRY_FILE, Registry
from srt_jax.sweep.spec_file import SWEEPS_OUT
from srt_jax.sweep.worker import DEFAULT_RUN_FN, resolve_run_fn, worker_loop

# The planning, launching and model modules (JAX, Flax) are imported by the handlers that
# need them, so that `srt-jax --help` and the light commands start without them.

DEFAULT_HEARTBEAT_TIMEOUT_S = 60.0
DEFAULT_MAX_ATTEMPTS = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` command group."""
    sweep = subparsers.add_parser(
        "sweep",
        help="plan, run, inspect and export sweeps (grid or IsoFLOP)",
        description="Sweeps over model and data sizes defined by a YAML spec (see sweeps/). "
        "A sweep's root holds its SQLite registry, run directories, compilation cache and "
        "logs; the default root is sweeps_out/<spec name>.",
    )
    commands = sweep.add_subparsers(dest="sweep_command", metavar="SWEEP_COMMAND", required=True)

    plan = commands.add_parser(
        "plan",
        help="print the runs of a spec: shape, N, D, C, 6ND, estimated time; skipped combinations",
        description="Expand a spec and print its runs with parameter counts (abstract model), "
        "tokens D, analytic compute C, 6ND and a time estimate from a few measured training "
        "steps per distinct shape (cached in ROOT/calibration.json).",
    )
    plan.add_argument("spec", metavar="SPEC", help="sweep spec (YAML)")
    _root_option(plan)
    plan.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="skip the measured step times (no time estimate)",
    )
    plan.add_argument(
        "--calibration-steps",
        type=positive_int,
        default=5,
        help="timed steps per shape after compilation (default 5)",
    )
    plan.set_defaults(handler=run_plan)

    run = commands.add_parser(
        "run",
        help="run every run of a spec that is not done yet (resumable)",
        description="Register the spec's runs (idempotent: a config runs once per sweep) and "
        "run the unfinished ones, biggest compute first, with K worker processes or Ray "
        "tasks. Killed runs resume from their checkpoints when the command is run again.",
    )
    run.add_argument("spec", metavar="SPEC", help="sweep spec (YAML)")
    _root_option(run)
    run.add_argument("--workers", type=positive_int, default=1, help="runs at a time (default 1)")
    run.add_argument("--backend", choices=("local", "ray"), default="local", help="default local")
    run.add_argument(
        "--address", help="Ray cluster address (auto, HOST:PORT, ray://...; default: a local Ray)"
    )
    run.add_argument(
        "--cpus-per-run", type=positive_int, default=1, help="Ray: CPUs per task (default 1)"
    )
    run.add_argument(
        "--gpus-per-run",
        type=gpu_share,
        default=0.0,
        help="Ray: GPUs per task, a whole number or a share below 1 (0.5: two runs per GPU); "
        "each task sees only its GPU (CUDA_VISIBLE_DEVICES, set by Ray) (default 0)",
    )
    run.add_argument(
        "--heartbeat-timeout",
        type=positive_float,
        default=DEFAULT_HEARTBEAT_TIMEOUT_S,
        help="seconds without a heartbeat after which a run is taken over (default 60)",
    )
    run.add_argument(
        "--max-attempts",
        type=positive_int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="claims of a run whose worker keeps dying before it is marked failed (default 3)",
    )
    run.add_argument("--run-fn", default=DEFAULT_RUN_FN, help=argparse.SUPPRESS)
    run.set_defaults(handler=run_run)

    status = commands.add_parser(
        "status",
        help="counts and per-run status of a sweep (of every sweep under sweeps_out/ if no root)",
    )
    status.add_argument("--root", help="sweep root (default: every sweep under sweeps_out/)")
    status.set_defaults(handler=run_status)

    retry = commands.add_parser("retry-failed", help="make failed runs pending again")
    _root_option(retry, spec=False)
    retry.set_defaults(handler=run_retry)

    export = commands.add_parser(
        "export",
        help="write runs and loss curves as CSV or Parquet (what `srt-jax fit` reads)",
    )
    _root_option(export, spec=False)
    export.add_argument("--format", dest="fmt", choices=("csv", "parquet"), default="csv")
    export.add_argument("--out", help="output directory (default ROOT/export)")
    export.set_defaults(handler=run_export)

    worker = commands.add_parser("worker")  # internal: started by `sweep run`
    worker.add_argument("--root", required=True)
    worker.add_argument("--label", required=True)
    worker.add_argument("--cores", type=int_list)
    worker.add_argument("--heartbeat-timeout", type=positive_float, required=True)
    worker.add_argument("--max-attempts", type=positive_int, required=True)
    worker.add_argument("--parent-pid", type=int)
    worker.add_argument("--run-fn", default=DEFAULT_RUN_FN)
    worker.set_defaults(handler=run_worker)


def _root_option(parser: argparse.ArgumentParser, *, spec: bool = True) -> None:
    default = "sweeps_out/<spec name>" if spec else "the only sweep under sweeps_out/"
    parser.add_argument("--root", help=f"sweep root directory (default {default})")


# --------------------------------------------------------------------------- handlers


def run_plan(args: argparse.Namespace) -> int:
    from srt_jax.models.factory import shape_label
    from srt_jax.sweep.plan import format_plan, make_plan
    from srt_jax.sweep.spec import default_root, load_spec

    spec = load_spec(args.spec)
    root = Path(args.root) if args.root else default_root(spec)
    plan = make_plan(
        spec,
        root=root,
        calibrate=args.calibrate,
        calibration_steps=args.calibration_steps,
        progress=not args.quiet,
    )
    summary = {
        "sweep": spec.name,
        "runs": [
            {
                "run_id": row.run.run_id,
                "shape": shape_label(row.run.config.model),
                "assignments": row.run.assignments,
                "budget": row.run.budget,
                "tokens": row.run.tokens,
                "compute": row.run.compute,
                "params": row.params.total,
                "params_non_embedding": row.params.non_embedding,
                "seconds": row.seconds,
            }
            for row in plan.rows
        ],
        "skipped": [
            {"assignments": s.assignments, "budget": s.budget, "reason": s.reason}
            for s in plan.skipped
        ],
        "total_compute": plan.total_compute,
        "total_seconds": plan.total_seconds,
    }
    finish(args, summary, format_plan(plan))
    return 0


def run_run(args: argparse.Namespace) -> int:
    from srt_jax.sweep.launch import (
        check_backend_options,
        counts_text,
        execute_sweep,
        register_sweep,
    )
    from srt_jax.sweep.spec import default_root, load_spec

    spec = load_spec(args.spec)
    root = Path(args.root) if args.root else default_root(spec)
    resolve_run_fn(args.run_fn)
    check_backend_options(args.backend, args.gpus_per_run)
    registered = register_sweep(spec, root)
    note(
        args,
        f"sweep {spec.name}: {sum(registered.counts.values())} runs in {root} "
        f"({registered.added} new; {counts_text(registered.counts)}); {registered.skipped} "
        "combinations skipped (see `sweep plan`)",
    )
    start = time.monotonic()
    counts = execute_sweep(
        root,
        backend=args.backend,
        workers=args.workers,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        heartbeat_timeout=args.heartbeat_timeout,
        max_attempts=args.max_attempts,
        run_fn=args.run_fn,
        progress=not args.quiet,
    )
    seconds = time.monotonic() - start
    summary = {"sweep": spec.name, "root": str(root), "counts": counts, "seconds": seconds}
    finish(
        args,
        summary,
        f"sweep {spec.name}: {counts_text(counts)} after {seconds:.0f} s; results in {root} "
        f"(`srt-jax sweep export --root {root}`, `srt-jax fit {root}`)",
    )
    if counts["failed"]:
        print(
            f"{counts['failed']} run(s) failed: `srt-jax sweep status --root {root}` shows why; "
            f"`srt-jax sweep retry-failed --root {root}` queues them again",
            file=sys.stderr,
        )
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    from srt_jax.sweep.launch import counts_text

    if args.root is None:
        roots = _sweep_roots()
        if not roots:
            raise DataError(f"no sweep under {SWEEPS_OUT}/ (give --root)")
        if len(roots) > 1:
            sweeps = []
            for root in roots:
                with Registry(root) as registry:
                    sweeps.append((root, registry.name(), registry.counts()))
            finish(
                args,
                {"sweeps": [{"root": str(r), "sweep": n, "counts": c} for r, n, c in sweeps]},
                "\n".join(f"{r}: {n}: {counts_text(c)}" for r, n, c in sweeps),
            )
            return 0
        args.root = str(roots[0])
    with Registry(args.root) as registry:
        summary = {
            "sweep": registry.name(),
            "root": str(registry.root),
            "counts": registry.counts(),
            "runs": [
                {key: run[key] for key in ("run_id", "status", "attempts", "D", "C", "error")}
                | {"loss": ((run["summary"] or {}).get("eval") or {}).get("loss")}
                for run in registry.runs()
            ],
        }
        finish(args, summary, format_status(registry))
    return 0


def format_status(registry: Registry) -> str:
    """Counts per status, then one line per run (shape, D, C, attempts, loss or error)."""
    from srt_jax.models.factory import shape_label
    from srt_jax.sweep.launch import counts_text
    from srt_jax.sweep.plan import skipped_lines

    runs = registry.runs()
    lines = [f"sweep {registry.name()} in {registry.root}: {counts_text(registry.counts())}"]
    header = ("run_id", "status", "attempts", "shape", "D", "C", "loss", "wall", "note")
    table = [header]
    now = time.time()
    for run in runs:
        summary = run["summary"] or {}
        model = from_dict(ModelConfig, run["config"].get("model"), where="model")
        remark = run["error"] or ""
        if run["status"] == "running":
            remark = f"{run['worker']}, heartbeat {now - (run['heartbeat'] or now):.0f}s ago"
        loss = (summary.get("eval") or {}).get("loss")
        table.append(
            (
                run["run_id"],
                run["status"],
                str(run["attempts"]),
                shape_label(model),
                f"{run['D']:,}",
                f"{run['C']:.3g}",
                "" if loss is None else f"{loss:.4f}",
                "" if summary.get("wall_s") is None else f"{summary['wall_s']:.0f}s",
                remark if len(remark) <= 100 else remark[:97] + "...",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines += skipped_lines((s["assignments"], s["budget"], s["reason"]) for s in registry.skipped())
    return "\n".join(lines)


def run_retry(args: argparse.Namespace) -> int:
    root = _one_root(args.root)
    with Registry(root) as registry:
        count = registry.retry_failed()
    finish(
        args,
        {"root": str(root), "retried": count},
        f"{count} failed run(s) of {root} are pending again; `srt-jax sweep run` runs them",
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    root = _one_root(args.root)
    runs_path, curves_path = export_sweep(root, args.out, args.fmt)
    finish(
        args,
        {"root": str(root), "runs": str(runs_path), "curves": str(curves_path)},
        f"wrote {runs_path} and {curves_path}; fit them with `srt-jax fit {runs_path.parent}`",
    )
    return 0


def run_worker(args: argparse.Namespace) -> int:
    if args.cores:
        os.sched_setaffinity(0, args.cores)
    finished = worker_loop(
        args.root,
        args.label,
        heartbeat_timeout=args.heartbeat_timeout,
        max_attempts=args.max_attempts,
        run_fn=resolve_run_fn(args.run_fn),
        parent_pid=args.parent_pid,
    )
    finish(
        args,
        {"worker": args.label, "finished": finished},
        f"worker {args.label}: {finished} run(s) finished; nothing left to claim",
    )
    return 0


# --------------------------------------------------------------------------- helpers


def _sweep_roots() -> list[Path]:
    if not SWEEPS_OUT.is_dir():
        return []
    return sorted(p.parent for p in SWEEPS_OUT.glob(f"*/{REGISTRY_FILE}"))


def _one_root(root: str | None) -> Path:
    if root is not None:
        return Path(root)
    roots = _sweep_roots()
    if len(roots) != 1:
        found = ", ".join(map(str, roots)) or "none"
        raise DataError(f"give --root: {len(roots)} sweeps under {SWEEPS_OUT}/ ({found})")
    return roots[0]

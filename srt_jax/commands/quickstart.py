"""``srt-jax quickstart``: the main job, end to end, on a built-in dataset.

Gets the data (MovieLens-100K from the package registry, or a synthetic log), runs the
small IsoFLOP sweep of ``sweeps/quickstart.yaml`` (4 compute budgets x 4 shapes) with the
local executor, exports it, fits the scaling law exactly as ``srt-jax fit`` does, and writes
the figures and ``report.md``. Everything goes under ``--out`` (default ``quickstart_out``),
in a directory named after the sweep (``quickstart``, ``quickstart-synthetic``): ``sweep/``
(the sweep root: registry, run directories, export) and ``fit/`` (fit.json, figures,
report.md, report.html). Running it again resumes an interrupted sweep (failed runs are
tried again) and refits.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from srt_jax.commands.argtypes import non_negative_int, positive_int
from srt_jax.commands.output import finish, note

if TYPE_CHECKING:
    from srt_jax.sweep.spec import SweepSpec

QUICKSTART_SPEC = Path(__file__).resolve().parents[2] / "sweeps" / "quickstart.yaml"
DATASETS = ("movielens-100k", "synthetic")
PROMISED_MINUTES = 10
QUICKSTART_SYNTHETIC = {"users": 4000, "items": 1500, "mean_length": 50.0, "seed": 0}
"""``data.synthetic`` of ``--data synthetic``: about twice MovieLens-100K's interactions."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quickstart`` command."""
    quickstart = subparsers.add_parser(
        "quickstart",
        help="the main job: data, a small IsoFLOP sweep, a scaling-law fit, figures",
        description="Get the data, run the IsoFLOP sweep of sweeps/quickstart.yaml (4 budgets "
        "x 4 shapes), fit L(N, D) with bootstrap intervals, write figures and a report. At "
        f"most {PROMISED_MINUTES} minutes on a 2-core CPU; run it again to resume.",
    )
    quickstart.add_argument(
        "--data", choices=DATASETS, default=DATASETS[0], help=f"default {DATASETS[0]}"
    )
    quickstart.add_argument(
        "--out", default="quickstart_out", help="output directory (default quickstart_out)"
    )
    quickstart.add_argument(
        "--workers",
        type=positive_int,
        default=min(len(os.sched_getaffinity(0)), 4),
        help="runs at a time (default: the cores available, at most 4)",
    )
    quickstart.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=200,
        help="bootstrap resamples for the fit's intervals (default 200)",
    )
    quickstart.add_argument(
        "--spec",
        default=str(QUICKSTART_SPEC),
        help="the sweep to run (default sweeps/quickstart.yaml of this checkout)",
    )
    quickstart.set_defaults(handler=run_quickstart)


def with_dataset(spec: SweepSpec, dataset: str) -> SweepSpec:
    """``spec`` training on ``dataset`` instead of its own; the name says which.

    Switched to ``synthetic`` without synthetic settings of its own, the spec gets
    :data:`QUICKSTART_SYNTHETIC`, a log large enough that no run of the quickstart sweep
    passes its epoch cap.
    """
    data = {**spec.base.get("data", {}), "dataset": dataset}
    if data == spec.base.get("data"):
        return spec
    if dataset == "synthetic":
        data.setdefault("synthetic", dict(QUICKSTART_SYNTHETIC))
    return dataclasses.replace(
        spec, name=f"{spec.name}-{dataset}", base={**spec.base, "data": data}
    )


def run_quickstart(args: argparse.Namespace) -> int:
    """Data, sweep, export, fit; prints where the results are."""
    from srt_jax.commands.fit import fit_summary, summary_table
    from srt_jax.config import DataConfig, from_dict
    from srt_jax.data.sources import open_dataset
    from srt_jax.errors import RunFailedError
    from srt_jax.scaling.analysis import FitOptions, analyse
    from srt_jax.scaling.loaders import load_points
    from srt_jax.scaling.report import write_results
    from srt_jax.sweep.export import export_sweep
    from srt_jax.sweep.launch import counts_text, execute_sweep, register_sweep
    from srt_jax.sweep.registry import Registry
    from srt_jax.sweep.spec import load_spec

    started = time.monotonic()
    out = Path(args.out)
    note(
        args,
        f"srt-jax quickstart: IsoFLOP sweep on {args.data}, then a scaling-law fit; it takes "
        f"at most {PROMISED_MINUTES} minutes on a 2-core CPU (less when resumed). Results go "
        f"to {out}/.",
    )
    spec = with_dataset(load_spec(args.spec), args.data)
    data_cfg = from_dict(DataConfig, spec.base.get("data"), where="data")
    store = open_dataset(data_cfg)
    note(
        args,
        f"[1/3] data {data_cfg.dataset}: {store.n_users:,} users, {store.n_items:,} items, "
        f"{store.n_interactions:,} interactions ({time.monotonic() - started:.0f} s)",
    )

    root = out / spec.name / "sweep"
    registered = register_sweep(spec, root)
    counts, retried = registered.counts, 0
    if counts["failed"]:
        with Registry(root) as registry:
            retried = registry.retry_failed()
            counts = registry.counts()
    note(
        args,
        f"[2/3] sweep {spec.name}: {sum(counts.values())} runs in {root} "
        f"({counts_text(counts)}; {registered.skipped} combinations skipped), "
        f"{args.workers} worker(s)",
    )
    if retried:
        note(args, f"      {retried} run(s) that failed last time are tried again")
    counts = execute_sweep(root, workers=args.workers, progress=not args.quiet)
    if counts["failed"]:
        raise RunFailedError(
            f"{counts['failed']} run(s) of the sweep failed: `srt-jax sweep status --root "
            f"{root}` shows why; run the quickstart again to retry them and resume"
        )
    runs_path, _ = export_sweep(root, None, "csv")
    note(args, f"      {counts_text(counts)}; exported to {runs_path.parent}")

    fit_dir = out / spec.name / "fit"
    note(args, f"[3/3] fitting the scaling law ({args.bootstrap} bootstrap resamples)")
    options = FitOptions(bootstrap=args.bootstrap, show_progress=not args.quiet)
    report = analyse(load_points(runs_path.parent), options)
    written = write_results(report, fit_dir)
    figures = [p for p in written if p.suffix == ".png"]
    seconds = time.monotonic() - started
    summary = {
        "sweep": spec.name,
        "root": str(root),
        "counts": counts,
        "export": str(runs_path.parent),
        "figures": [str(p) for p in figures],
        "report": str(fit_dir / "report.md"),
        "report_html": str(fit_dir / "report.html"),
        "seconds": seconds,
        **fit_summary(fit_dir, written),
    }
    text = "\n".join(
        [
            summary_table(report),
            f"figures: {', '.join(str(p) for p in figures)}",
            f"report:  {fit_dir / 'report.md'}",
            f"page:    {fit_dir / 'report.html'} (the report with its figures, for a browser)",
            f"done in {seconds:.0f} s",
        ]
    )
    finish(args, summary, text)
    return 0

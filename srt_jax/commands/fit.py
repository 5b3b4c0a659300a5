"""``srt-jax fit``: fit scaling laws to results and write fit.json, figures and report.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from srt_jax.commands.argtypes import (
    non_negative_int,
    positive_float,
    positive_float_list,
    positive_int,
)
from srt_jax.commands.output import finish, note
from srt_jax.config import flat_dict, read_yaml
from srt_jax.errors import DataError
from srt_jax.scaling.analysis import FitOptions, FitReport, analyse, law_estimates
from srt_jax.scaling.groups import Group, analyse_groups, write_groups
from srt_jax.scaling.loaders import ColumnNames, load_points, resolve_source
from srt_jax.scaling.mlflow_sqlite import (
    PRESETS,
    SRT_JAX_NAMES,
    SRT_JAX_TAG,
    MlflowNames,
    names_for,
)
from srt_jax.scaling.report import HEADLINE, PREDICTED, write_results
from srt_jax.scaling.run_values import load_run_values
from srt_jax.scaling.transfer_curve import (
    analyse_transfer,
    markdown,
    read_runs,
    target_runs,
    write_transfer_fit,
)

FORMATS = ("auto", "runs", "export", "csv", "mlflow")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` command."""
    fit = subparsers.add_parser(
        "fit",
        help="fit scaling laws (approaches 1/2/3, bootstrap) and plot them",
        description="Load results (run directories, a sweep export, a CSV table or an MLflow "
        "SQLite database), fit L(N, D) = E + A/N^alpha + B/D^beta by summed Huber loss with "
        "bootstrap intervals, approaches 1 and 2 where curves or IsoFLOP groups allow, a "
        "held-out check and alternative laws; write fit.json, PNG+SVG figures and report.md. "
        "With --group-by KEY the runs are split by their value of KEY and each group is "
        "fitted on its own into OUT/<value>/, with a comparison figure and table in OUT.",
    )
    fit.add_argument("source", metavar="SOURCE", help="results file or directory")
    fit.add_argument("--out", help="output directory (default ./fit-<SOURCE name>)")
    fit.add_argument(
        "--format",
        "--loader",
        dest="fmt",
        default="auto",
        choices=FORMATS,
        help="how to read SOURCE (default auto: from its name and layout)",
    )
    fit.add_argument(
        "--params",
        default="total",
        choices=("total", "non_embedding"),
        help="which parameter count is N (default total)",
    )
    fit.add_argument(
        "--target-compute",
        type=positive_float,
        help="FLOPs at which to predict N*, D* and the loss (default 10x the largest run)",
    )
    fit.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=1000,
        help="bootstrap resamples of whole runs (default 1000; 0 for none)",
    )
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    fit.add_argument(
        "--workers",
        type=positive_int,
        help="processes fitting the bootstrap resamples (default: one per CPU, up to 8, from "
        "200 resamples; the intervals do not depend on it)",
    )
    fit.add_argument(
        "--flops-per-param-token",
        type=positive_float,
        help="k in C = k N D (default: median C/(N D) of the runs; a table with only one of "
        "D and C is completed with 6 unless given)",
    )
    fit.add_argument(
        "--huber-delta", type=positive_float, default=1e-3, help="Huber threshold (1e-3)"
    )
    fit.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.1,
        help="share of the largest-compute runs held out to check predictions (0.1; 0: off)",
    )
    fit.add_argument(
        "--extrapolation-factor",
        type=positive_float,
        default=10.0,
        help="the extrapolation check fits the runs at budgets <= C_max / FACTOR and predicts "
        "the largest budget's runs (default 10)",
    )
    fit.add_argument(
        "--max-extrapolation-error",
        type=positive_float,
        default=0.02,
        help="largest mean |relative error| of that check for a supported fit (default 0.02)",
    )
    fit.add_argument(
        "--loss-at",
        choices=("final", "best"),
        default="final",
        help="take each run's loss at the end of training or at its lowest evaluation",
    )
    fit.add_argument(
        "--exclude-highest-loss",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="drop the K runs with the highest loss (Epoch AI's Chinchilla refit drops 5)",
    )
    fit.add_argument(
        "--group-by",
        metavar="KEY",
        help="fit each value of KEY separately (a dotted config key such as model.backbone; "
        "a column of a CSV table; an MLflow run parameter): OUT/<value>/ per group, plus "
        "OUT/compare_loss_vs_compute.png|svg, compare.md and compare.json; groups share "
        "one target compute and --exclude-highest-loss applies within each group",
    )
    fit.add_argument(
        "--isoflop-budgets",
        type=positive_float_list,
        help="comma-separated FLOP budgets for approach 2 (default: 8 log-spaced)",
    )
    columns = fit.add_argument_group("columns of a plain table (--format csv)")
    defaults = ColumnNames()
    for name in ColumnNames.__dataclass_fields__:
        columns.add_argument(
            f"--{name.replace('_', '-')}-col",
            dest=f"col_{name}",
            default=getattr(defaults, name),
            help=f"default {getattr(defaults, name)!r}",
        )
    mlflow = fit.add_argument_group("MLflow names (--format mlflow)")
    mlflow.add_argument("--mlflow-experiment", help="experiment name or id (default: all)")
    mlflow.add_argument(
        "--mlflow-preset",
        choices=("auto", *PRESETS),
        default="auto",
        help="the names below: 'srt' (the SRT sweep's), 'srt-jax' (a store srt-jax's MLflow "
        "tracker wrote) or 'auto' (srt-jax's when the store's runs carry the tag "
        f"{SRT_JAX_TAG!r}); each option below overrides one name",
    )
    srt_names = PRESETS["srt"]
    for name, text in (
        ("n_total", "parameter holding the total parameter count"),
        ("n_non_embedding", "parameter holding the non-embedding count"),
        ("compute", "parameter holding FLOPs (see --mlflow-compute-unit)"),
        ("data_size", "parameter holding tokens (see --mlflow-data-unit)"),
        ("batch_size", "parameter holding sequences per batch"),
        ("loss", "metric holding the held-out loss"),
        ("fallback_loss", "metric used when the loss metric is absent"),
        ("metric_prefix", "prefix of ranking metrics to import"),
    ):
        mlflow.add_argument(
            f"--mlflow-{name.replace('_', '-')}",
            dest=f"mlflow_{name}",
            help=f"{text} (srt: {getattr(srt_names, name)!r}, "
            f"srt-jax: {getattr(SRT_JAX_NAMES, name)!r})",
        )
    mlflow.add_argument(
        "--mlflow-where",
        action="append",
        type=_key_value,
        default=[],
        metavar="PARAM=VALUE",
        help="keep only runs with this parameter value (repeatable), e.g. nce_num_negatives=100",
    )
    mlflow.add_argument(
        "--mlflow-compute-unit",
        choices=("batch", "run"),
        help="the compute parameter counts one training batch (srt) or the whole run (srt-jax)",
    )
    mlflow.add_argument(
        "--mlflow-data-unit",
        choices=("epoch", "run"),
        help="the data-size parameter counts one epoch (srt) or the whole run (srt-jax)",
    )
    fit.set_defaults(handler=run_fit)
    transfer = subparsers.add_parser(
        "fit-transfer",
        help="downstream quality of fine-tuned runs against their parent's pre-training FLOPs",
        description="Read every done run under RUNS: the fine-tuned ones (train.init_from; "
        "their summary.json records the parent's FLOPs) and, on the same target store, the "
        "ones trained from scratch (the baseline of the fine-tuned runs of the same size). "
        "Fit the held-out loss, L(C) = E + A (C/C0)^-alpha, and a ranking metric, "
        "M(C) = M_inf - A (C/C0)^-alpha, against the parent's pre-training FLOPs C; write "
        "transfer_fit.json, transfer_fit.png/.svg and transfer_fit.md.",
    )
    transfer.add_argument("runs", metavar="RUNS", help="directory holding the run directories")
    transfer.add_argument("--out", help="output directory (default ./fit-transfer-<RUNS name>)")
    transfer.add_argument(
        "--metric", default="ndcg@10", help="test metric of eval (default ndcg@10)"
    )
    transfer.add_argument(
        "--dataset", help="target store (the dataset name of the runs), if they have several"
    )
    transfer.add_argument(
        "--freeze",
        default="none",
        choices=("none", "backbone", "progressive"),
        help="fit the fine-tuned runs of this train.transfer.freeze mode (default none)",
    )
    transfer.set_defaults(handler=run_fit_transfer)


def mlflow_names(args: argparse.Namespace) -> MlflowNames | None:
    """The MLflow names the options choose (None unless SOURCE is an MLflow store): the
    preset (``auto``: :func:`names_for` the store) with each given option replacing its
    name."""
    path, fmt = resolve_source(args.source, args.fmt)
    if fmt != "mlflow":
        return None
    preset = names_for(path) if args.mlflow_preset == "auto" else PRESETS[args.mlflow_preset]
    given = {
        name: getattr(args, f"mlflow_{name}")
        for name in MlflowNames.__dataclass_fields__
        if name != "where" and getattr(args, f"mlflow_{name}", None) is not None
    }
    return dataclasses.replace(preset, **given, where=tuple(args.mlflow_where))


def run_fit(args: argparse.Namespace) -> int:
    """Load, analyse, write; print the headline numbers."""
    columns = ColumnNames(
        **{name: getattr(args, f"col_{name}") for name in ColumnNames.__dataclass_fields__}
    )
    mlflow = mlflow_names(args)
    points = load_points(
        args.source,
        fmt=args.fmt,
        columns=columns,
        mlflow=mlflow,
        flops_per_param_token=args.flops_per_param_token or 6.0,
    )
    if args.loss_at == "best":
        points = points.at_best_checkpoint()
    options = FitOptions(
        params=args.params,
        target_compute=args.target_compute,
        bootstrap=args.bootstrap,
        seed=args.seed,
        workers=args.workers,
        delta=args.huber_delta,
        flops_per_param_token=args.flops_per_param_token,
        holdout_fraction=args.holdout_fraction,
        isoflop_budgets=args.isoflop_budgets,
        show_progress=not args.quiet,
        extrapolation_factor=args.extrapolation_factor,
        max_extrapolation_error=args.max_extrapolation_error,
    )
    out = Path(args.out) if args.out else Path(f"fit-{Path(args.source).name.split('.')[0]}")
    if args.group_by:
        values = load_run_values(
            args.source,
            args.group_by,
            fmt=args.fmt,
            columns=columns,
            mlflow=mlflow,
            read_config=flat_config,
        )
        groups = analyse_groups(points, values, options, args.exclude_highest_loss)
        written = write_groups(groups, args.group_by, out)
        summary = {"out": str(out), "written": [str(p) for p in written]}
        summary["compare"] = json.loads((out / "compare.json").read_text())
        finish(args, summary, group_summary(groups, args.group_by, out))
        return 0
    report = analyse(points.without_highest_loss(args.exclude_highest_loss), options)
    written = write_results(report, out)
    summary = {"out": str(out), **fit_summary(out, written)}
    finish(args, summary, f"{summary_table(report)}\nwrote {len(written)} files to {out}")
    return 0


def run_fit_transfer(args: argparse.Namespace) -> int:
    """Read the runs, fit both laws, write; print the per-budget table and the laws."""
    root = Path(args.runs)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of runs")
    runs, skipped = read_runs(root, args.metric, flat_config)
    for line in skipped:
        note(args, line)
    tuned, scratch = target_runs(runs, root, args.dataset, args.freeze)
    analysis = analyse_transfer(tuned, scratch, args.metric)
    out = Path(args.out) if args.out else Path(f"fit-transfer-{root.resolve().name}")
    written = write_transfer_fit(analysis, out)
    summary = {"out": str(out), "written": [str(p) for p in written], "analysis": analysis}
    finish(args, summary, f"{markdown(analysis)}\nwrote {len(written)} files to {out}")
    return 0


def fit_summary(out: Path, written: list[Path]) -> dict:
    """The JSON summary of a fit written into ``out`` (:func:`write_results`): the paths
    written and the fit record (``fit.json``)."""
    return {"written": [str(p) for p in written], "fit": json.loads((out / "fit.json").read_text())}


def flat_config(path: Path) -> dict[str, object]:
    """A run directory's config.yaml as ``{"section.key": value}`` (for --group-by)."""
    return flat_dict(read_yaml(path)[0])


def group_summary(groups: list[Group], key: str, out: Path) -> str:
    """Per group: its headline table and where it was written, or why it was not fitted."""
    blocks = []
    for group in groups:
        title = f"{key} = {group.label} ({len(group.points)} runs)"
        if group.report is None:
            blocks.append(f"== {title}: not fitted: {group.reason}")
        else:
            blocks.append(f"== {title} -> {out / group.directory}\n{summary_table(group.report)}")
    fitted = sum(g.report is not None for g in groups)
    blocks.append(
        f"fitted {fitted} of {len(groups)} groups of {key}; comparison in "
        f"{out / 'compare.md'} and {out / 'compare_loss_vs_compute.png'}"
    )
    return "\n".join(blocks)


def summary_table(report: FitReport) -> str:
    """Plain-text table of the headline estimates and predictions with intervals."""
    estimates = law_estimates(report.fit, report.k, report.target_compute)
    intervals = report.bootstrap.summary() if report.bootstrap is not None else {}
    grade = report.grade
    verdict = (
        "fit supported by the data"
        if grade["supported"]
        else "fit NOT supported by the data: " + "; ".join(grade["reasons"])
    )
    rows = [verdict, f"{'quantity':<16}{'estimate':>14}{'95% interval':>32}"]
    for name in (*HEADLINE, *PREDICTED):
        lo, hi = intervals.get(name, {}).get("interval", (float("nan"), float("nan")))
        rows.append(f"{name:<16}{estimates[name]:>14.5g}{f'[{lo:.5g}, {hi:.5g}]':>32}")
    rows.append(
        f"objective {report.fit.objective:.6g} (summed Huber, {report.fit.n_points} points), "
        f"converged {report.fit.converged}, k = {report.k:.4g}, "
        f"target C = {report.target_compute:.4g}"
    )
    return "\n".join(rows)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not PARAM=VALUE")
    return key, value

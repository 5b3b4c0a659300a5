"""Writing a fit: ``fit.json``, the figures (PNG + SVG), ``report.md`` that shows them and
``report.html``, the same page with its figures embedded and a table of every run.

Everything is written into a staging directory beside the output directory and moved into
place only when all of it succeeded, so a failed run leaves no half-written result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srt_jax import __version__
from srt_jax.scaling.analysis import FitReport, law_estimates
from srt_jax.scaling.html_report import report_html
from srt_jax.scaling.plots import Figure, draw_all

LAW_FORM = "L(N, D) = E + A / N^alpha + B / D^beta"
HEADLINE = ("alpha", "beta", "E", "A", "B", "a", "b", "G")
PREDICTED = ("N_opt", "D_opt", "loss_at_target")
LAW_PARAMS = ("E", "A", "B", "alpha", "beta")
"""Their bootstrap samples are kept in fit.json (``srt-jax advise`` reads them)."""


def fit_record(report: FitReport, figures: list[Figure] = ()) -> dict:
    """The content of fit.json (JSON-ready; NaN and infinities become null)."""
    fit, points = report.fit, report.points
    estimates = law_estimates(fit, report.k, report.target_compute)
    intervals = report.bootstrap.summary() if report.bootstrap is not None else {}
    fitted = fit.law.loss(report.n, points.tokens)
    record = {
        "srt_jax_version": __version__,
        "supported": report.grade["supported"],
        "grade": report.grade,
        "source": points.source,
        "notes": list(points.notes),
        "law": LAW_FORM,
        "params_kind": report.options.params,
        **{name: estimates[name] for name in HEADLINE},
        "intervals": {name: value["interval"] for name, value in intervals.items()},
        "bootstrap": {
            "resamples": report.options.bootstrap,
            "seed": report.options.seed,
            "level": 0.95,
            "method": "percentile, resampling whole runs",
            **report.warm_start.summary(),
            "estimates": intervals,
            "law_samples": {
                name: report.bootstrap.samples[name].tolist()
                for name in LAW_PARAMS
                if report.bootstrap is not None and name in report.bootstrap.samples
            },
        },
        "objective": {
            "value": fit.objective,
            "form": f"sum over points of Huber(delta={fit.delta:g}) of log(L_hat) - log(L)",
            "points": fit.n_points,
        },
        "convergence": fit.convergence(),
        "identifiability": report.identifiability,
        "flops_per_param_token": {
            "k": report.k,
            "derived": report.k_derived,
            "how": "median of C / (N D) over the runs"
            if report.k_derived
            else "given by --flops-per-param-token",
        },
        "predictions": {
            "target_compute": report.target_compute,
            **{name: estimates[name] for name in PREDICTED},
            "intervals": {
                name: intervals[name]["interval"] for name in PREDICTED if name in intervals
            },
        },
        "approach1": report.approach1.summary() if report.approach1 is not None else None,
        "approach2": report.approach2.summary() if report.approach2 is not None else None,
        "holdout": report.holdout,
        "extrapolation": report.extrapolation,
        "data_constrained": report.data_constrained,
        "alternatives": report.alternatives,
        "not_applicable": report.not_applicable,
        "points_used": {
            "count": len(points),
            "runs": [
                {
                    "run_id": str(points.run_id[i]),
                    "N": float(report.n[i]),
                    "D": float(points.tokens[i]),
                    "C": float(points.compute[i]),
                    "loss": float(points.loss[i]),
                    "fitted": float(fitted[i]),
                }
                for i in range(len(points))
            ],
        },
        "figures": {f.name: [p.name for p in f.files] for f in figures},
    }
    return json_ready(record)


def write_results(report: FitReport, out_dir: Path) -> list[Path]:
    """Write fit.json, the figures, report.md and report.html into ``out_dir``; return the
    written paths."""

    def fill(staging: Path) -> None:
        figures = draw_all(report, staging)
        record = fit_record(report, figures)
        text = report_markdown(report, record, figures)
        (staging / "fit.json").write_text(json.dumps(record, indent=1) + "\n")
        (staging / "report.md").write_text(text)
        page = report_html(text, staging, record["points_used"]["runs"], "Scaling-law fit")
        (staging / "report.html").write_text(page)

    return write_staged(out_dir, fill)


STAGING = ".staging-"
"""Staging directories are ``.<out name>.staging-<pid>-<random>`` beside the output."""
RECORDS = ("fit.json", "compare.json", "transfer_fit.json")
"""The machine-read records: moved into place after every other output."""


def write_staged(out_dir: Path, fill: Callable[[Path], None]) -> list[Path]:
    """Run ``fill(staging)`` on an empty staging directory beside ``out_dir``, then move what
    it wrote into ``out_dir`` (a directory replaces its namesake); return the moved paths.

    Nothing reaches ``out_dir`` unless ``fill`` returns. The records (:data:`RECORDS`) move
    last, so a process killed while moving leaves the previous record, never a record whose
    figures are missing. Staging directories of processes that were killed (their pid no
    longer runs) are removed first.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    prefix = f".{out_dir.name}{STAGING}{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    try:
        fill(staging)
        out_dir.mkdir(exist_ok=True)
        written = []
        for path in sorted(staging.iterdir(), key=lambda p: (p.name in RECORDS, p.name)):
            target = out_dir / path.name
            if path.is_dir() and target.is_dir():
                shutil.rmtree(target)
            path.replace(target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(out_dir: Path) -> None:
    """Remove the staging directories of ``out_dir`` left by processes no longer running."""
    for path in out_dir.parent.glob(f".{out_dir.name}{STAGING}*"):
        pid = path.name[len(f".{out_dir.name}{STAGING}") :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def report_markdown(report: FitReport, record: dict, figures: list[Figure]) -> str:
    """A Markdown page: the headline table, predictions, checks and every figure."""
    intervals = record["intervals"]
    lines = [
        "# Scaling-law fit",
        "",
        *_grade_lines(report.grade),
        "",
        f"Source: `{record['source']}` ({record['points_used']['count']} runs, "
        f"N = {record['params_kind']} parameters).",
        *[f"- {note}" for note in record["notes"]],
        "",
        f"## Law (approach 3): {LAW_FORM}",
        "",
        "| parameter | estimate | 95% interval |",
        "| --- | --- | --- |",
        *[
            f"| {name} | {fmt_value(record[name])} | {fmt_interval(intervals.get(name))} |"
            for name in HEADLINE
        ],
        "",
        f"Objective {record['objective']['form']}: {record['objective']['value']:.6g} over "
        f"{record['objective']['points']} points; converged: "
        f"{record['convergence']['converged']}.",
        "",
        "Flatness (relative rise of the objective with the parameter fixed, others refitted): "
        + "; ".join(
            f"{name} " + ", ".join(f"{k} {v:+.2%}" for k, v in rises.items())
            for name, rises in report.identifiability["profile_relative_objective_rise"].items()
        )
        + ".",
        "",
        f"## Compute-optimal allocation at C = {fmt_value(report.target_compute)} FLOPs",
        "",
        f"k = {fmt_value(report.k)} FLOPs per parameter-token "
        f"({record['flops_per_param_token']['how']}).",
        "",
        "| quantity | estimate | 95% interval |",
        "| --- | --- | --- |",
        *[
            f"| {name} | {fmt_value(record['predictions'][name])} | "
            f"{fmt_interval(record['predictions']['intervals'].get(name))} |"
            for name in PREDICTED
        ],
        "",
        "## Other estimates of a and b",
        "",
        *[
            f"- {name}: "
            + (
                f"a = {fmt_value(record[name]['a'])} {fmt_interval(intervals.get(f'{name}_a'))}, "
                f"b = {fmt_value(record[name]['b'])} {fmt_interval(intervals.get(f'{name}_b'))}"
                if record[name] is not None and record[name]["a"] is not None
                else f"not available ({report.not_applicable.get(name, 'no trusted minima')})"
            )
            for name in ("approach1", "approach2")
        ],
        "",
        "## Held-out check",
        "",
        _holdout_line(report.holdout),
        "",
        extrapolation_line(report.extrapolation),
        "",
        "## Data-constrained law (repeated epochs)",
        "",
        _data_constrained_line(report.data_constrained, report.not_applicable),
        "",
        "## Figures",
        "",
    ]
    for figure in figures:
        caption = figure.caption.replace("*", r"\*")  # N*, L* inside an italic caption
        lines += [f"![{figure.name}]({figure.files[0].name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _grade_lines(grade: dict) -> list[str]:
    """The verdict first: supported, or not and why."""
    if grade["supported"]:
        details = "; ".join(check["detail"] for check in grade["checks"].values())
        return [f"**Fit supported**: {details}."]
    lines = [
        "**Fit NOT supported by the data** (`srt-jax advise` refuses it):",
        "",
        *[f"- {reason}" for reason in grade["reasons"]],
    ]
    if grade.get("needs"):
        lines += [
            "",
            "What the data would need (orders of magnitude to plan the next sweep with):",
            "",
            *[f"- {need}" for need in grade["needs"]],
        ]
    return lines


def extrapolation_line(check: dict) -> str:
    """The extrapolation check in one paragraph: loss errors, then each metric's prediction."""
    if "skipped" in check:
        return f"Extrapolation check skipped: {check['skipped']}."
    inside = [r["inside"] for r in check["per_run"] if "inside" in r]
    within = f"; {sum(inside)} of {len(inside)} inside their 95% interval" if inside else ""
    metrics = "; ".join(
        f"{name} {m['predicted']:.4g} against {m['observed']:.4g} observed "
        f"({m['relative_error']:+.1%}, {m['form']})"
        for name, m in check.get("metrics", {}).items()
        if name.endswith(("@10", "_at_5"))  # fit.json has every cutoff, filtered variants
    )
    return (
        f"Extrapolation check: refitted on the {check['fit_on_runs']} runs at budgets <= "
        f"C_max / {check['factor']:g} ({fmt_value(check['fit_compute_max'])} FLOPs), the "
        f"{check['predicted_runs']} runs at the largest budget are predicted with mean "
        f"|relative error| {check['mean_abs_relative_error']:.2%}, max "
        f"{check['max_abs_relative_error']:.2%}{within}."
        + (
            f" Best metric at the largest budget, predicted by the refitted frontier laws: "
            f"{metrics}."
            if metrics
            else ""
        )
    )


def _data_constrained_line(result: dict | None, not_applicable: dict[str, str]) -> str:
    if result is None:
        return f"Not fitted: {not_applicable.get('data_constrained', 'not applicable')}."
    law = result["law"]
    why = law.get("R_star_reason", "at the end of its range")
    r_star = f"R\\* = {law['R_star']:.3g} repetitions" + (
        "" if law["R_star_identified"] else f" (not identified: {why})"
    )
    check = result["extrapolation"]
    versus = (
        f"skipped ({check['skipped']})"
        if "skipped" in check
        else f"mean |relative error| {check['mean_abs_relative_error']:.2%}, max "
        f"{check['max_abs_relative_error']:.2%}"
    )
    return (
        f"{result['runs_repeating']} runs repeat their data (up to "
        f"{result['max_epochs']:.1f} epochs). `{result['form']}`: {r_star}, alpha = "
        f"{law['alpha']:.3g}, beta = {law['beta']:.3g}, E = {law['E']:.4g}; objective "
        f"{law['objective']:.4g} against the plain law's {result['plain_objective']:.4g} "
        f"(one more parameter). Its extrapolation check (same budgets as above): {versus}."
    )


def _holdout_line(holdout: dict) -> str:
    if "skipped" in holdout:
        return f"Skipped: {holdout['skipped']}."
    return (
        f"Refitted without the {holdout['held_out_runs']} largest-compute runs "
        f"(C >= {fmt_value(holdout['compute_from'])}): mean |relative error| "
        f"{holdout['mean_abs_relative_error']:.2%}, max {holdout['max_abs_relative_error']:.2%}."
    )


def fmt_value(value) -> str:
    """A number in a table cell: 4 significant digits, None as n/a."""
    return "n/a" if value is None else f"{value:.4g}"


def fmt_interval(interval) -> str:
    """An interval (low, high) as ``[low, high]``; n/a when absent or open."""
    if interval is None or any(v is None for v in interval):
        return "n/a"
    return f"[{interval[0]:.4g}, {interval[1]:.4g}]"


def json_ready(value):
    """Convert numpy scalars/arrays to Python, non-finite floats to None, recursively."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

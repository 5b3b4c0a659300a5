"""Fits per group of runs (``srt-jax fit --group-by KEY``) and their comparison.

The runs are split by their value of KEY (:func:`srt_jax.scaling.run_values.load_run_values`:
a config key, a column or an MLflow parameter), and each group is analysed as a source of
its own (:func:`srt_jax.scaling.analysis.analyse`: its own law, k, bootstrap, held-out
check), all at one target compute (10x the largest compute of any group unless given) so
that their predictions compare. Runs without a value of KEY form the group ``unset``. A
group that cannot be fitted (too few runs) is kept with the reason instead of failing the
others.

:func:`write_groups` writes each fitted group's results (fit.json, figures, report.md) to
``OUT/<value>/`` and beside them ``compare_loss_vs_compute.png|svg`` (every group's runs
and fitted L*(C)), ``compare.md`` and ``compare.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srt_jax.errors import DataError
from srt_jax.scaling.analysis import (
    DEFAULT_TARGET_FACTOR,
    FitOptions,
    FitReport,
    analyse,
    law_estimates,
)
from srt_jax.scaling.approach3 import MIN_POINTS
from srt_jax.scaling.plots import Figure, compare_loss_vs_compute
from srt_jax.scaling.points import ScalingPoints
from srt_jax.scaling.report import (
    LAW_FORM,
    fmt_interval,
    fmt_value,
    json_ready,
    write_results,
    write_staged,
)
from srt_jax.scaling.run_values import RunValues

UNSET = "unset"
"""Label of the runs that have no value of the key."""
COMPARED = ("E", "A", "alpha", "B", "beta", "a", "b", "loss_at_target")
"""Estimates tabulated for every group in compare.md and compare.json."""
COMPARE_FILES = (
    "compare.md",
    "compare.json",
    "compare_loss_vs_compute.png",
    "compare_loss_vs_compute.svg",
)
"""Files written beside the group directories (no group directory takes their names)."""
KEYS_LISTED = 12
"""How many available keys an unknown-key error lists."""


@dataclass(frozen=True)
class Group:
    """One value of the key: its runs, and its analysis or why there is none.

    ``label`` is the value as text (``unset`` for runs without one); ``directory`` the
    name of its output directory; ``report`` None when ``reason`` says why it was not fitted.
    """

    label: str
    directory: str
    points: ScalingPoints
    report: FitReport | None = None
    reason: str | None = None


def split_points(points: ScalingPoints, values: RunValues) -> dict[str, ScalingPoints]:
    """The runs of ``points`` by their value of ``values.key`` (label -> points).

    Labels are sorted (numerically when every label is a number), ``unset`` last. An error
    names the key and some available keys when no run has a value of it.
    """
    labels = np.array([values.values.get(str(r)) or "" for r in points.run_id], dtype=object)
    found = sorted({str(v) for v in labels if v}, key=_sort_key(labels))
    if not found:
        raise DataError(_unknown_key_message(values))
    order = [*found, *([""] if (labels == "").any() else [])]
    if UNSET in found and "" in order:
        raise DataError(f"{values.key} has the value {UNSET!r}, the name of the runs without one")
    groups = {}
    for label in order:
        name = label or UNSET
        subset = points.take(np.flatnonzero(labels == label))
        groups[name] = dataclasses.replace(
            subset,
            notes=(
                *subset.notes,
                f"runs with {values.key} = {label}"
                if label
                else f"runs without a value of {values.key}",
            ),
        )
    return groups


def analyse_groups(
    points: ScalingPoints, values: RunValues, options: FitOptions, exclude_highest_loss: int = 0
) -> list[Group]:
    """Split ``points`` by ``values`` and analyse each group with ``options``.

    ``exclude_highest_loss`` runs are dropped within each group. A group too small to fit,
    or whose data the fit rejects, keeps its reason; an error if no group could be fitted.
    """
    target = options.target_compute or DEFAULT_TARGET_FACTOR * float(points.compute.max())
    shared = dataclasses.replace(options, target_compute=target)
    split = split_points(points, values)
    directories = _directories(list(split), values.key)
    groups = []
    for label, subset in split.items():
        group = Group(label, directories[label], subset)
        try:
            subset = subset.without_highest_loss(exclude_highest_loss)
            if len(subset) < MIN_POINTS:
                raise DataError(
                    f"{len(subset)} run(s), too few to fit (the law has 5 parameters: at "
                    f"least {MIN_POINTS} runs)"
                )
            group = dataclasses.replace(group, points=subset, report=analyse(subset, shared))
        except DataError as err:
            group = dataclasses.replace(group, reason=str(err))
        groups.append(group)
    if all(g.report is None for g in groups):
        reasons = "; ".join(f"{g.label}: {g.reason}" for g in groups)
        raise DataError(f"no group of {values.key} could be fitted ({reasons})")
    return groups


def compare_record(groups: list[Group], key: str, figures: list[Figure] = ()) -> dict:
    """The content of compare.json (JSON-ready): each group's law and prediction."""
    fitted = [g.report for g in groups if g.report is not None]
    rows = []
    for group in groups:
        row = {"value": group.label, "directory": group.directory, "runs": len(group.points)}
        report = group.report
        if report is None:
            rows.append({**row, "fitted": False, "reason": group.reason})
            continue
        estimates = law_estimates(report.fit, report.k, report.target_compute)
        intervals = report.bootstrap.summary() if report.bootstrap is not None else {}
        rows.append(
            {
                **row,
                "fitted": True,
                **{name: estimates[name] for name in COMPARED},
                "k": report.k,
                "converged": report.fit.converged,
                "supported": report.grade["supported"],
                "reasons": report.grade["reasons"],
                "extrapolation_error": report.extrapolation.get("mean_abs_relative_error"),
                "intervals": {n: intervals[n]["interval"] for n in COMPARED if n in intervals},
            }
        )
    return json_ready(
        {
            "group_by": key,
            "source": groups[0].points.source,
            "law": LAW_FORM,
            "target_compute": fitted[0].target_compute,
            "bootstrap_resamples": fitted[0].options.bootstrap,
            "groups": rows,
            "figures": {f.name: [p.name for p in f.files] for f in figures},
        }
    )


def compare_markdown(record: dict, figures: list[Figure]) -> str:
    """compare.md: one table row per group, the groups not fitted, and the figure."""
    key = record["group_by"]
    header = ["runs", "grade", *COMPARED[:-1], "k", "L* at target"]
    lines = [
        f"# Scaling-law fits by `{key}`",
        "",
        f"Source: `{record['source']}`. Each group is fitted on its own ({record['law']}, "
        "approach 3; its full report is in its directory). L* is the compute-optimal loss "
        f"at the target compute C = {fmt_value(record['target_compute'])} FLOPs under the "
        "group's own k (FLOPs per parameter-token); brackets are 95% bootstrap intervals"
        + (" (none: --bootstrap 0)." if not record["bootstrap_resamples"] else "."),
        "",
        f"| {key} | " + " | ".join(header) + " |",
        "| --- " * (len(header) + 1) + "|",
    ]
    not_fitted = []
    for row in record["groups"]:
        if not row["fitted"]:
            not_fitted.append(f"- {row['value']}: not fitted: {row['reason']}")
            continue
        cells = [str(row["runs"]), _grade_cell(row)]
        for name in (*COMPARED[:-1], "k", "loss_at_target"):
            interval = row["intervals"].get(name)
            cells.append(fmt_value(row[name]) + (f" {fmt_interval(interval)}" if interval else ""))
        link = f"[{row['value']}]({row['directory']}/report.md)"
        lines.append(f"| {link} | " + " | ".join(cells) + " |")
    if not_fitted:
        lines += ["", "Groups not fitted:", "", *not_fitted]
    lines += ["", "## Figures", ""]
    for figure in figures:
        caption = figure.caption.replace("*", r"\*")
        lines += [f"![{figure.name}]({figure.files[0].name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _grade_cell(row: dict) -> str:
    """``supported``, or ``NOT supported`` with the extrapolation error where it ran."""
    error = row.get("extrapolation_error")
    detail = "" if error is None else f" (extrapolation error {error:.1%})"
    return ("supported" if row["supported"] else "NOT supported") + detail


def write_groups(groups: list[Group], key: str, out_dir: Path) -> list[Path]:
    """Each fitted group's results in ``out_dir/<directory>/``, the comparison figure,
    compare.md and compare.json in ``out_dir``; return the paths written (directories for
    the groups). Nothing reaches ``out_dir`` unless all of it was written."""
    fitted = {g.label: g.report for g in groups if g.report is not None}

    def fill(staging: Path) -> None:
        for group in groups:
            if group.report is not None:
                write_results(group.report, staging / group.directory)
        figures = [compare_loss_vs_compute(fitted, key, staging)]
        record = compare_record(groups, key, figures)
        (staging / "compare.json").write_text(json.dumps(record, indent=1) + "\n")
        (staging / "compare.md").write_text(compare_markdown(record, figures))

    return write_staged(out_dir, fill)


def _directories(labels: list[str], key: str) -> dict[str, str]:
    """A directory name per label: characters other than letters, digits, ``.-_`` become
    ``_``; an error if two labels end up with one name (a name of :data:`COMPARE_FILES`
    takes a leading ``_``)."""
    names = {}
    for label in labels:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip(".") or "_"
        if name in COMPARE_FILES:
            name = f"_{name}"
        clash = [other for other, taken in names.items() if taken == name]
        if clash:
            raise DataError(
                f"values {clash[0]!r} and {label!r} of {key} would share the output "
                f"directory {name!r}"
            )
        names[label] = name
    return names


def _sort_key(labels: np.ndarray):
    """Numeric order when every label is a number, else text order."""
    try:
        [float(v) for v in labels if v]
    except ValueError:
        return str
    return float


def _unknown_key_message(values: RunValues) -> str:
    """No run has ``values.key``: name it and list close or first available keys."""
    available = list(values.available)
    close = difflib.get_close_matches(values.key, available, n=5, cutoff=0.6)
    if close:
        hint = f"did you mean {' or '.join(close)}?"
    else:
        more = len(available) - KEYS_LISTED
        hint = "available: " + (
            ", ".join(available[:KEYS_LISTED]) + (f" and {more} more" if more > 0 else "")
            if available
            else "none"
        )
    return f"{values.source}: no run has a value of {values.key!r} to group by ({hint})"

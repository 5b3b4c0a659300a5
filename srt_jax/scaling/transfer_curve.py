"""Downstream quality against the pre-training compute of the parent model (``fit-transfer``).

SRT's transfer claim (Zivic et al. 2024): the more compute a model was pre-trained with, the
better it does after fine-tuning on a small downstream domain. A fine-tuned run
(``train.init_from``) records its parent's parameters, tokens and FLOPs in ``summary.json``
(``init_from.parent_flops``, :mod:`srt_jax.train.init_from`); this module reads every done
run under a directory (the fine-tuned ones of one ``train.transfer.freeze`` mode) and fits,
against the parent's pre-training FLOPs ``C``:

- the held-out loss (nats per target), decreasing: ``L(C) = E + A (C / C0)^-alpha``;
- a ranking metric (NDCG@10 by default), increasing and saturating:
  ``M(C) = M_inf - A (C / C0)^-alpha``;

``C0`` is the smallest parent's FLOPs, so ``A`` is the gap at the smallest parent. Runs
without ``init_from`` on the same target store are the from-scratch baseline; one with the
parameter count of a fine-tuned group is that group's baseline, and the gain is the
difference of the two means. The laws are :func:`srt_jax.scaling.frontier.fit_power_law`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from srt_jax.errors import DataError
from srt_jax.scaling.files import read_json
from srt_jax.scaling.frontier import fit_power_law, law_values
from srt_jax.scaling.loaders import summary_paths
from srt_jax.scaling.plots import save
from srt_jax.scaling.report import write_staged

matplotlib.use("Agg")

KEYS = ("metric", "loss")
"""The figures of a run that are compared (``metric`` is the chosen ranking metric)."""


@dataclass(frozen=True)
class TransferRun:
    """One done run on the target store: fine-tuned (``parent_flops`` set) or from scratch."""

    run_dir: str
    dataset: str
    params: int
    parent_flops: float | None
    parent_params: int | None
    freeze: str
    loss: float
    metric: float


def read_runs(
    root: Path, metric: str, read_config: Callable[[Path], dict[str, object]]
) -> tuple[list[TransferRun], list[str]]:
    """Every done run under ``root`` with a held-out loss and ``metric`` in its ``eval``;
    the notes say what was skipped and why. ``read_config(path)`` reads a run's config.yaml
    as ``{"section.key": value}``."""
    runs, notes = [], []
    for path in summary_paths(Path(root)):
        summary = read_json(path)
        figures = summary.get("eval") or {}
        if summary.get("status") != "done":
            notes.append(f"{path.parent}: status {summary.get('status')!r}, skipped")
            continue
        if not all(_finite(figures.get(key)) for key in ("loss", metric)):
            notes.append(f"{path.parent}: no finite eval loss and {metric}, skipped")
            continue
        parent = summary.get("init_from") or {}
        config = path.parent / "config.yaml"
        freeze = read_config(config).get("train.transfer.freeze") if config.exists() else None
        runs.append(
            TransferRun(
                run_dir=str(path.parent),
                dataset=str((summary.get("dataset") or {}).get("name")),
                params=int(summary["params_total"]),
                parent_flops=parent.get("parent_flops"),
                parent_params=parent.get("parent_params"),
                freeze=str(freeze or "none"),
                loss=float(figures["loss"]),
                metric=float(figures[metric]),
            )
        )
    return runs, notes


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def target_runs(
    runs: list[TransferRun], root: Path, dataset: str | None, freeze: str = "none"
) -> tuple[list[TransferRun], list[TransferRun]]:
    """(fine-tuned, from-scratch) runs on one target store: ``dataset`` if given, else the
    only store that fine-tuned runs were trained on; the fine-tuned runs are those whose
    ``train.transfer.freeze`` is ``freeze``."""
    tuned = [r for r in runs if r.parent_flops is not None and r.freeze == freeze]
    stores = sorted({r.dataset for r in tuned})
    if not tuned:
        raise DataError(
            f"{root}: no done fine-tuned run with train.transfer.freeze {freeze!r} "
            "(summary.json with init_from.parent_flops); fine-tune with "
            "train.init_from=PARENT_RUN first"
        )
    if dataset is None and len(stores) > 1:
        raise DataError(
            f"{root}: fine-tuned runs on {len(stores)} target stores ({', '.join(stores)}); "
            "choose one with --dataset"
        )
    chosen = dataset if dataset is not None else stores[0]
    if chosen not in stores:
        raise DataError(f"{root}: no fine-tuned run on store {chosen!r} (found: {stores})")
    return (
        [r for r in tuned if r.dataset == chosen],
        [r for r in runs if r.parent_flops is None and r.dataset == chosen],
    )


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def analyse_transfer(
    tuned: list[TransferRun], scratch: list[TransferRun], metric: str
) -> dict[str, Any]:
    """Per parent budget: fine-tuned figures, the same-size scratch baseline and the gain; the
    two laws; the trend of the metric's gain per decade of parent compute."""
    groups = []
    for flops in sorted({r.parent_flops for r in tuned}):
        runs = [r for r in tuned if r.parent_flops == flops]
        base = [r for r in scratch if r.params == runs[0].params]
        group: dict[str, Any] = {
            "parent_flops": flops,
            "parent_params": runs[0].parent_params,
            "params": runs[0].params,
            "finetuned": {key: _mean_std([getattr(r, key) for r in runs]) for key in KEYS},
            "scratch": (
                {key: _mean_std([getattr(r, key) for r in base]) for key in KEYS} if base else None
            ),
        }
        if base:
            group["gain"] = {
                key: group["finetuned"][key]["mean"] - group["scratch"][key]["mean"] for key in KEYS
            }
        groups.append(group)
    gains = [(g["parent_flops"], g["gain"]["metric"]) for g in groups if "gain" in g]
    slope = (
        float(np.polyfit(np.log10([c for c, _ in gains]), [v for _, v in gains], 1)[0])
        if len({c for c, _ in gains}) > 1
        else None
    )
    flops = [r.parent_flops for r in tuned]
    return {
        "metric": metric,
        "dataset": tuned[0].dataset,
        "finetuned_runs": len(tuned),
        "scratch_runs": len(scratch),
        "budgets": groups,
        "loss_law": fit_power_law(flops, [r.loss for r in tuned], increasing=False),
        "metric_law": fit_power_law(flops, [r.metric for r in tuned], increasing=True),
        "metric_gain_per_decade": slope,
        "runs": [dataclasses.asdict(r) for r in (*tuned, *scratch)],
    }


def draw(analysis: dict[str, Any], out_dir: Path) -> tuple[Path, ...]:
    """Metric and loss against parent FLOPs: every fine-tuned run, group means, the
    same-size scratch baselines at their group's budget, and the fitted laws."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    tuned = [r for r in analysis["runs"] if r["parent_flops"] is not None]
    groups = analysis["budgets"]
    budgets = np.array([g["parent_flops"] for g in groups])
    for ax, key, law_key, label in (
        (axes[0], "metric", "metric_law", f"test {analysis['metric']}"),
        (axes[1], "loss", "loss_law", "held-out loss (nats/target)"),
    ):
        ax.scatter([r["parent_flops"] for r in tuned], [r[key] for r in tuned], s=12, alpha=0.5)
        ax.plot(budgets, [g["finetuned"][key]["mean"] for g in groups], "o-", label="fine-tuned")
        with_base = [g for g in groups if g["scratch"]]
        if with_base:
            ax.errorbar(
                [g["parent_flops"] for g in with_base],
                [g["scratch"][key]["mean"] for g in with_base],
                yerr=[g["scratch"][key]["std"] for g in with_base],
                fmt="s--",
                capsize=3,
                label="from scratch (same size)",
            )
        law = analysis[law_key]["law"]
        if law:
            grid = np.geomspace(budgets.min(), budgets.max(), 50)
            ax.plot(grid, law_values(law, grid), "k:", label=f"fit, alpha={law['alpha']:.2f}")
        ax.set_xscale("log")
        ax.set_xlabel("parent pre-training FLOPs")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"fine-tuned on {Path(analysis['dataset']).name}")
    return save(fig, out_dir, "transfer_fit")


def markdown(analysis: dict[str, Any]) -> str:
    """The report: one row per parent budget, then the laws."""
    metric = analysis["metric"]
    lines = [
        f"# Downstream quality vs pre-training compute: {analysis['dataset']}",
        "",
        f"{analysis['finetuned_runs']} fine-tuned runs, {analysis['scratch_runs']} from scratch.",
        "",
        "![downstream quality against parent FLOPs](transfer_fit.png)",
        "",
        f"| parent FLOPs | parent params | params | {metric} fine-tuned | {metric} scratch "
        f"| {metric} gain | loss fine-tuned | loss scratch | loss gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in analysis["budgets"]:
        cells = [f"{g['parent_flops']:.3g}", str(g["parent_params"]), str(g["params"])]
        for key in KEYS:
            tuned, base = g["finetuned"][key], g["scratch"]
            cells.append(f"{tuned['mean']:.4f} ± {tuned['std']:.4f} (n={tuned['n']})")
            cells.append(f"{base[key]['mean']:.4f} ± {base[key]['std']:.4f}" if base else "-")
            cells.append(f"{g['gain'][key]:+.4f}" if "gain" in g else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, key in ((metric, "metric_law"), ("held-out loss", "loss_law")):
        lines.append(f"- {name}: {law_text(analysis[key])}")
    slope = analysis["metric_gain_per_decade"]
    if slope is not None:
        lines.append(f"- {metric} gain over scratch: {slope:+.4f} per decade of parent FLOPs")
    return "\n".join(lines) + "\n"


def law_text(fit: dict[str, Any]) -> str:
    """One line for a fit of :func:`fit_power_law`."""
    law = fit["law"]
    if law is None:
        return f"no law ({fit['reason']})"
    level = f"M_inf = {law['M_inf']:.4f} - " if "M_inf" in law else f"E = {law['E']:.4f} + "
    text = (
        f"{level}{law['A']:.4f} (C / {law['C0']:.3g})^-{law['alpha']:.3f}, "
        f"RMSE {fit['rmse']:.4f} over {fit['points']} runs"
    )
    return text if fit["identified"] else f"{text}; not identified: {fit['reason']}"


def write_transfer_fit(analysis: dict[str, Any], out_dir: Path) -> list[Path]:
    """``transfer_fit.json``, ``transfer_fit.png``/``.svg`` and ``transfer_fit.md`` into
    ``out_dir``, staged so that nothing half-written replaces an earlier fit."""

    def fill(staging: Path) -> None:
        draw(analysis, staging)
        (staging / "transfer_fit.md").write_text(markdown(analysis))
        (staging / "transfer_fit.json").write_text(json.dumps(analysis, indent=1) + "\n")

    return write_staged(out_dir, fill)

"""Figures of a fit, each written as PNG and SVG with a one-line caption.

Every figure has a title and axes labelled with units; compute is in FLOPs, losses in
nats per token, sizes in parameters, data in trained target tokens. Model size is shown
by a logarithmic colour scale shared by the scatter and curve plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import LogFormatter

from srt_jax.scaling.analysis import FitReport
from srt_jax.scaling.frontier import curve_frontier, pareto_frontier
from srt_jax.scaling.points import ScalingPoints
from srt_jax.scaling.predict import allocation_bands

matplotlib.use("Agg")

SIZE_CMAP = "viridis"
LAW_COLOUR = "tab:red"
GROUP_CMAP = "tab10"


@dataclass(frozen=True)
class Figure:
    """A written figure: its name, one-line caption and files (PNG, SVG)."""

    name: str
    caption: str
    files: tuple[Path, ...]


def _written(fig: plt.Figure, out_dir: Path, name: str, caption: str) -> Figure:
    """Save ``fig`` as ``name`` and describe it with its one-line ``caption``."""
    return Figure(name, caption, save(fig, out_dir, name))


def save(fig: plt.Figure, out_dir: Path, name: str) -> tuple[Path, ...]:
    """Write ``fig`` as ``name``.png and ``name``.svg in ``out_dir`` and close it."""
    paths = (out_dir / f"{name}.png", out_dir / f"{name}.svg")
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def draw_all(report: FitReport, out_dir: Path) -> list[Figure]:
    """Every figure that applies to ``report`` (IsoFLOP and curve plots need their data)."""
    figures = [
        loss_vs_compute(report, out_dir),
        optimal_allocation(report, out_dir),
        fit_residuals(report, out_dir),
    ]
    if report.approach2 is not None:
        figures.append(isoflop_profiles(report, out_dir))
    if report.points.has_curves:
        figures.append(training_curves(report, out_dir))
    return figures


def _limits(*arrays: np.ndarray, pad: float) -> tuple[float, float]:
    """Axis limits around the finite positive values of ``arrays``, widened by ``pad``x."""
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    return float(values.min() / pad), float(values.max() * pad)


def _compute_grid(report: FitReport) -> np.ndarray:
    low = float(report.points.compute.min())
    return np.geomspace(low, max(report.target_compute, float(report.points.compute.max())), 200)


def loss_vs_compute(report: FitReport, out_dir: Path) -> Figure:
    """Runs' loss against compute, the running-best frontier and the fitted L*(C)."""
    points = report.points
    fig, ax = plt.subplots(figsize=(7, 5))
    dots = ax.scatter(
        points.compute,
        points.loss,
        c=report.n,
        cmap=SIZE_CMAP,
        norm=LogNorm(),
        s=18,
        label="runs (final loss)",
    )
    fig.colorbar(dots, ax=ax, label=f"parameters N ({report.options.params})")
    best = pareto_frontier(points.compute, points.loss, lower_is_better=True)
    ax.step(
        points.compute[best],
        points.loss[best],
        where="post",
        color="black",
        lw=1,
        label="frontier (running best)",
    )
    frontier = _draw_frontier(ax, report, LAW_COLOUR)
    ax.set(
        xscale="log",
        ylim=_limits(points.loss, frontier, pad=1.05),
        xlabel="training compute C (FLOPs)",
        ylabel="loss (nats/token)",
        title="Loss against training compute",
    )
    ax.legend(fontsize=8)
    return _written(
        fig,
        out_dir,
        "loss_vs_compute",
        "Final loss of each run against its training compute (colour: model size), the "
        "running-best frontier (black) and the fitted compute-optimal law L*(C) (red; dashed "
        "where extrapolated, star at the target compute).",
    )


def _draw_frontier(ax: plt.Axes, report: FitReport, colour, *, labelled: bool = True) -> np.ndarray:
    """The fitted L*(C) of ``report`` in ``colour``: solid over the runs' compute, dashed
    beyond, its 95% bootstrap band where computed and a star at the target compute (legend
    labels unless ``labelled`` is False); returns L* along :func:`_compute_grid` [200]."""

    def label(text: str) -> str | None:
        return text if labelled else None

    law = report.fit.law
    grid = _compute_grid(report)
    inside = grid <= report.points.compute.max()
    frontier = law.frontier_loss(grid, report.k)
    ax.plot(grid[inside], frontier[inside], color=colour, label=label("fitted L*(C)"))
    ax.plot(
        grid[~inside], frontier[~inside], color=colour, ls="--", label=label("L*(C) extrapolated")
    )
    if report.bootstrap is not None:
        low, high = allocation_bands(report.bootstrap.samples, report.k, grid)["loss"]
        ax.fill_between(grid, low, high, color=colour, alpha=0.2, label=label("95% bootstrap band"))
    ax.plot(
        [report.target_compute],
        [law.frontier_loss(report.target_compute, report.k)],
        marker="*",
        ms=14,
        color=colour,
        ls="none",
        label=label("target compute"),
    )
    return frontier


def optimal_allocation(report: FitReport, out_dir: Path) -> Figure:
    """N*(C) and D*(C) of approach 3 with bands, and approaches 1 and 2 beside it."""
    grid = _compute_grid(report)
    law = report.fit.law
    bands = (
        allocation_bands(report.bootstrap.samples, report.k, grid)
        if report.bootstrap is not None
        else {}
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = (
        (
            "N_opt",
            law.optimal_params(grid, report.k),
            "optimal parameters N* (parameters)",
            report.n,
            "n",
        ),
        (
            "D_opt",
            law.optimal_tokens(grid, report.k),
            "optimal tokens D* (tokens)",
            report.points.tokens,
            "d",
        ),
    )
    for ax, (key, curve, label, observed, which) in zip(axes, panels, strict=True):
        ax.scatter(report.points.compute, observed, s=8, color="0.7", label="runs")
        ax.plot(grid, curve, color=LAW_COLOUR, label="approach 3")
        if key in bands:
            ax.fill_between(
                grid, *bands[key], color=LAW_COLOUR, alpha=0.2, label="approach 3, 95% band"
            )
        if report.approach1 is not None:
            a1 = report.approach1
            ax.scatter(
                a1.compute,
                a1.n_opt if which == "n" else a1.d_opt,
                s=10,
                color="tab:blue",
                label="approach 1 envelope",
            )
            law1 = a1.n_law if which == "n" else a1.d_law
            ax.plot(grid, law1(grid), color="tab:blue", ls=":", label="approach 1 fit")
        a2 = report.approach2
        if a2 is not None and a2.n_law is not None:
            trusted = [p for p in a2.profiles if p.trusted]
            c2 = np.array([p.compute for p in trusted])
            n2 = np.array([p.n_opt for p in trusted])
            ax.scatter(
                c2,
                n2 if which == "n" else c2 / (report.k * n2),
                marker="s",
                s=20,
                color="tab:green",
                label="approach 2 minima",
            )
            law2 = a2.n_law if which == "n" else a2.d_law
            ax.plot(grid, law2(grid), color="tab:green", ls="-.", label="approach 2 fit")
        ax.axvline(report.target_compute, color="0.5", lw=0.8, ls="--")
        ax.set(
            xscale="log",
            yscale="log",
            ylim=_limits(observed, curve, pad=10.0),
            xlabel="training compute C (FLOPs)",
            ylabel=label,
        )
        ax.legend(fontsize=7)
    axes[0].set_title("Compute-optimal model size N*(C)")
    axes[1].set_title("Compute-optimal data D*(C)")
    return _written(
        fig,
        out_dir,
        "optimal_allocation",
        "Compute-optimal parameters and tokens against compute: approach 3 law with its 95% "
        "bootstrap band (red), approach 1 envelope (blue) and approach 2 IsoFLOP minima "
        "(green) where the data allow; grey dots are the runs, the dashed line the target.",
    )


def fit_residuals(report: FitReport, out_dir: Path) -> Figure:
    """Fitted against observed loss, and log residuals against compute."""
    points = report.points
    fitted = report.fit.law.loss(report.n, points.tokens)
    residual = np.log(fitted) - np.log(points.loss)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    dots = left.scatter(points.loss, fitted, c=report.n, cmap=SIZE_CMAP, norm=LogNorm(), s=14)
    span = [min(points.loss.min(), fitted.min()), max(points.loss.max(), fitted.max())]
    left.plot(span, span, color="black", lw=0.8, label="fitted = observed")
    left.set(
        xlabel="observed loss (nats/token)",
        ylabel="fitted loss (nats/token)",
        title="Fitted against observed loss",
    )
    left.legend(fontsize=8)
    right.scatter(points.compute, residual, c=report.n, cmap=SIZE_CMAP, norm=LogNorm(), s=14)
    right.axhline(0.0, color="black", lw=0.8)
    for sign in (-1, 1):
        right.axhline(sign * report.fit.delta, color="0.5", lw=0.8, ls=":")
    right.set(
        xscale="log",
        xlabel="training compute C (FLOPs)",
        ylabel="log residual log(fitted / observed)",
        title="Residuals against compute",
    )
    fig.colorbar(dots, ax=right, label=f"parameters N ({report.options.params})")
    return _written(
        fig,
        out_dir,
        "fit_residuals",
        "Approach-3 fit against the data: fitted against observed loss (left) and log "
        "residuals against compute (right; dotted: the Huber threshold), coloured by size.",
    )


def isoflop_profiles(report: FitReport, out_dir: Path) -> Figure:
    """Loss against N at each budget, the parabola fits and their minima."""
    a2 = report.approach2
    fig, ax = plt.subplots(figsize=(7, 5))
    budgets = np.array([p.compute for p in a2.profiles])
    colours = plt.get_cmap("plasma")(np.linspace(0.0, 0.85, budgets.size))
    for profile, colour in zip(a2.profiles, colours, strict=True):
        ax.scatter(profile.n, profile.loss, color=colour, s=14, label=f"C = {profile.compute:.2g}")
        fine = np.geomspace(profile.n[0], profile.n[-1], 100)
        ax.plot(fine, np.polyval(profile.parabola, np.log(fine)), color=colour, lw=1)
        if np.isfinite(profile.n_opt):
            ax.plot(
                [profile.n_opt],
                [profile.loss_opt],
                marker="o",
                ms=9,
                color=colour,
                mfc=colour if profile.trusted else "none",
                ls="none",
            )
    ax.set(
        xscale="log",
        xlabel=f"parameters N ({report.options.params})",
        ylabel="loss (nats/token)",
        title="IsoFLOP profiles ("
        + ("training curves" if a2.from_curves else "grouped final points")
        + ")",
    )
    ax.legend(fontsize=7, ncol=2)
    return _written(
        fig,
        out_dir,
        "isoflop_profiles",
        "Loss against model size at fixed compute budgets with parabola fits in log N; "
        "filled circles are trusted minima, hollow ones are flagged (edge, off-centre).",
    )


def draw_curves(
    ax: plt.Axes,
    points: ScalingPoints,
    n: np.ndarray,
    metric: str | None = None,
    *,
    lower_is_better: bool = True,
) -> plt.cm.ScalarMappable:
    """Each run's curve of loss (or ``metric``) against FLOPs, coloured by size, + frontier."""
    norm = LogNorm(vmin=float(n.min()), vmax=float(n.max()))
    cmap = plt.get_cmap(SIZE_CMAP)
    for size, curve in zip(n, points.curves, strict=True):
        if curve is None or (metric is not None and metric not in curve.metrics):
            continue
        values = curve.loss if metric is None else curve.metrics[metric]
        ax.plot(curve.flops, values, color=cmap(norm(size)), lw=0.8, alpha=0.7)
    compute, best = curve_frontier(points.curves, metric, lower_is_better=lower_is_better)
    ax.step(compute, best, where="post", color="black", lw=1.2, label="frontier (running best)")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    return plt.cm.ScalarMappable(norm=norm, cmap=cmap)


def training_curves(report: FitReport, out_dir: Path) -> Figure:
    """Evaluation loss curves of every run, coloured by model size."""
    fig, ax = plt.subplots(figsize=(7, 5))
    mappable = draw_curves(ax, report.points, report.n)
    fig.colorbar(mappable, ax=ax, label=f"parameters N ({report.options.params})")
    ax.set(
        xlabel="training compute C (FLOPs)",
        ylabel="loss (nats/token)",
        title="Training curves",
    )
    return _written(
        fig,
        out_dir,
        "training_curves",
        "Held-out loss of every run along training against cumulative compute, coloured by "
        "model size, with the running-best frontier over all evaluations (black).",
    )


def compare_loss_vs_compute(reports: Mapping[str, FitReport], key: str, out_dir: Path) -> Figure:
    """Loss against compute of several groups of runs, each with its own fitted L*(C).

    ``reports`` maps a group's value of ``key`` to its analysis; all share one target
    compute (the star of each group is its L* there, under its own k).
    """
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    colours = plt.get_cmap(GROUP_CMAP)
    losses = []
    for i, (label, report) in enumerate(reports.items()):
        colour = colours(i % colours.N)
        points = report.points
        ax.scatter(
            points.compute,
            points.loss,
            color=colour,
            s=18,
            alpha=0.75,
            label=f"{key} = {label} ({len(points)} runs)",
        )
        frontier = _draw_frontier(ax, report, colour, labelled=False)
        losses += [points.loss, frontier]
    ax.plot([], [], color="0.3", label="fitted L*(C) (approach 3)")
    ax.plot([], [], color="0.3", ls="--", label="L*(C) extrapolated")
    ax.plot([], [], color="0.3", marker="*", ms=10, ls="none", label="L* at the target compute")
    ax.set(
        xscale="log",
        yscale="log",
        ylim=_limits(*losses, pad=1.05),
        xlabel="training compute C (FLOPs)",
        ylabel="loss (nats/token)",
        title=f"Loss against training compute by {key}",
    )
    ax.yaxis.set_major_formatter(LogFormatter())  # "3", not "3 x 10^0", on a narrow range
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.legend(fontsize=8)
    return _written(
        fig,
        out_dir,
        "compare_loss_vs_compute",
        f"Final loss of each run against its training compute, one colour per value of {key}, "
        "with each group's fitted compute-optimal law L*(C) (approach 3; dashed where "
        "extrapolated, shaded: 95% bootstrap band where computed, star at the target compute).",
    )

"""A run's learning curves read from its directory, and drawn: what ``srt-jax runs compare``
overlays and what the trackers (:mod:`srt_jax.train.tracking`) upload as a figure.

A run is read from its directory (:mod:`srt_jax.train.run_dir`): ``config.yaml``,
``summary.json`` (absent while a run has not finished: its figures are then null and its
status ``running``) and ``metrics.jsonl`` (the curves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from srt_jax.config import flat_dict, to_dict
from srt_jax.errors import DataError
from srt_jax.train.run_dir import RunDirectory


@dataclass(frozen=True)
class RunRecord:
    """One run as the comparison sees it.

    Attributes:
      name: the directory's path as given.
      config: the resolved config as dotted keys.
      status: ``done``, ``failed`` or ``running`` (no summary yet).
      summary: ``summary.json`` (None while running).
      train: ``(trained tokens, training loss)`` of every train line.
      evals: ``(trained tokens, held-out loss, validation NDCG@10)`` of every evaluation.
    """

    name: str
    config: dict[str, Any]
    status: str
    summary: dict[str, Any] | None
    train: list[tuple[float, float]]
    evals: list[tuple[float, float | None, float | None]]


def load_run(path: str | Path) -> RunRecord:
    """Read one run directory.

    Raises:
      DataError: ``path`` is not a run directory (no ``config.yaml``).
    """
    run = RunDirectory(path)
    if not run.config_path.exists():
        raise DataError(f"{path}: not a run directory (no {run.config_path.name})")
    summary = run.read_summary()
    records = run.read_metrics()
    return RunRecord(
        name=str(path),
        config=flat_dict(to_dict(run.read_config())),
        status="running" if summary is None else summary["status"],
        summary=summary,
        train=[(r["tokens"], r["loss"]) for r in records if r["kind"] == "train"],
        evals=[
            (r["tokens"], r.get("loss"), r.get("metrics", {}).get("ndcg@10"))
            for r in records
            if r["kind"] == "eval"
        ],
    )


def curves_figure(runs: list[RunRecord], out_dir: Path, name: str = "compare_curves") -> list[Path]:
    """Training loss, held-out loss and validation NDCG@10 against trained tokens, one line
    per run, as ``NAME.png`` and ``NAME.svg`` in ``out_dir``; the paths."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (
        ("training loss (nats/token)", lambda run: run.train),
        ("held-out loss (nats/token)", lambda run: [(t, loss) for t, loss, _ in run.evals]),
        ("validation NDCG@10", lambda run: [(t, ndcg) for t, _, ndcg in run.evals]),
    )
    for ax, (label, points_of) in zip(axes, panels, strict=True):
        for run in runs:
            points = [(t, y) for t, y in points_of(run) if y is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=run.name)
        ax.set_xlabel("trained tokens")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths

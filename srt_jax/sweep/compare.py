"""Compare run directories: what differs in their configs, their final figures side by side,
and their learning curves overlaid (``srt-jax runs compare``).

A run is read from its directory (:mod:`srt_jax.train.run_dir`): ``config.yaml``,
``summary.json`` (absent while a run has not finished: its figures are then null and its
status ``running``) and ``metrics.jsonl`` (the curves). Nothing is written into the runs.
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

FIGURES = ("ndcg@10", "hr@10", "loss")
"""Test figures at the best-validation checkpoint that the table shows (``summary.eval``)."""


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


def config_differences(runs: list[RunRecord]) -> dict[str, list[Any]]:
    """Dotted key -> each run's value, for the keys whose values are not all equal (a key a
    run does not have, e.g. another backbone's, is None there)."""
    keys = sorted(set().union(*(run.config for run in runs)))
    values = {key: [run.config.get(key) for run in runs] for key in keys}
    return {key: v for key, v in values.items() if any(x != v[0] for x in v)}


def final_figures(run: RunRecord) -> dict[str, Any]:
    """Status, size, tokens, time and the test figures of one run (nulls while running)."""
    s = run.summary or {}
    test = s.get("eval") or {}
    return {
        "status": run.status,
        "params_non_embedding": s.get("params_non_embedding"),
        "train_tokens": s.get("train_tokens"),
        "wall_s": s.get("wall_s"),
        **{f"test_{name}": test.get(name) for name in FIGURES},
    }


def comparison(runs: list[RunRecord]) -> dict[str, Any]:
    """The JSON form: the runs, their config differences and their final figures."""
    return {
        "runs": [run.name for run in runs],
        "config_differences": config_differences(runs),
        "figures": {run.name: final_figures(run) for run in runs},
    }


def comparison_text(result: dict[str, Any]) -> str:
    """:func:`comparison` as two plain-text tables (runs as columns A, B, ...)."""
    names = result["runs"]
    labels = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(names))]
    lines = [f"{label}: {name}" for label, name in zip(labels, names, strict=True)]

    def table(rows: list[tuple[str, list[Any]]]) -> list[str]:
        width = max([len("key"), *(len(key) for key, _ in rows)])
        out = ["  ".join([f"{'key':<{width}}", *(f"{label:>12}" for label in labels)])]
        for key, values in rows:
            out.append("  ".join([f"{key:<{width}}", *(f"{_shown(v):>12}" for v in values)]))
        return out

    differences = result["config_differences"]
    lines.append("")
    if differences:
        lines += ["config differences:", *table(list(differences.items()))]
    else:
        lines.append("config differences: none (the same config)")
    figures = result["figures"]
    keys = list(next(iter(figures.values())))
    lines += ["", "final figures (test at the best-validation checkpoint):"]
    lines += table([(key, [figures[name][key] for name in names]) for key in keys])
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def curves_figure(runs: list[RunRecord], out_dir: Path) -> list[Path]:
    """Training loss, held-out loss and validation NDCG@10 against trained tokens, one line
    per run, as ``compare_curves.png`` and ``.svg`` in ``out_dir``; the paths."""
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
    paths = [out_dir / "compare_curves.png", out_dir / "compare_curves.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths

"""What every experiment script shares: its command line, the tiny synthetic log of its
``--quick`` mode, summaries over seeds, and writing its results JSON, figure and table."""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import matplotlib
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen; experiments import it here

REPO = Path(__file__).resolve().parents[1]
TINY_LOG = [
    "data.synthetic.users=120",
    "data.synthetic.items=40",
    "data.synthetic.mean_length=16",
    "data.max_len=8",
]
"""Config overrides of the ``--quick`` modes' synthetic log (with ``data.dataset=synthetic``)."""


def experiment_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """``--quick``, ``--out`` (default ``experiments_out/<name>``) and ``--seeds``; the
    description is the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for the test")
    parser.add_argument("--out", type=Path, default=Path("experiments_out") / name)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    return parser


def seeds_of(args: argparse.Namespace) -> list[int]:
    """``--seeds``, or 0 in ``--quick`` mode and 0, 1, 2 otherwise."""
    return args.seeds or ([0] if args.quick else [0, 1, 2])


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def paired_difference(values: list[float], baseline: list[float]) -> dict[str, Any]:
    """Mean paired difference (same seed) and its 95% t-interval ``ci95`` (None for one
    seed)."""
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "ci95": None}
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def machine() -> dict[str, str]:
    """The JAX version, backend and host an experiment ran on (for its results JSON)."""
    return {"jax": jax.__version__, "backend": jax.default_backend(), "host": platform.node()}


def save_figure(fig: Any, out: Path, name: str) -> list[Path]:
    """``fig`` as ``<out>/<name>.png`` and ``.svg`` (then closed); the paths."""
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def write_outputs(
    results: dict[str, Any],
    out: Path,
    figure: Callable[[dict[str, Any], Path], list[Path]],
    table: Callable[[dict[str, Any]], str],
) -> None:
    """Write ``results.json``, the figures and ``table.md`` into ``out``; print the table and
    where everything went."""
    results_path = out / "results.json"
    results_path.write_text(json.dumps(results, indent=1))
    figures = figure(results, out)
    text = table(results)
    (out / "table.md").write_text(text)
    print(text)
    print(f"wrote {results_path}, {out / 'table.md'}, {', '.join(map(str, figures))}")


def run_experiment(
    doc: str,
    name: str,
    claim: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    figure: Callable[[dict[str, Any], Path], list[Path]],
    table: Callable[[dict[str, Any]], str],
    *,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """An experiment's ``main``: parse its command line (:func:`experiment_parser`, plus
    ``options``), ``run(args)`` for its results, and write them with the claim, the mode
    and the machine (:func:`write_outputs`)."""
    parser = experiment_parser(doc, name)
    if options is not None:
        options(parser)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"claim": claim, "quick": args.quick, "machine": machine(), **run(args)}
    write_outputs(results, args.out, figure, table)

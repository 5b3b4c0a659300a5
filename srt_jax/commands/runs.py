"""``srt-jax runs compare``: config differences, final figures and learning curves of runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srt_jax.commands.output import finish
from srt_jax.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``runs`` command group."""
    runs = subparsers.add_parser(
        "runs",
        help="compare run directories",
        description="Inspect trained runs (run directories of srt-jax train or of a sweep).",
    )
    commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    compare = commands.add_parser(
        "compare",
        help="config differences, final figures and overlaid learning curves",
        description="Compare runs: the config keys whose values differ, the final figures "
        "(status, non-embedding parameters, trained tokens, wall seconds, test NDCG@10, "
        "HR@10 and held-out loss at the best-validation checkpoint; null for a run still "
        "training) and, in OUT/compare_curves.png and .svg, training loss, held-out loss and "
        "validation NDCG@10 against trained tokens. OUT/compare.json holds the tables.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument(
        "--out", default="runs_compare", help="where the figure and compare.json go (runs_compare)"
    )
    compare.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``srt-jax runs compare``."""
    from srt_jax.sweep.compare import comparison, comparison_text
    from srt_jax.train.curves import curves_figure, load_run

    if len(set(args.run_dirs)) < 2:
        raise DataError("runs compare needs at least two different run directories")
    runs = [load_run(path) for path in args.run_dirs]
    result = comparison(runs)
    out = Path(args.out)
    figures = curves_figure(runs, out)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    result["written"] = [str(path) for path in [out / "compare.json", *figures]]
    finish(args, result, f"{comparison_text(result)}\n\nwrote {', '.join(result['written'])}")
    return 0

"""``srt-jax sweep export``: a sweep's runs and loss curves as CSV or Parquet tables.

``runs.csv`` / ``runs.parquet`` — one row per run of the registry, columns:

- ``run_id, status, N, N_non_embedding, N_embedding, D, C, loss``: for a finished run its
  ``summary.json`` figures (``params_total``, ``params_non_embedding``, ``params_embedding``,
  ``train_tokens``, ``train_flops``, ``eval.loss``); for the others the plan's N, D and C and
  an empty loss;
- ``U``: the unique target tokens of the run's training split (one epoch), from the summary's
  ``unique_train_tokens`` (D / U is the epochs trained; the data-constrained law needs it);
- one column per numeric evaluation metric of the summaries (``ndcg@10``, ``hr@10``, ...);
- ``run.*`` columns about the run itself (``run.attempts``, ``run.budget``, ``run.wall_s``,
  ``run.error``, ``run.run_dir``);
- the run's resolved config flattened to dotted columns (``model.d_model``, ...; lists as
  JSON text).

``curves.csv`` / ``curves.parquet`` — the evaluation lines of every run's ``metrics.jsonl``:
``run_id, step, tokens, flops, loss`` and one column per evaluation metric.

Metric columns have no dot and every other extra column but ``U`` has one: that is how
``srt-jax fit`` (:func:`srt_jax.scaling.loaders.load_sweep_export`) tells them apart.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from srt_jax.config import flat_dict
from srt_jax.errors import DataError
from srt_jax.scaling.loaders import CURVE_COLUMNS, EXPORT_COLUMNS
from srt_jax.sweep.registry import Registry
from srt_jax.train.run_dir import METRICS_FILE

ExportFormat = Literal["csv", "parquet"]
RUN_COLUMNS = EXPORT_COLUMNS  # the columns `srt-jax fit` reads back (srt_jax.scaling.loaders)


def export_sweep(
    root: str | Path, out_dir: str | Path | None = None, fmt: ExportFormat = "csv"
) -> tuple[Path, Path]:
    """Write ``runs.<fmt>`` and ``curves.<fmt>`` of the sweep at ``root`` into ``out_dir``
    (default ``<root>/export``); return their paths."""
    with Registry(root) as registry:
        runs = registry.runs()
    if not runs:
        raise DataError(f"{root}: the sweep registry holds no runs")
    root = Path(root)
    out = root / "export" if out_dir is None else Path(out_dir)
    run_rows = [run_row(root, run) for run in runs]
    curve_rows = [row for run in runs for row in curve_rows_of(root, run)]
    tables = {
        out / f"runs.{fmt}": (_ordered_columns(run_rows, RUN_COLUMNS), run_rows),
        out / f"curves.{fmt}": (_ordered_columns(curve_rows, CURVE_COLUMNS), curve_rows),
    }
    out.mkdir(parents=True, exist_ok=True)
    temporary: dict[Path, Path] = {}
    try:  # both tables are written before either replaces its previous version
        for path, (columns, rows) in tables.items():
            temporary[path] = path.with_name(f".{path.name}.tmp")
            _write(temporary[path], columns, rows)
        for path, tmp in temporary.items():
            tmp.replace(path)
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    runs_path, curves_path = tables
    return runs_path, curves_path


def run_row(root: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The export row of one registry run (see the module docstring)."""
    summary = run["summary"] or {}
    done = run["status"] == "done"
    evaluation = summary.get("eval") or {}
    row: dict[str, Any] = {
        "run_id": run["run_id"],
        "status": run["status"],
        "N": summary["params_total"] if done else run["N"],
        "N_non_embedding": summary["params_non_embedding"] if done else run["N_non_embedding"],
        "N_embedding": (summary["params_embedding"] if done else run["N"] - run["N_non_embedding"]),
        "D": summary["train_tokens"] if done else run["D"],
        "C": summary["train_flops"] if done else run["C"],
        "loss": evaluation.get("loss") if done else None,
        "U": summary.get("unique_train_tokens") if done else None,
    }
    for name, value in evaluation.items():
        if name != "loss" and _is_number(value):
            row[name] = value
    row.update(
        {
            "run.attempts": run["attempts"],
            "run.budget": run["budget"],
            "run.wall_s": summary.get("wall_s"),
            "run.error": run["error"],
            "run.run_dir": str(root / run["run_dir"]),
        }
    )
    row.update(flatten(run["config"]))
    return row


def curve_rows_of(root: Path, run: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The evaluation lines of one run's metrics.jsonl as curve rows."""
    path = root / run["run_dir"] / METRICS_FILE
    if not path.is_file():
        return
    with path.open() as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed worker; the resumed run rewrote it
            if record.get("kind") != "eval":
                continue
            row = {"run_id": run["run_id"], **{k: record.get(k) for k in CURVE_COLUMNS[1:]}}
            for name, value in (record.get("metrics") or {}).items():
                if _is_number(value):
                    row[name] = value
            yield row


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """Nested config -> ``{"section.key": value}``; lists become JSON text."""
    return {
        key: json.dumps(value) if isinstance(value, list) else value
        for key, value in flat_dict(config).items()
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ordered_columns(rows: list[dict[str, Any]], first: tuple[str, ...]) -> list[str]:
    """``first``, then metric columns (no dot), then dotted columns, in order of appearance."""
    seen = dict.fromkeys(first)
    for row in rows:
        seen.update(dict.fromkeys(row))
    rest = [c for c in seen if c not in first]
    return [*first, *[c for c in rest if "." not in c], *[c for c in rest if "." in c]]


def _write(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` as Parquet when ``path`` ends in ``.parquet.tmp``, else CSV."""
    if path.name.endswith(".parquet.tmp"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [row.get(c) for row in rows] for c in columns})
        pq.write_table(table, path)
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})

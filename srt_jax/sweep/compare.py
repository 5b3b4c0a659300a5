"""Compare run directories: what differs in their configs, their final figures side by side,
and their learning curves overlaid (``srt-jax runs compare``).

A run is read from its directory by :func:`srt_jax.train.curves.load_run`, and the curves
are drawn by :func:`srt_jax.train.curves.curves_figure`. Nothing is written into the runs.
"""

from __future__ import annotations

from typing import Any

from srt_jax.train.curves import RunRecord

FIGURES = ("ndcg@10", "hr@10", "loss")
"""Test figures at the best-validation checkpoint that the table shows (``summary.eval``)."""


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

"""Sweep spec files: the YAML keys of a sweep, their checks, and the parsed :class:`SweepSpec`.

A spec (in ``sweeps/``) is a mapping with these keys (any other key is an error)::

    name: quickstart               # required: names the default root sweeps_out/<name>
    description: free text         # optional
    base: ../configs/x.yaml        # optional run config, relative to the spec file
    config:                        # optional nested overrides applied on top of ``base``
      data: {dataset: movielens-100k}
    grid:                          # optional: dotted config key -> list of values; the
      train.seed: [0, 1]           #   runs are the full product of all axes
    zip:                           # optional: groups of axes that vary together (every
      - model.d_model: [32, 64]    #   list of a group has the same length)
        model.n_heads: [1, 2]
    shapes: srt15                  # optional axis of model shapes: a ladder name
                                   #   (srt_jax.sweep.ladders) or a list of ladder names and
                                   #   mappings of model keys, e.g. {d_model: 32, n_layers: 2}
    isoflop:                       # optional: compute budgets (needs ``shapes``)
      budgets: [1e11, 3e11, 1e12]  #   C, analytic training FLOPs
      min_tokens: 20000            #   optional, default one batch (batch_size x max_len)
      max_epochs: 50               #   optional, default none (no cap)
      evals_per_run: 4             #   optional: train.eval_every_tokens = ceil(D / this),
                                   #   so every run logs that many points of its loss curve

Every error names the spec file, the key and its line. What the runs of a spec are is in
:mod:`srt_jax.sweep.spec`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srt_jax.config import RunConfig, build_config, read_yaml
from srt_jax.errors import ConfigError
from srt_jax.sweep.ladders import LADDERS

SPEC_KEYS = ("name", "description", "base", "config", "grid", "zip", "shapes", "isoflop")
ISOFLOP_KEYS = ("budgets", "min_tokens", "max_epochs", "evals_per_run")
SWEEPS_OUT = Path("sweeps_out")
"""Where sweeps live by default (relative to the working directory)."""
BUDGET_KEYS = ("train.tokens", "train.epochs", "train.eval_every_tokens")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Axis:
    """One axis of the product: its choices, each a set of dotted config assignments.

    Attributes:
      label: where it is in the spec (``grid.train.seed``, ``zip[0]``, ``shapes``).
      line: 1-based line of that key in the spec file (None if unknown).
      choices: one mapping ``dotted key -> value`` per value of the axis.
    """

    label: str
    line: int | None
    choices: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class IsoflopBudgets:
    """The ``isoflop`` section: budgets C (FLOPs), the limits on D (tokens) and the number
    of evaluations per run (None: the base config's ``train.eval_every_tokens``)."""

    budgets: tuple[float, ...]
    min_tokens: int | None
    max_epochs: float | None
    evals_per_run: int | None
    line: int | None


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked spec (see the module docstring)."""

    name: str
    path: Path
    description: str
    base: dict[str, Any]
    axes: tuple[Axis, ...]
    isoflop: IsoflopBudgets | None
    lines: dict[str, int]


# --------------------------------------------------------------------------- parsing


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec file (every error names the key and its line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec not found: {path}")
    raw, lines = read_yaml(path)

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{file_line(path, lines.get(key))}: {key}: {message}", key=key)

    for key in raw:
        if key not in SPEC_KEYS:
            raise fail(str(key), f"unknown spec key (allowed: {', '.join(SPEC_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", f"expected a name of letters, digits, '_', '.' and '-', got {name!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", "expected text")
    base = _base_config(path, raw, lines)
    axes = [*_grid_axes(raw.get("grid"), lines, fail), *_zip_axes(raw.get("zip"), lines, fail)]
    if raw.get("shapes") is not None:
        axes.append(_shape_axis(raw["shapes"], lines.get("shapes"), fail))
    _check_axes_disjoint(path, axes)
    isoflop = None
    if raw.get("isoflop") is not None:
        isoflop = _isoflop(raw["isoflop"], lines, fail)
        if raw.get("shapes") is None:
            raise fail("isoflop", "an IsoFLOP sweep needs a 'shapes' axis (a ladder or a list)")
        sized_keys = set(BUDGET_KEYS[:2] if isoflop.evals_per_run is None else BUDGET_KEYS)
        for axis in axes:
            clash = sorted(sized_keys & set().union(*axis.choices))
            if clash:
                raise ConfigError(
                    f"{file_line(path, axis.line)}: {axis.label}: {clash[0]} is set by the "
                    "IsoFLOP budgets (D = C / FLOPs per token); remove it from the axes",
                    key=axis.label,
                )
    return SweepSpec(
        name=name,
        path=path,
        description=description.strip(),
        base=base,
        axes=tuple(axes),
        isoflop=isoflop,
        lines=lines,
    )


def _check_axes_disjoint(path: Path, axes: list[Axis]) -> None:
    """Raise a ConfigError when two axes set the same config key (one would hide the other)."""
    owner: dict[str, Axis] = {}
    for axis in axes:
        for key in sorted(set().union(*axis.choices)):
            first = owner.setdefault(key, axis)
            if first is not axis:
                raise ConfigError(
                    f"{file_line(path, axis.line)}: {axis.label}: {key} is also set by "
                    f"{first.label} ({file_line(path, first.line)}); set each key on one axis",
                    key=axis.label,
                )


def file_line(path: Path, line: int | None) -> str:
    """``path:line``, or the path alone when the line is unknown."""
    return f"{path}:{line}" if line is not None else str(path)


def _base_config(path: Path, raw: Mapping[str, Any], lines: dict[str, int]) -> dict[str, Any]:
    """The base file's raw config with the inline ``config:`` overrides, both checked."""
    base: dict[str, Any] = {}
    if raw.get("base") is not None:
        if not isinstance(raw["base"], str):
            raise ConfigError(
                f"{file_line(path, lines.get('base'))}: base: expected the path of a run config",
                key="base",
            )
        base_path = (path.parent / raw["base"]).resolve()
        if not base_path.is_file():
            raise ConfigError(
                f"{file_line(path, lines.get('base'))}: base: config file not found: {base_path}",
                key="base",
            )
        base, base_lines = read_yaml(base_path)
        build_config(RunConfig, base, base_lines, source=str(base_path))
    inline = raw.get("config")
    if inline is not None:
        if not isinstance(inline, dict):
            raise ConfigError(
                f"{file_line(path, lines.get('config'))}: config: expected a mapping of config "
                "sections (data, model, train, eval)",
                key="config",
            )
        base = _merge(base, inline)
        inline_lines = {k[len("config.") :]: v for k, v in lines.items() if k.startswith("config.")}
        build_config(RunConfig, base, inline_lines, source=str(path))
    return base


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested copy of ``base`` with ``overrides`` merged in, section by section."""
    merged = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = json.loads(json.dumps(value))
    return merged


def _values(value: Any, key: str, fail) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise fail(key, f"expected a non-empty list of values, got {value!r}")
    return value


def _grid_axes(grid: Any, lines: dict[str, int], fail) -> list[Axis]:
    if grid is None:
        return []
    if not isinstance(grid, dict):
        raise fail("grid", "expected a mapping of dotted config keys to lists of values")
    axes = []
    for key, values in grid.items():
        label = f"grid.{key}"
        _check_dotted(str(key), label, fail)
        choices = tuple({key: v} for v in _values(values, label, fail))
        axes.append(Axis(label, lines.get(label), choices))
    return axes


def _zip_axes(groups: Any, lines: dict[str, int], fail) -> list[Axis]:
    if groups is None:
        return []
    if not isinstance(groups, list) or not groups:
        raise fail("zip", "expected a list of groups, each a mapping of dotted keys to lists")
    axes = []
    for i, group in enumerate(groups):
        label = f"zip[{i}]"
        if not isinstance(group, dict) or not group:
            raise fail("zip", f"{label}: expected a mapping of dotted config keys to lists")
        columns = {}
        for key, values in group.items():
            _check_dotted(str(key), "zip", fail)
            columns[key] = _values(values, "zip", fail)
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise fail("zip", f"{label}: its lists differ in length ({lengths})")
        n = next(iter(lengths.values()))
        choices = tuple({k: v[j] for k, v in columns.items()} for j in range(n))
        axes.append(Axis(label, lines.get("zip"), choices))
    return axes


def _check_dotted(key: str, label: str, fail) -> None:
    if "." not in key:
        raise fail(label, f"axis {key!r} must be a dotted config key such as model.d_model")


def _shape_axis(shapes: Any, line: int | None, fail) -> Axis:
    """``shapes``: a ladder name or a list of ladder names and model-key mappings."""
    items = [shapes] if isinstance(shapes, str) else shapes
    if not isinstance(items, list) or not items:
        raise fail("shapes", "expected a ladder name or a list of ladder names and mappings")
    choices = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if item not in LADDERS:
                known = ", ".join(LADDERS)
                raise fail("shapes", f"shapes[{i}]: unknown shape ladder {item!r} (known: {known})")
            shapes_of_item = LADDERS[item]
        elif isinstance(item, dict) and item:
            shapes_of_item = (item,)
        else:
            raise fail("shapes", f"shapes[{i}]: expected a ladder name or a mapping of model keys")
        for shape in shapes_of_item:
            for key in shape:
                if "." in str(key):
                    raise fail("shapes", f"shapes[{i}]: {key!r}: write model keys bare (d_model)")
            choices.append({f"model.{k}": v for k, v in shape.items()})
    return Axis("shapes", line, tuple(choices))


def _isoflop(section: Any, lines: dict[str, int], fail) -> IsoflopBudgets:
    if not isinstance(section, dict):
        raise fail("isoflop", f"expected a mapping with keys {', '.join(ISOFLOP_KEYS)}")
    for key in section:
        if key not in ISOFLOP_KEYS:
            raise fail(f"isoflop.{key}", f"unknown key (allowed: {', '.join(ISOFLOP_KEYS)})")
    budgets = tuple(
        _positive(v, "isoflop.budgets", fail)
        for v in _values(section.get("budgets"), "isoflop.budgets", fail)
    )
    min_tokens = section.get("min_tokens")
    if min_tokens is not None:
        min_tokens = int(_positive(min_tokens, "isoflop.min_tokens", fail))
    max_epochs = section.get("max_epochs")
    if max_epochs is not None:
        max_epochs = _positive(max_epochs, "isoflop.max_epochs", fail)
    evals = section.get("evals_per_run")
    if evals is not None:
        evals = int(_positive(evals, "isoflop.evals_per_run", fail))
    return IsoflopBudgets(budgets, min_tokens, max_epochs, evals, lines.get("isoflop"))


def _positive(value: Any, key: str, fail) -> float:
    """A positive finite number (YAML 1.1 reads 1e12 as a string: accept that too)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise fail(key, f"expected a positive number, got {value!r}")
    return number


def default_root(spec: SweepSpec) -> Path:
    """The sweep's default root directory: ``sweeps_out/<name>`` under the working directory."""
    return SWEEPS_OUT / spec.name

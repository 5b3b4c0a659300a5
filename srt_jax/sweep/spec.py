"""Sweep specs: a YAML file -> the resolved run configs of a sweep (grid, zip, shapes, IsoFLOP).

A spec file (its keys, their checks and :func:`load_spec`: :mod:`srt_jax.sweep.spec_file`)
defines axes and, optionally, IsoFLOP budgets; :func:`expand` turns it into runs.

The runs are the product of the grid axes (in file order), the zip groups, the shapes and,
with ``isoflop``, the budgets. For a budget ``C`` and a run whose analytic training FLOPs per
trained target token are ``f`` (:func:`srt_jax.models.counting.flops_per_token` with the
catalog size of the run's data store), the token budget is ``D = round(C / f)``, set as
``train.tokens`` (and ``train.epochs`` null). A combination with ``D < min_tokens`` or
``D > max_epochs x`` (target tokens per epoch of its training split) is not run: it is
listed in :attr:`Expansion.skipped` with the reason. Without ``isoflop`` a run's ``D`` is its
token budget as the training loop computes it (``train.tokens``, or ``train.epochs`` x tokens
per epoch), and ``C = D x f``.

Every expanded config is validated like a run config; an error names the spec file, the line
of the key that set the bad value and the run's axis values. A run's id is the
:func:`srt_jax.config.config_hash` of its resolved config; combinations that resolve to the
same config are one run (:attr:`Expansion.merged` counts the repeats).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from srt_jax.config import (
    DataConfig,
    RunConfig,
    apply_overrides,
    build_config,
    config_hash,
)
from srt_jax.data.sources import open_dataset
from srt_jax.data.splits import Split, split_from_config
from srt_jax.data.store import SequenceStore
from srt_jax.errors import ConfigError
from srt_jax.models.counting import flops_per_token
from srt_jax.models.factory import model_item_features
from srt_jax.sweep.spec_file import (
    BUDGET_KEYS,
    ISOFLOP_KEYS,
    SPEC_KEYS,
    SWEEPS_OUT,
    Axis,
    IsoflopBudgets,
    SweepSpec,
    default_root,
    file_line,
    load_spec,
)
from srt_jax.train.build import token_budget

__all__ = [
    "BUDGET_KEYS",
    "ISOFLOP_KEYS",
    "SPEC_KEYS",
    "SWEEPS_OUT",
    "Axis",
    "DataFacts",
    "Expansion",
    "IsoflopBudgets",
    "PlannedRun",
    "SkippedRun",
    "SweepSpec",
    "data_facts",
    "default_root",
    "expand",
    "load_spec",
]


@dataclass(frozen=True)
class DataFacts:
    """What the plan needs to know about a run's data: its store and training split."""

    store: SequenceStore
    split: Split

    @property
    def n_items(self) -> int:
        """Catalog size (items are 1..n_items)."""
        return self.store.n_items

    @property
    def tokens_per_epoch(self) -> int:
        """Target positions of the training segments (what ``train.epochs`` multiplies)."""
        return self.split.train.n_targets


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep.

    Attributes:
      run_id: config_hash of ``config``.
      config: the resolved run config.
      assignments: the axis values that made it (dotted key -> value).
      budget: the IsoFLOP budget C it was sized for (None outside IsoFLOP sweeps).
      tokens: D, trained target tokens.
      flops_per_token: analytic training FLOPs per trained target token.
      facts: its data's catalog size and tokens per epoch.
    """

    run_id: str
    config: RunConfig
    assignments: dict[str, Any]
    budget: float | None
    tokens: int
    flops_per_token: float
    facts: DataFacts

    @property
    def compute(self) -> float:
        """C = D x analytic training FLOPs per token."""
        return self.tokens * self.flops_per_token


@dataclass(frozen=True)
class SkippedRun:
    """A combination that is not run, with the reason."""

    assignments: dict[str, Any]
    budget: float | None
    tokens: int
    reason: str


@dataclass(frozen=True)
class Expansion:
    """The runs of a spec, the combinations skipped and the number merged as duplicates."""

    runs: tuple[PlannedRun, ...]
    skipped: tuple[SkippedRun, ...]
    merged: int = 0


def data_facts(data_cfg: DataConfig) -> DataFacts:
    """The store and training split of ``data_cfg`` (preparing a built-in store if needed)."""
    store = open_dataset(data_cfg)
    return DataFacts(store=store, split=split_from_config(store, data_cfg))


def expand(spec: SweepSpec) -> Expansion:
    """All runs of ``spec`` with their D and C, the skipped combinations and merged repeats."""
    facts_by_data: dict[str, DataFacts] = {}
    runs: dict[str, PlannedRun] = {}
    skipped: list[SkippedRun] = []
    merged = 0
    for combination in itertools.product(*(axis.choices for axis in spec.axes)):
        assignments = {k: v for choice in combination for k, v in choice.items()}
        config = _resolve(spec, assignments)
        data_key = config_hash(config.data)
        if data_key not in facts_by_data:
            facts_by_data[data_key] = data_facts(config.data)
        facts = facts_by_data[data_key]
        per_token = flops_per_token(
            config.model,
            facts.n_items,
            config.data.max_len,
            config.train,
            item_features=model_item_features(config.model, facts.store),
        ).total
        if spec.isoflop is None:
            candidates = [(None, token_budget(config, facts.split), config)]
        else:
            candidates = []
            for budget in spec.isoflop.budgets:
                tokens = round(budget / per_token)
                reason = _infeasible(spec.isoflop, config, facts, tokens)
                if reason:
                    skipped.append(SkippedRun(assignments, budget, tokens, reason))
                    continue
                sized = {**assignments, "train.tokens": tokens, "train.epochs": None}
                if spec.isoflop.evals_per_run is not None:
                    every = math.ceil(tokens / spec.isoflop.evals_per_run)
                    sized["train.eval_every_tokens"] = every
                candidates.append((budget, tokens, _resolve(spec, sized)))
        for budget, tokens, run_config in candidates:
            run_id = config_hash(run_config)
            if run_id in runs:
                merged += 1
                continue
            runs[run_id] = PlannedRun(
                run_id, run_config, assignments, budget, tokens, per_token, facts
            )
    return Expansion(tuple(runs.values()), tuple(skipped), merged)


def _resolve(spec: SweepSpec, assignments: Mapping[str, Any]) -> RunConfig:
    """The base config with ``assignments`` applied and validated (errors name the line)."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in assignments.items()]
    try:
        return build_config(RunConfig, apply_overrides(spec.base, overrides), {}, None)
    except ConfigError as err:
        line = _axis_line(spec, err.key, assignments)
        shown = ", ".join(f"{k}={v!r}" for k, v in assignments.items())
        raise ConfigError(
            f"{file_line(spec.path, line)}: {err} (run: {shown})", key=err.key
        ) from None


def _axis_line(spec: SweepSpec, key: str | None, assignments: Mapping[str, Any]) -> int | None:
    """Line of the axis that set ``key``, else of an axis of the same config section (the
    value clashes with one it set), else of the first axis."""
    if key in BUDGET_KEYS and spec.isoflop is not None:
        return spec.isoflop.line
    key = key or ""
    section = key.split(".")[0] + "."
    for match in (lambda k: k == key, lambda k: k.startswith(section), lambda k: True):
        for axis in spec.axes:
            if any(match(k) for k in set().union(*axis.choices) if k in assignments):
                return axis.line
    return None


def _infeasible(
    budgets: IsoflopBudgets, config: RunConfig, facts: DataFacts, tokens: int
) -> str | None:
    """Why a run of ``tokens`` cannot run, or None if it can."""
    min_tokens = budgets.min_tokens
    if min_tokens is None:
        min_tokens = config.train.batch_size * config.data.max_len
    if tokens < min_tokens:
        return f"D = {tokens:,} tokens is below min_tokens = {min_tokens:,}"
    if budgets.max_epochs is not None:
        cap = budgets.max_epochs * facts.tokens_per_epoch
        if tokens > cap:
            return (
                f"D = {tokens:,} tokens is above max_epochs {budgets.max_epochs:g} x "
                f"{facts.tokens_per_epoch:,} tokens per epoch = {cap:,.0f}"
            )
    return None

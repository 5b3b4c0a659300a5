"""Run configuration: frozen dataclasses, YAML load/dump, dotted overrides, validation.

A run is a pure function of its resolved :class:`RunConfig`; :func:`config_hash` of that
config is the run id. Unknown keys and bad values are errors that name the key (and the
YAML line when the value came from a file) and list what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from srt_jax.errors import ConfigError

SamplerMode = Literal["recent", "sliding", "stride", "mixed", "recency_weighted"]


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic log used when ``data.dataset`` is ``synthetic`` (see srt_jax.data.synthetic)."""

    users: int = 2000
    items: int = 1000
    mean_length: float = 50.0
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the interactions come from and how training windows are drawn.

    ``dataset`` is a built-in name (``movielens-100k``, ``synthetic``) or the path of a
    sequence store made by ``srt-jax data prepare`` / ``data synth``.
    """

    dataset: str = "movielens-100k"
    cache_dir: str | None = None
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    max_len: int = 50
    max_users: int | None = None
    heldout_users: float = 0.1
    split_seed: int = 0
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    temporal_cutoff_quantile: float = 0.9
    sampler: SamplerMode = "sliding"
    stride: int | None = None
    mixed_by: Literal["batch", "epoch"] = "batch"
    mixed_sliding_fraction: float = 0.5
    recency_half_life: float = 50.0
    user_weighting: Literal["uniform", "length"] = "uniform"
    prefetch: int = 2

    def __post_init__(self) -> None:
        _check(self.max_len >= 1, "data.max_len", self.max_len, "an integer >= 1")
        _check(
            self.max_users is None or self.max_users >= 1,
            "data.max_users",
            self.max_users,
            "null or an integer >= 1",
        )
        _check(
            0.0 <= self.heldout_users < 1.0,
            "data.heldout_users",
            self.heldout_users,
            "a fraction in [0, 1)",
        )
        _check(
            0.0 < self.temporal_cutoff_quantile < 1.0,
            "data.temporal_cutoff_quantile",
            self.temporal_cutoff_quantile,
            "a quantile in (0, 1) of the interaction timestamps",
        )
        _check(
            self.stride is None or self.stride >= 1,
            "data.stride",
            self.stride,
            "null (= max_len) or an integer >= 1",
        )
        _check(
            0.0 <= self.mixed_sliding_fraction <= 1.0,
            "data.mixed_sliding_fraction",
            self.mixed_sliding_fraction,
            "a fraction in [0, 1]",
        )
        _check(
            self.recency_half_life > 0,
            "data.recency_half_life",
            self.recency_half_life,
            "a positive number of interactions",
        )
        _check(self.prefetch >= 0, "data.prefetch", self.prefetch, "an integer >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and item encoder shape. ``d_ff`` null means ``4 * d_model``."""

    backbone: Literal["transformer"] = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int | None = None
    dropout: float = 0.2
    norm: Literal["pre", "post"] = "pre"
    positions: Literal["learned", "rope"] = "learned"
    tie_embeddings: bool = True
    item_encoder: Literal["id", "hashed"] = "id"
    hash_buckets: int = 4096
    n_hashes: int = 2
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        _check(self.d_model >= 1, "model.d_model", self.d_model, "an integer >= 1")
        _check(self.n_layers >= 0, "model.n_layers", self.n_layers, "an integer >= 0")
        _check(
            self.n_heads >= 1 and self.d_model % self.n_heads == 0,
            "model.n_heads",
            self.n_heads,
            f"a divisor of d_model={self.d_model}",
        )
        _check(
            self.d_ff is None or self.d_ff >= 1, "model.d_ff", self.d_ff, "null or an integer >= 1"
        )
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a rate in [0, 1)")
        _check(self.hash_buckets >= 2, "model.hash_buckets", self.hash_buckets, "an integer >= 2")
        _check(self.n_hashes >= 1, "model.n_hashes", self.n_hashes, "an integer >= 1")
        _check(
            self.positions != "rope" or (self.d_model // self.n_heads) % 2 == 0,
            "model.positions",
            self.positions,
            f"'learned' when d_model / n_heads = {self.d_model} / {self.n_heads} is odd "
            "(rope needs an even head size)",
        )

    @property
    def ffn_dim(self) -> int:
        """Feed-forward width: ``d_ff``, or ``4 * d_model`` when null."""
        return self.d_ff or 4 * self.d_model


@dataclass(frozen=True)
class TrainConfig:
    """Loss, optimiser, schedule and budget.

    The budget is ``tokens`` (trained target positions) or ``epochs`` (multiples of the
    number of target positions in the training histories); exactly one must be set. The
    learning-rate schedule runs over that token budget.
    """

    loss: Literal["full_softmax", "sampled_softmax", "bce", "gbce"] = "full_softmax"
    num_negatives: int = 100
    negatives: Literal["uniform", "popularity"] = "uniform"
    gbce_t: float = 0.75
    batch_size: int = 256
    tokens: int | None = None
    epochs: float | None = 20.0
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.02
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    grad_clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.98
    seed: int = 0
    data_parallel: int | None = None
    log_every: int = 50
    eval_every_tokens: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        _check(
            (self.tokens is None) != (self.epochs is None),
            "train.tokens/train.epochs",
            (self.tokens, self.epochs),
            "exactly one of them set (the other null)",
        )
        _check(
            self.tokens is None or self.tokens >= 1, "train.tokens", self.tokens, "an integer >= 1"
        )
        _check(
            self.epochs is None or self.epochs > 0, "train.epochs", self.epochs, "a positive number"
        )
        _check(
            self.num_negatives >= 1, "train.num_negatives", self.num_negatives, "an integer >= 1"
        )
        _check(
            not (self.loss == "gbce" and self.negatives == "popularity"),
            "train.negatives",
            self.negatives,
            "'uniform' with train.loss = 'gbce' (its calibration assumes uniform negatives)",
        )
        _check(0.0 < self.gbce_t <= 1.0, "train.gbce_t", self.gbce_t, "a number in (0, 1]")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _check(
            self.learning_rate > 0, "train.learning_rate", self.learning_rate, "a positive number"
        )
        _check(
            0.0 <= self.warmup_fraction < 1.0,
            "train.warmup_fraction",
            self.warmup_fraction,
            "a fraction in [0, 1)",
        )
        _check(
            0.0 <= self.min_lr_ratio <= 1.0,
            "train.min_lr_ratio",
            self.min_lr_ratio,
            "a fraction in [0, 1]",
        )
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "a positive number")
        _check(
            self.data_parallel is None or self.data_parallel >= 1,
            "train.data_parallel",
            self.data_parallel,
            "null (all devices) or an integer >= 1",
        )
        _check(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        _check(
            self.checkpoint_every >= 1,
            "train.checkpoint_every",
            self.checkpoint_every,
            "an integer >= 1",
        )
        _check(
            self.keep_checkpoints >= 1,
            "train.keep_checkpoints",
            self.keep_checkpoints,
            "an integer >= 1",
        )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol; it is recorded beside every number it produces.

    Ranking is over the whole catalog unless ``sampled_candidates`` (the target against
    that many random items drawn from ``candidate_seed``, SRT's protocol); users are ranked
    ``batch_users`` at a time and items scored ``item_chunk`` at a time, which bounds
    memory. ``heldout_stride`` is the window stride of the held-out loss (null: max_len).
    """

    cutoffs: tuple[int, ...] = (5, 10, 20)
    batch_users: int = 256
    item_chunk: int = 65536
    sampled_candidates: int | None = None
    candidate_seed: int = 0
    heldout_stride: int | None = None

    def __post_init__(self) -> None:
        _check(
            10 in self.cutoffs and all(k >= 1 for k in self.cutoffs),
            "eval.cutoffs",
            self.cutoffs,
            "a list of integers >= 1 that includes 10 (validation NDCG@10 picks the best "
            "checkpoint)",
        )
        _check(self.batch_users >= 1, "eval.batch_users", self.batch_users, "an integer >= 1")
        _check(self.item_chunk >= 1, "eval.item_chunk", self.item_chunk, "an integer >= 1")
        _check(
            self.sampled_candidates is None or self.sampled_candidates >= 1,
            "eval.sampled_candidates",
            self.sampled_candidates,
            "null or an integer >= 1",
        )
        _check(
            self.heldout_stride is None or self.heldout_stride >= 1,
            "eval.heldout_stride",
            self.heldout_stride,
            "null (= data.max_len) or an integer >= 1",
        )


@dataclass(frozen=True)
class RunConfig:
    """A whole run: data, model, training and evaluation sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: expected {expected}", key=key)


# --------------------------------------------------------------------------- dict <-> dataclass


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(config)


def flat_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict (e.g. :func:`to_dict` of a config) as ``{"section.key": value}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_dict(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def from_dict(cls: type, raw: Mapping[str, Any] | None, *, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, checking every key and value.

    Args:
      cls: a config dataclass (e.g. RunConfig).
      raw: nested mapping of its fields; missing fields take their defaults.
      where: dotted prefix of ``cls`` in the whole config (for messages).

    Raises:
      ConfigError: naming the dotted key (``err.key``) and what is allowed.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where or 'config'} must be a mapping of keys to values, got {type(raw).__name__}",
            key=where or None,
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config key '{dotted}' (allowed in "
                f"{where or 'the top level'}: {', '.join(names)})",
                key=dotted,
            )
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{dotted} = {value!r} is invalid: expected {expected}", key=dotted)

    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where=dotted)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, dotted)
    if origin is Literal:
        if value not in args:
            raise bad(f"one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        values = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(args[0], v, dotted) for v in values)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        number = _number(value)
        if number is None or float(number) != int(number):
            raise bad("an integer")
        return int(number)
    if hint is float:
        number = _number(value)
        if number is None:
            raise bad("a number")
        return float(number)
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    raise ConfigError(f"{dotted}: unsupported config type {hint!r}", key=dotted)


def _number(value: Any) -> float | int | None:
    """Ints, floats and strings such as '1e6' (YAML 1.1 reads those as strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------- YAML and overrides


def yaml_key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line number of every mapping key in a YAML document."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[dotted] = key_node.start_mark.line + 1
                walk(value_node, dotted)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a YAML mapping file; return it with its key line numbers."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw, yaml_key_lines(text)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a nested dict copy."""
    result = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is invalid: expected KEY=VALUE, e.g. model.d_model=128"
            )
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from None
        node = result
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return result


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a run config from YAML (or the defaults when ``path`` is None) plus overrides."""
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        raw, lines = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return build_config(RunConfig, raw, lines, source=None if path is None else str(path))


def build_config(
    cls: type, raw: Mapping[str, Any], lines: Mapping[str, int], source: str | None
) -> Any:
    """``from_dict`` whose errors are prefixed with ``source:line:`` of the offending key."""
    try:
        return from_dict(cls, raw)
    except ConfigError as err:
        if source is None:
            raise
        line = lines.get(err.key or "")
        where = f"{source}:{line}" if line is not None else source
        raise ConfigError(f"{where}: {err}", key=err.key) from None


def dump_config(config: Any) -> str:
    """The YAML text of a resolved config (every field, defaults included)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def config_hash(config: Any, length: int = 12) -> str:
    """A stable hex id of a resolved config: equal configs give equal ids."""
    canonical = json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def replace(config: Any, overrides: Sequence[str]) -> Any:
    """A copy of ``config`` with dotted ``overrides`` applied and re-validated."""
    return from_dict(type(config), apply_overrides(to_dict(config), overrides))

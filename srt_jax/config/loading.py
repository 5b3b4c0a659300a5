"""Config machinery: dataclass <-> dict, YAML with key lines, dotted overrides, hashing.

A run is a pure function of its resolved :class:`~srt_jax.config.schema.RunConfig`;
:func:`config_hash` of that config is the run id. Unknown keys and bad values are errors that
name the key (and the YAML line when the value came from a file) and list what is allowed.
The keys themselves, their defaults and checks are in :mod:`srt_jax.config.schema`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from srt_jax.config.keys import hash_value, hashed, owner_of
from srt_jax.config.schema import RunConfig
from srt_jax.errors import ConfigError

# --------------------------------------------------------------------------- dict <-> dataclass


def to_dict(config: Any, *, for_hash: bool = False) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a config dataclass (tuples become lists).

    Owned keys that are null (those of a backbone or optimiser the config does not use) are
    left out; with ``for_hash``, so are :func:`~srt_jax.config.keys.new_key` fields at
    their default and :func:`~srt_jax.config.keys.observer_key` fields, and
    :func:`~srt_jax.config.keys.changed_default` fields at their default read their old one
    (what :func:`config_hash` hashes).
    """

    def kept(f: dataclasses.Field, value: Any) -> bool:
        if owner_of(f) and value is None:
            return False
        return not for_hash or hashed(f, value)

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {
                f.name: plain(hash_value(f, field) if for_hash else field)
                for f in dataclasses.fields(value)
                if kept(f, field := getattr(value, f.name))
            }
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
        errors = []
        for inner in (a for a in args if a is not type(None)):
            try:
                return _coerce(inner, value, dotted)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise bad(" or ".join(_expected(err) for err in errors))
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
        if number is None or not math.isfinite(number) or float(number) != int(number):
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


def _expected(err: ConfigError) -> str:
    """The "expected ..." part of a coercion error (its whole text if it has none)."""
    text = str(err)
    return text.split("expected ", 1)[1] if "expected " in text else text


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
    """A stable hex id of a resolved config: equal configs give equal ids. New keys at their
    default are left out (:func:`~srt_jax.config.keys.new_key`), so adding a key does not
    change the ids of the configs that predate it; so are keys that only change how the run
    is reported (:func:`~srt_jax.config.keys.observer_key`)."""
    canonical = json.dumps(to_dict(config, for_hash=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def replace(config: Any, overrides: Sequence[str]) -> Any:
    """A copy of ``config`` with dotted ``overrides`` applied and re-validated."""
    return from_dict(type(config), apply_overrides(to_dict(config), overrides))

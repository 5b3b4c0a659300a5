"""How a config key is declared and checked: keys owned by one backbone or optimiser, keys
added after run ids existed, and the one check every section's ``__post_init__`` uses.

Backbone keys: ``model.backbone`` names the sequence model, and a key that belongs to one
backbone (``n_heads``, ``norm``, ``positions`` for the transformer; the ``mamba`` section for
Mamba) is declared with :func:`backbone_key`. It is null in the config of any other backbone
— setting it there is an error naming the key — and takes its default when its own backbone
is chosen. :func:`srt_jax.config.loading.to_dict` leaves null backbone keys out, so a
transformer config reads (and hashes) exactly as it did before Mamba existed. Optimiser
sections (``train.prodigy``, ``train.dadapt_adamw``, ``train.usgm``) belong to their
``train.optimizer`` the same way (:func:`optimizer_key`); both are :func:`owned_key` fields.

Keys added after run ids existed are declared with :func:`new_key`:
:func:`srt_jax.config.loading.config_hash` leaves such a key out while it holds its default,
so the run id of a config that predates the key does not change (``train.optimizer``:
``adamw``), while ``config.yaml`` and every other reader still see it.

A key whose default changed after run ids existed is declared with
:func:`changed_default`: while it holds the new default the hash reads the old one
(``eval.batch_users``: null, chosen by platform, hashes as the 256 it was), so the run ids of
configs that never set it do not change.

Keys that change what is reported about a run, not what is trained (``train.trackers`` and
the tracking location), are declared with :func:`observer_key`: the config hash always
leaves them out, so turning MLflow logging on does not change a run's id, and a run
directory accepts a resumed session that logs elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import field
from typing import Any

from srt_jax.errors import ConfigError

OWNER = "owner"
"""Field metadata of an :func:`owned_key`: (the selecting field's name, the owning value)."""
_DEFAULT = "owner_default"
NEW_KEY = "new_key"
"""Field metadata of a :func:`new_key`: left out of the config hash while at its default."""
HASHED_AS = "hashed_as"
"""Field metadata of a :func:`changed_default`: the value hashed while at its default."""
OBSERVER = "observer"
"""Field metadata of an :func:`observer_key`: always left out of the config hash."""


def owned_key(selector: str, owner: str, default: Callable[[], Any]) -> Any:
    """A field that belongs to one value ``owner`` of its section's field ``selector``: null
    under any other value (setting it there is an error), ``default()`` when left null under
    its own (see :func:`resolve_owned_keys`)."""
    return field(default=None, metadata={OWNER: (selector, owner), _DEFAULT: default})


def backbone_key(backbone: str, default: Callable[[], Any]) -> Any:
    """A ``ModelConfig`` field that belongs to ``backbone`` (an :func:`owned_key`)."""
    return owned_key("backbone", backbone, default)


def optimizer_key(optimizer: str, default: Callable[[], Any]) -> Any:
    """A ``TrainConfig`` field that belongs to ``optimizer`` (an :func:`owned_key`)."""
    return owned_key("optimizer", optimizer, default)


def new_key(default: Any) -> Any:
    """A field added after run ids existed, with an immutable ``default``: the config hash
    leaves it out while it holds that default (see the module docstring)."""
    return field(default=default, metadata={NEW_KEY: True})


def changed_default(default: Any, *, hashed_as: Any) -> Any:
    """A field whose default changed after run ids existed (an immutable ``default``): the
    config hash reads the old default ``hashed_as`` while it holds the new one."""
    return field(default=default, metadata={HASHED_AS: hashed_as})


def hash_value(f: dataclasses.Field, value: Any) -> Any:
    """What the config hash reads for field ``f`` holding ``value``: the old default of a
    :func:`changed_default` field at its new default, else ``value``."""
    if HASHED_AS in f.metadata and value == f.default:
        return f.metadata[HASHED_AS]
    return value


def observer_key(default: Any) -> Any:
    """A field that only changes how a run is reported (an immutable ``default``): the config
    hash leaves it out whatever its value (see the module docstring)."""
    return field(default=default, metadata={OBSERVER: True})


def new_backbone_key(backbone: str, default: Callable[[], Any]) -> Any:
    """A :func:`backbone_key` added after run ids existed: the config hash leaves it out
    while it holds its backbone's ``default()``."""
    owned = backbone_key(backbone, default)
    return field(default=None, metadata={**owned.metadata, NEW_KEY: True})


def hashed(f: dataclasses.Field, value: Any) -> bool:
    """Whether field ``f`` holding ``value`` is part of the config hash: not an observer key,
    and not a new key at its default (an owned one's default under its owner)."""
    if f.metadata.get(OBSERVER):
        return False
    if not f.metadata.get(NEW_KEY):
        return True
    default = f.metadata[_DEFAULT]() if _DEFAULT in f.metadata else f.default
    return value != default


def owner_of(f: dataclasses.Field) -> tuple[str, str] | None:
    """(selecting field, owning value) of an :func:`owned_key` field; None for a shared one."""
    return f.metadata.get(OWNER)


def backbone_of(f: dataclasses.Field) -> str | None:
    """The backbone a config field belongs to, or None for a shared field."""
    owner = owner_of(f)
    return owner[1] if owner and owner[0] == "backbone" else None


def resolve_owned_keys(section: Any, where: str) -> None:
    """Check and fill the :func:`owned_key` fields of the frozen dataclass ``section`` (at
    dotted ``where``): one set under another value of its selector is a ConfigError naming
    it; one left null under its own value takes its default."""
    for f in dataclasses.fields(section):
        owner, value = owner_of(f), getattr(section, f.name)
        if owner is None:
            continue
        selector, own = owner
        chosen = getattr(section, selector)
        if own != chosen and value is not None:
            raise ConfigError(
                f"{where}.{f.name} is a {own} key, but {where}.{selector} is {chosen!r}: "
                f"remove it, or set {where}.{selector} to {own!r}",
                key=f"{where}.{f.name}",
            )
        if own == chosen and value is None:
            object.__setattr__(section, f.name, f.metadata[_DEFAULT]())


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    """Raise a ConfigError naming ``key`` and what is expected unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: expected {expected}", key=key)

"""The device mesh of a run: a ``data`` axis that splits the batch and an ``items`` axis
that splits the item table (``train.data_parallel`` x ``train.item_shards`` devices).

One CPU device is a 1 x 1 mesh. The batch is split along ``data`` (and whole on every
device of an ``items`` group); parameters are replicated except the item tables, which
:mod:`srt_jax.train.item_shards` splits by rows along ``items``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from srt_jax.errors import ConfigError

DATA_AXIS = "data"
ITEMS_AXIS = "items"


def data_mesh(data_parallel: int | None = None, item_shards: int = 1) -> Mesh:
    """A ``data x items`` mesh over the first ``data_parallel x item_shards`` devices
    (``data_parallel`` None: as many as the visible devices allow)."""
    devices = jax.devices()
    n = len(devices) // item_shards if data_parallel is None else data_parallel
    if n * item_shards > len(devices) or n == 0:
        key = "train.data_parallel" if data_parallel is not None else "train.item_shards"
        raise ConfigError(
            f"train.data_parallel = {data_parallel} x train.item_shards = {item_shards} is "
            f"invalid: only {len(devices)} device(s) are visible",
            key=key,
        )
    grid = np.array(devices[: n * item_shards]).reshape(n, item_shards)
    return Mesh(grid, (DATA_AXIS, ITEMS_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(rows: int, mesh: Mesh, key: str) -> None:
    """Raise a ConfigError naming ``key`` unless ``rows`` splits evenly over the mesh."""
    n = mesh.shape[DATA_AXIS]
    if rows % n:
        raise ConfigError(
            f"{key} = {rows} is invalid: expected a multiple of the {n} data-parallel devices",
            key=key,
        )

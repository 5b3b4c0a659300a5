"""The item table split over the ``items`` axis of the device mesh (``train.item_shards``).

A catalog of millions of items makes the item table, its gradient and its optimiser state
the largest arrays of a run. With ``train.item_shards = S`` the mesh is ``data x items``
(:func:`srt_jax.train.mesh.data_mesh`) and every ID item table (:class:`~srt_jax.models.
item_encoders.IdEncoder`'s ``table_VxD``, input and output) is stored in the train state with
its rows split over the S devices of each ``items`` group — with it, the optimiser's moments
of that table (AdamW's ``mu`` and ``nu``, any parameter-shaped state) and the accumulated
gradient of adaptive batches. Every other parameter stays replicated.

Even shards need a multiple of S rows, so the train state holds the tables padded to
``V' = S x ceil(V / S)`` rows (V = n_items + 1). The padding rows are never read: the model
sees the first V rows (:func:`unpad_item_tables`), so they get no gradient, and the
parameters a run evaluates, exports or hands to ``train.init_from`` have V rows as with
S = 1. Checkpoints hold the padded state; a run resumes with the same ``item_shards``.

How the loss uses the split table: the full softmax is computed shard by shard
(:func:`srt_jax.train.losses.full_softmax_loss` with a mesh: each device scores its own rows,
the log-sum-exp is combined across the ``items`` axis), so no device holds more than
``V' / S`` rows or logits; sampled losses gather their candidates' rows from the shards
(XLA's partitioner moves only the gathered rows).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from srt_jax.train.mesh import ITEMS_AXIS

ITEM_ROWS = "table_VxD"
"""The name of a parameter whose rows are item indices (:class:`~srt_jax.models.
item_encoders.IdEncoder`)."""


def padded_rows(rows: int, shards: int) -> int:
    """``rows`` rounded up to a multiple of ``shards``."""
    return -(-rows // shards) * shards


def is_item_rows(path: tuple[Any, ...], leaf: Any) -> bool:
    """Whether the leaf at ``path`` (a ``jax.tree_util`` key path) is an item table or a
    table-shaped optimiser state of one: a 2-D leaf under a ``table_VxD`` key."""
    names = {getattr(key, "key", None) for key in path}
    return ITEM_ROWS in names and getattr(leaf, "ndim", 0) == 2


def _map_item_tables(fn: Any, tree: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: fn(leaf) if is_item_rows(path, leaf) else leaf, tree
    )


def pad_rows(table_VxD: jax.Array, shards: int) -> jax.Array:
    """``table_VxD`` with zero rows appended up to a multiple of ``shards`` rows (the same
    array when V already is one)."""
    extra = padded_rows(table_VxD.shape[0], shards) - table_VxD.shape[0]
    return jnp.pad(table_VxD, ((0, extra), (0, 0))) if extra else table_VxD


def pad_item_tables(params: Any, shards: int) -> Any:
    """``params`` with every item table padded with zero rows to a multiple of ``shards``."""
    return _map_item_tables(lambda table: pad_rows(table, shards), params)


def unpad_item_tables(params: Any, rows: int) -> Any:
    """``params`` with every item table cut to its first ``rows`` rows (V = n_items + 1)."""
    return _map_item_tables(lambda table: table[:rows] if table.shape[0] > rows else table, params)


def item_table_rows(params: Any) -> int | None:
    """The rows V of the (unpadded) item tables of ``params``; None without an ID table."""
    rows = [
        leaf.shape[0]
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if is_item_rows(path, leaf)
    ]
    return min(rows, default=None)


def state_shardings(tree: Any, mesh: Mesh) -> Any:
    """A sharding per leaf of ``tree`` (arrays or shape structs): item tables and their
    optimiser state split by rows over ``items`` when it divides their rows, everything else
    replicated."""
    shards = mesh.shape[ITEMS_AXIS]
    split = NamedSharding(mesh, PartitionSpec(ITEMS_AXIS, None))
    whole = NamedSharding(mesh, PartitionSpec())

    def sharding(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        rows_split = is_item_rows(path, leaf) and leaf.shape[0] % shards == 0
        return split if shards > 1 and rows_split else whole

    return jax.tree_util.tree_map_with_path(sharding, tree)

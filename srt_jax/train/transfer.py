"""Fine-tuning controls of ``train.transfer`` (:class:`~srt_jax.config.TransferConfig`):
which parameters train when, and the pull back to the pre-trained values.

Both act inside the jitted step on pytrees shaped like the parameter state (one float per
parameter array):

- :func:`unfreeze_points` gives every parameter the fraction of the token budget from which
  it trains: 0 for the item encoders (``item_encoder``, ``output_encoder``: ID rows, hashed
  buckets, feature tokens), which always train; for the backbone's parameters ``inf``
  (``freeze: backbone``) or, under ``progressive``, ``k x unfreeze_every`` for the block
  that is k-th from the top (the parameters outside the blocks unfreeze with the top one).
  :func:`gate` multiplies gradients (before the optimiser, so its moments see only the
  trained steps) and updates (after it, so decoupled weight decay does not move a frozen
  parameter) by ``progress >= point``.
- :func:`pull_to_init` adds ``-lr x λ x (θ - θ₀)`` to the updates of the backbone's
  parameters (decoupled L2-SP), θ₀ being the parameters the run started from.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from srt_jax.config import TransferConfig

ITEM_ENCODERS = ("item_encoder", "output_encoder")
"""Top-level attributes of a backbone that hold its item encoders."""
BLOCK_LISTS = ("blocks", "layers")
"""Attributes that hold a backbone's list of blocks (transformer, Mamba)."""


def _block_of(path: tuple) -> int | None:
    """The block index of a parameter path (None outside the blocks)."""
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    for name, index in itertools.pairwise(keys):
        if name in BLOCK_LISTS and isinstance(index, int):
            return index
    return None


def is_backbone(path: tuple) -> bool:
    """Whether a parameter path is outside the item encoders."""
    return getattr(path[0], "key", None) not in ITEM_ENCODERS


def unfreeze_points(params: nnx.State, cfg: TransferConfig, n_layers: int) -> Any:
    """float32 per parameter (a tree like ``params``): the fraction of the token budget from
    which it trains (see the module docstring)."""
    every = cfg.unfreeze_every or 1.0 / (n_layers + 1)

    def point(path: tuple, _: jax.Array) -> np.float32:
        if cfg.freeze == "none" or not is_backbone(path):
            return np.float32(0.0)
        if cfg.freeze == "backbone":
            return np.float32(np.inf)
        block = _block_of(path)
        from_top = 1 if block is None else n_layers - block
        return np.float32(every * from_top)

    return jax.tree_util.tree_map_with_path(point, params)


def gate(tree: Any, points: Any, progress: jax.Array) -> Any:
    """``tree`` with the leaves whose unfreeze point is above ``progress`` set to 0."""
    return jax.tree.map(lambda x, p: x * (progress >= p).astype(x.dtype), tree, points)


def backbone_mask(params: nnx.State) -> Any:
    """float32 1 for the backbone's parameters, 0 for the item encoders' (a tree like
    ``params``): the parameters :func:`pull_to_init` acts on."""
    return jax.tree_util.tree_map_with_path(lambda path, _: np.float32(is_backbone(path)), params)


def pull_to_init(
    updates: Any, params: Any, anchor: Any, mask: Any, lr: jax.Array, strength: float
) -> Any:
    """``updates`` plus ``-lr x strength x (params - anchor)`` where ``mask`` is 1."""
    return jax.tree.map(
        lambda u, p, a, m: u - jnp.asarray(lr * strength, u.dtype) * m * (p - a),
        updates,
        params,
        anchor,
        mask,
    )

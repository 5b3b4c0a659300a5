"""The backbone interface: what losses, the training step and evaluation need of a model.

A backbone is an ``nnx.Module`` that maps left-padded windows of item indices to causal
hidden states and exposes the item table the hidden states are scored against. Adding one
is one module (the class, its FLOP count and its shape label) plus one entry in
:data:`srt_jax.models.factory.BACKBONES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax
from flax import nnx

from srt_jax.config import ModelConfig


class Backbone(Protocol):
    """A causal next-item sequence model.

    ``model(inputs_BxL, positions_BxL=None, *, segments_BxL=None, rngs=None) ->
    hidden_BxLxD``: hidden states of every position of item indices ``inputs_BxL`` (int32,
    0 = padding, left-padded); position t depends only on non-padding items at positions
    <= t (and, with ``segments_BxL`` of a packed batch, in t's segment; a backbone that
    cannot keep segments apart raises). ``positions_BxL`` (default ``0..L-1``) is used by
    backbones with position embeddings and ignored by the others. ``rngs`` (e.g.
    ``nnx.Rngs(dropout=key)``) drives dropout in training mode.

    ``model.last_hidden(inputs_BxL, positions_BxL=None) -> hidden_BxD``: the hidden state of
    the last position, equal to ``model(inputs_BxL)[:, -1]`` (eval mode), computing in the
    last layer only what that position needs (leave-one-out ranking and serving).

    ``model.item_table() -> table_VxD``: the output item table (V = n_items + 1; row 0 is
    padding and never a target) that losses and evaluation score hidden states against.

    ``model.train()`` / ``model.eval()``: dropout on / off.
    """

    def __call__(
        self,
        inputs_BxL: jax.Array,
        positions_BxL: jax.Array | None = None,
        *,
        segments_BxL: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array: ...

    def last_hidden(
        self, inputs_BxL: jax.Array, positions_BxL: jax.Array | None = None
    ) -> jax.Array: ...

    def item_table(self) -> jax.Array: ...

    def train(self, **attributes: Any) -> None: ...

    def eval(self, **attributes: Any) -> None: ...


class RecurrentBackbone(Backbone, Protocol):
    """A backbone that can also run one event at a time with O(1) work per event.

    ``cache = model.init_cache(batch)`` is the state before any item (a pytree of arrays);
    ``cache, hidden_BxD = model.step(cache, items_B)`` consumes the next item of each row
    (0 = padding: the row's state is left unchanged) and returns the hidden state of that
    position — equal to ``model(inputs)[:, t]`` for the same prefix.
    """

    def init_cache(self, batch: int) -> Any: ...

    def step(self, cache: Any, items_B: jax.Array) -> tuple[Any, jax.Array]: ...


@dataclass(frozen=True)
class BlockFlops:
    """Forward FLOPs per computed position of a backbone's blocks (2 per multiply-add).

    Attributes:
      backbone: the dense projections (attention or Mamba projections, feed-forward).
      attention: attention scores and mixing over the window's keys (transformers).
      scan: the causal convolution and selective scan (state-space models).
    """

    backbone: float
    attention: float = 0.0
    scan: float = 0.0


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
      build: ``build(cfg, n_items, max_len, rngs=..., item_features=...)`` -> a freshly
        initialised model (``item_features``: the store's, or None).
      block_flops: ``block_flops(cfg, max_len)`` -> its blocks' forward FLOPs per position.
      shape_label: ``shape_label(cfg)`` -> a short description of its shape for tables.
    """

    build: Callable[..., Backbone]
    block_flops: Callable[[ModelConfig, int], BlockFlops]
    shape_label: Callable[[ModelConfig], str]

"""Build the backbone named by ``ModelConfig.backbone``.

Every backbone is an ``nnx.Module`` with the same interface, so losses, training steps and
evaluation never depend on which one they get:

* ``model(inputs_BxL, positions_BxL=None, *, rngs=None) -> hidden_BxLxD`` — causal hidden
  states of item indices (0 = padding); ``rngs`` (e.g. ``nnx.Rngs(dropout=key)``) drives
  dropout in training mode.
* ``model.item_table() -> [n_items + 1, D]`` — the output item table (row 0 = padding, never
  a target) that losses and evaluation score hidden states against.
* ``model.train()`` / ``model.eval()`` — dropout on / off.
"""

from __future__ import annotations

from flax import nnx

from srt_jax.config import ModelConfig
from srt_jax.models.transformer import SeqRecTransformer

BACKBONES = {"transformer": SeqRecTransformer}


def build_model(cfg: ModelConfig, n_items: int, max_len: int, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised backbone for a catalog of ``n_items`` and windows of ``max_len``."""
    return BACKBONES[cfg.backbone](cfg, n_items, max_len, rngs=rngs)

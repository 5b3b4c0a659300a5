"""The registry of backbones and ``build_model``, which builds the one a config names.

Every backbone follows :class:`srt_jax.models.backbone.Backbone`, so losses, training steps
and evaluation never depend on which one they get; each brings its own FLOP count and shape
label (:class:`srt_jax.models.backbone.BackboneEntry`), which is how sweeps, plans and
summaries cost and describe a run of it.
"""

from __future__ import annotations

from flax import nnx

from srt_jax.config import ModelConfig
from srt_jax.data.item_features import ItemFeatures
from srt_jax.data.store import SequenceStore
from srt_jax.models.backbone import Backbone, BackboneEntry
from srt_jax.models.mamba import Mamba4Rec, mamba_block_flops, mamba_shape_label
from srt_jax.models.transformer import (
    SeqRecTransformer,
    transformer_block_flops,
    transformer_shape_label,
)

BACKBONES: dict[str, BackboneEntry] = {
    "transformer": BackboneEntry(
        SeqRecTransformer, transformer_block_flops, transformer_shape_label
    ),
    "mamba": BackboneEntry(Mamba4Rec, mamba_block_flops, mamba_shape_label),
}


def backbone_entry(cfg: ModelConfig) -> BackboneEntry:
    """The registry entry of ``cfg.backbone``."""
    return BACKBONES[cfg.backbone]


def build_model(
    cfg: ModelConfig,
    n_items: int,
    max_len: int,
    rngs: nnx.Rngs,
    *,
    item_features: ItemFeatures | None = None,
) -> Backbone:
    """A freshly initialised backbone for a catalog of ``n_items`` and windows of ``max_len``;
    ``item_features`` (the store's) are needed by the ``features`` item encoders."""
    return backbone_entry(cfg).build(cfg, n_items, max_len, rngs=rngs, item_features=item_features)


def model_item_features(cfg: ModelConfig, store: SequenceStore) -> ItemFeatures | None:
    """The item features of ``store`` if ``cfg``'s item encoder uses them, else None."""
    return store.item_features() if cfg.item_encoder.startswith("features") else None


def shape_label(cfg: ModelConfig) -> str:
    """A short description of the model's shape for tables, e.g. ``2x64 h2 ff256``."""
    return backbone_entry(cfg).shape_label(cfg)

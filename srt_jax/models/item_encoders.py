"""Item encoders: map item indices (0 = padding, 1..n_items = items) to vectors.

The encoders share one interface, ``encoder(ids_...) -> emb_...xD`` and
``encoder.table() -> table_VxD`` (V = n_items + 1, row 0 = padding):

* :class:`IdEncoder` — one learned row per item (SASRec's item table).
* :class:`HashedEncoder` — ``n_hashes`` fixed hash functions map each item into one shared
  table of ``hash_buckets`` rows; an item's vector is the **sum** of its buckets' rows, so the
  parameter count does not depend on the catalog size (the "hashing trick" of Weinberger et
  al. 2009 with k hashes, as in Svenstrup et al. 2017 without importance weights).
* :class:`FeaturesEncoder` — an item's vector pools (sum or mean) the rows of its feature
  tokens (:mod:`srt_jax.data.item_features`) in a table of one row per token, SRT's
  catalog-independent encoder: the parameters depend on the token vocabulary only, so a
  model moves to a new catalog that shares it.
* :class:`SumEncoder` — the sum of two encoders (``features+id``, ``features+hashed``).

Every parameter of an encoder is an :class:`EmbeddingParam`, which is how parameter counting
and weight-decay masks tell embedding parameters from the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from srt_jax.config import ModelConfig
from srt_jax.data.item_features import ItemFeatures
from srt_jax.errors import ConfigError

EMBEDDING_INIT = nnx.initializers.normal(stddev=0.02)

# Multiply-add hashing constants: hash i uses a_i = (GOLDEN * (2i + 1)) mod 2^32 (odd, so
# x -> a_i * x is a bijection mod 2^32) and b_i = (MIX * (i + 1)) mod 2^32.
_GOLDEN = 0x9E3779B1
_MIX = 0x85EBCA6B
_DROPPED_LOW_BITS = 8


class EmbeddingParam(nnx.Param):
    """A parameter that is an embedding table (items, hashed buckets, feature tokens or
    positions)."""


class FeatureIndex(nnx.Variable):
    """Constant index arrays of a :class:`FeaturesEncoder` (data of the store: not trained,
    not checkpointed, rebuilt from the store)."""


def hash_buckets_of(ids_X: jax.Array, n_hashes: int, n_buckets: int) -> jax.Array:
    """The fixed bucket indices of item indices, computable inside ``jit``.

    Hash i of item x is ``(((a_i * x + b_i) mod 2^32) >> 8) mod n_buckets`` with the
    constants above (uint32 arithmetic wraps mod 2^32; the low 8 bits, the weakest of a
    multiplicative hash, are dropped).

    Args:
      ids_X: integer item indices of any shape ``X`` (values < 2^32).
      n_hashes: number of hash functions J.
      n_buckets: table rows M.

    Returns:
      int32 array of shape ``X x J`` with values in ``[0, n_buckets)``.
    """
    i = np.arange(n_hashes, dtype=np.uint64)
    a_J = jnp.asarray((_GOLDEN * (2 * i + 1)) % 2**32, dtype=jnp.uint32)
    b_J = jnp.asarray((_MIX * (i + 1)) % 2**32, dtype=jnp.uint32)
    x_XxJ = ids_X.astype(jnp.uint32)[..., None]
    mixed_XxJ = (a_J * x_XxJ + b_J) >> _DROPPED_LOW_BITS
    return (mixed_XxJ % jnp.uint32(n_buckets)).astype(jnp.int32)


class IdEncoder(nnx.Module):
    """One learned row per item: ``table_VxD`` with V = n_items + 1."""

    def __init__(self, n_items: int, d_model: int, *, rngs: nnx.Rngs):
        self.table_VxD = EmbeddingParam(EMBEDDING_INIT(rngs.params(), (n_items + 1, d_model)))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Vectors of ``ids`` (any integer shape X): float32 ``X x D``."""
        return jnp.take(self.table_VxD[...], ids, axis=0)

    def table(self) -> jax.Array:
        """All items' vectors, ``[n_items + 1, D]`` (row 0 = padding)."""
        return self.table_VxD[...]


class HashedEncoder(nnx.Module):
    """Sum of J = ``n_hashes`` rows of a shared ``M x D`` table, M = ``hash_buckets``."""

    def __init__(
        self, n_items: int, d_model: int, n_hashes: int, n_buckets: int, *, rngs: nnx.Rngs
    ):
        self.n_items = n_items
        self.n_hashes = n_hashes
        self.n_buckets = n_buckets
        self.buckets_MxD = EmbeddingParam(EMBEDDING_INIT(rngs.params(), (n_buckets, d_model)))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Vectors of ``ids`` (any integer shape X): float32 ``X x D``."""
        buckets_XxJ = hash_buckets_of(ids, self.n_hashes, self.n_buckets)
        return jnp.take(self.buckets_MxD[...], buckets_XxJ, axis=0).sum(axis=-2)

    def table(self) -> jax.Array:
        """All items' vectors, ``[n_items + 1, D]`` (row 0 = padding), built each call."""
        return self(jnp.arange(self.n_items + 1, dtype=jnp.int32))


class FeaturesEncoder(nnx.Module):
    """Pooled feature tokens: item i's vector is the sum (or mean) of the rows of its tokens
    in ``feature_table_OxD`` (O = the vocabulary size; row 0, padding, is never used)."""

    def __init__(
        self, features: ItemFeatures, d_model: int, pooling: str, *, rngs: nnx.Rngs
    ) -> None:
        self.n_items = features.n_items
        self.feature_table_OxD = EmbeddingParam(
            EMBEDDING_INIT(rngs.params(), (features.vocab_size, d_model))
        )
        self.token_ids = FeatureIndex(jnp.asarray(features.tokens, jnp.int32))
        self.token_items = FeatureIndex(jnp.asarray(features.token_items, jnp.int32))
        counts_V = np.maximum(features.counts, 1)
        scale = 1.0 / counts_V if pooling == "mean" else np.ones(len(counts_V))
        self.pool_scale_V = FeatureIndex(jnp.asarray(scale, jnp.float32))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Vectors of ``ids`` (any integer shape X): float32 ``X x D`` (from the table)."""
        return jnp.take(self.table(), ids, axis=0)

    def table(self) -> jax.Array:
        """All items' vectors, ``[n_items + 1, D]`` (row 0 = padding = 0), built each call
        from the store's feature tokens: a gather of one row per token (``rows_XxD``, X =
        the store's number of feature tokens) and a sorted segment sum."""
        rows_XxD = jnp.take(self.feature_table_OxD[...], self.token_ids[...], axis=0)
        pooled_VxD = jax.ops.segment_sum(
            rows_XxD,
            self.token_items[...],
            num_segments=self.n_items + 1,
            indices_are_sorted=True,
        )
        return pooled_VxD * self.pool_scale_V[...][:, None]


class SumEncoder(nnx.Module):
    """The sum of a features encoder and an ID or hashed encoder."""

    def __init__(self, features: FeaturesEncoder, other: IdEncoder | HashedEncoder) -> None:
        self.features = features
        self.other = other

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Vectors of ``ids`` (any integer shape X): float32 ``X x D``."""
        return self.features(ids) + self.other(ids)

    def table(self) -> jax.Array:
        """All items' vectors, ``[n_items + 1, D]`` (row 0 = padding)."""
        return self.features.table() + self.other.table()


ItemEncoder = IdEncoder | HashedEncoder | FeaturesEncoder | SumEncoder


def make_item_encoder(
    cfg: ModelConfig,
    n_items: int,
    *,
    rngs: nnx.Rngs,
    item_features: ItemFeatures | None = None,
) -> ItemEncoder:
    """The encoder named by ``cfg.item_encoder``; the ``features`` ones need
    ``item_features`` of the same ``n_items`` items (ConfigError otherwise)."""
    kind = cfg.item_encoder
    plain = kind.removeprefix("features+")
    other: IdEncoder | HashedEncoder | None = None
    if plain == "hashed":
        other = HashedEncoder(n_items, cfg.d_model, cfg.n_hashes, cfg.hash_buckets, rngs=rngs)
    elif plain == "id":
        other = IdEncoder(n_items, cfg.d_model, rngs=rngs)
    if not kind.startswith("features"):
        return other
    if item_features is None:
        raise ConfigError(
            f"model.item_encoder = {kind!r} needs a store with item features (prepare it with "
            "`srt-jax data prepare ... --item-features FILE`, or use a built-in dataset that "
            "has them, such as movielens-100k)",
            key="model.item_encoder",
        )
    if item_features.n_items != n_items:
        raise ValueError(f"item features cover {item_features.n_items} items, not {n_items}")
    encoder = FeaturesEncoder(item_features, cfg.d_model, cfg.feature_pooling, rngs=rngs)
    return encoder if other is None else SumEncoder(encoder, other)


class ItemTables:
    """Mixin of a backbone's item tables: ``item_encoder`` embeds inputs, and ``item_table()``
    is the output table — the input encoder's (``tie_embeddings``) or a separate
    ``output_encoder``'s. Call :meth:`init_item_tables` in the backbone's ``__init__``."""

    def init_item_tables(
        self,
        cfg: ModelConfig,
        n_items: int,
        *,
        rngs: nnx.Rngs,
        item_features: ItemFeatures | None = None,
    ) -> None:
        """Create the input encoder and, unless tied, the output encoder."""

        def make() -> ItemEncoder:
            return make_item_encoder(cfg, n_items, rngs=rngs, item_features=item_features)

        self.item_encoder = make()
        self.output_encoder = None if cfg.tie_embeddings else make()

    def item_table(self) -> jax.Array:
        """Output item table ``[n_items + 1, D]`` float32; row 0 (padding) is never a target."""
        encoder = self.item_encoder if self.output_encoder is None else self.output_encoder
        return encoder.table()

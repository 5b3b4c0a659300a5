"""A causal next-item transformer (SASRec family) in Flax NNX.

``SeqRecTransformer(cfg, n_items, max_len, rngs=...)`` maps item indices ``inputs_BxL``
(0 = padding, left-padded windows) to hidden states ``hidden_BxLxD``; position t sees only
items at positions <= t that are not padding. ``item_table()`` returns the ``[n_items + 1, D]``
output item table (the input table when ``tie_embeddings``), so a loss scores items as
``hidden @ table.T``.

Options (``ModelConfig``): ``norm`` ``pre`` (pre-LN blocks and a final LayerNorm) or ``post``
(SASRec / RecBole parity: LayerNorm + dropout on the input embeddings, post-LN blocks);
``positions`` ``learned`` (absolute table) or ``rope`` (rotary on queries and keys);
``dtype`` is the compute dtype (parameters stay float32); ``mup_base_width`` switches to μP
(see :class:`~srt_jax.config.ModelConfig`). Dropout is applied to the input
embeddings and to each residual branch; ``model.train()`` / ``model.eval()`` switch it on
and off (NNX's ``deterministic`` attribute).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from srt_jax.config import ModelConfig
from srt_jax.data.item_features import ItemFeatures
from srt_jax.models.backbone import BlockFlops
from srt_jax.models.item_encoders import EMBEDDING_INIT, EmbeddingParam, ItemTables
from srt_jax.models.layers import (
    Dropout,
    FeedForward,
    MuP,
    attention_bias,
    compute_dtype,
    default_positions,
    fused_attention,
    rope,
)


class CausalSelfAttention(nnx.Module):
    """Multi-head self-attention with one fused QKV projection, in heads-major layout.

    Two forms of the same attention (``model.attention``): ``einsum``, written out with
    ``[B, H, L, E]`` operands and an additive mask, which XLA:CPU runs about 1.7x faster than
    ``jax.nn.dot_product_attention`` (fwd+bwd, d_model 256, 4 heads, L 200); and ``fused``,
    ``jax.nn.dot_product_attention`` with a boolean mask, which uses cuDNN's fused (flash)
    attention on a GPU where it applies. Scores and softmax are float32 in both.
    """

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, *, rngs: nnx.Rngs):
        self.n_heads = cfg.n_heads
        self.use_rope = cfg.positions == "rope"  # ModelConfig ensures an even head size
        self.fused = fused_attention(cfg.attention)
        head = cfg.d_model // cfg.n_heads
        base_head = head if cfg.mup_base_width is None else cfg.mup_base_width / cfg.n_heads
        self.score_scale = base_head**0.5 / head  # 1/sqrt(E); μP: sqrt(E_0)/E
        self.qkv = nnx.Linear(cfg.d_model, 3 * cfg.d_model, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(cfg.d_model, cfg.d_model, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        bias_Bx1xLxL: jax.Array,
        positions_BxL: jax.Array,
        *,
        last_only: bool = False,
    ) -> jax.Array:
        """Attention output ``[B, Q, D]``: every position (Q = L) or, with ``last_only``, the
        last one alone (Q = 1; its query reads every key)."""
        B, L, D = x_BxLxD.shape
        H, E = self.n_heads, D // self.n_heads
        qkv_3xBxHxLxE = self.qkv(x_BxLxD).reshape(B, L, 3, H, E).transpose(2, 0, 3, 1, 4)
        q_BxHxQxE, k_BxHxLxE, v_BxHxLxE = jnp.unstack(qkv_3xBxHxLxE)
        q_positions_BxQ = positions_BxL
        if last_only:
            q_BxHxQxE, q_positions_BxQ = q_BxHxQxE[:, :, -1:], positions_BxL[:, -1:]
            bias_Bx1xQxL = bias_Bx1xLxL[:, :, -1:]
        else:
            bias_Bx1xQxL = bias_Bx1xLxL
        if self.use_rope:
            q_BxHxQxE = rope(q_BxHxQxE, q_positions_BxQ)
            k_BxHxLxE = rope(k_BxHxLxE, positions_BxL)
        if self.fused:
            y_BxQxHxE = jax.nn.dot_product_attention(
                q_BxHxQxE.transpose(0, 2, 1, 3),
                k_BxHxLxE.transpose(0, 2, 1, 3),
                v_BxHxLxE.transpose(0, 2, 1, 3),
                mask=bias_Bx1xQxL == 0,
                scale=self.score_scale,
            )
        else:
            scores_BxHxQxL = jnp.einsum(
                "bhqk,bhsk->bhqs",
                q_BxHxQxE * self.score_scale,
                k_BxHxLxE,
                preferred_element_type=jnp.float32,
            )
            probs_BxHxQxL = jax.nn.softmax(scores_BxHxQxL + bias_Bx1xQxL, axis=-1)
            y_BxHxQxE = jnp.einsum(
                "bhqs,bhsk->bhqk", probs_BxHxQxL.astype(v_BxHxLxE.dtype), v_BxHxLxE
            )
            y_BxQxHxE = y_BxHxQxE.transpose(0, 2, 1, 3)
        Q = y_BxQxHxE.shape[1]
        return self.out(y_BxQxHxE.reshape(B, Q, D))


class Block(nnx.Module):
    """Attention and feed-forward sublayers with residuals, pre- or post-LayerNorm."""

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, *, rngs: nnx.Rngs):
        self.pre_norm = cfg.norm == "pre"
        self.attn_norm = nnx.LayerNorm(cfg.d_model, dtype=dtype, rngs=rngs)
        self.attn = CausalSelfAttention(cfg, dtype, rngs=rngs)
        self.ffn_norm = nnx.LayerNorm(cfg.d_model, dtype=dtype, rngs=rngs)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, dtype, rngs=rngs)
        self.dropout = Dropout(cfg.dropout, rngs=rngs)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        bias_Bx1xLxL: jax.Array,
        positions_BxL: jax.Array,
        rngs: nnx.Rngs | None,
        *,
        last_only: bool = False,
    ) -> jax.Array:
        """The block's output ``[B, Q, D]`` at every position (Q = L) or, with ``last_only``,
        at the last one alone (Q = 1; its attention still reads every position)."""
        attn, ffn, drop = self.attn, self.ffn, self.dropout
        x_BxQxD = x_BxLxD[:, -1:] if last_only else x_BxLxD
        if self.pre_norm:
            attended = attn(
                self.attn_norm(x_BxLxD), bias_Bx1xLxL, positions_BxL, last_only=last_only
            )
            x_BxQxD = x_BxQxD + drop(attended, rngs=rngs)
            x_BxQxD = x_BxQxD + drop(ffn(self.ffn_norm(x_BxQxD)), rngs=rngs)
        else:
            attended = attn(x_BxLxD, bias_Bx1xLxL, positions_BxL, last_only=last_only)
            x_BxQxD = self.attn_norm(x_BxQxD + drop(attended, rngs=rngs))
            x_BxQxD = self.ffn_norm(x_BxQxD + drop(ffn(x_BxQxD), rngs=rngs))
        return x_BxQxD


class SeqRecTransformer(ItemTables, MuP, nnx.Module):
    """Causal next-item transformer; see the module docstring for options and masks."""

    def __init__(
        self,
        cfg: ModelConfig,
        n_items: int,
        max_len: int,
        *,
        rngs: nnx.Rngs,
        item_features: ItemFeatures | None = None,
    ):
        dtype = compute_dtype(cfg.dtype)
        self.dtype = dtype
        self.init_item_tables(cfg, n_items, rngs=rngs, item_features=item_features)
        self.position_table_LxD = (
            EmbeddingParam(EMBEDDING_INIT(rngs.params(), (max_len, cfg.d_model)))
            if cfg.positions == "learned"
            else None
        )
        self.embed_norm = (
            nnx.LayerNorm(cfg.d_model, dtype=dtype, rngs=rngs) if cfg.norm == "post" else None
        )
        self.embed_dropout = Dropout(cfg.dropout, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, dtype, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = (
            nnx.LayerNorm(cfg.d_model, dtype=dtype, rngs=rngs) if cfg.norm == "pre" else None
        )
        self.init_mup(cfg)

    def __call__(
        self,
        inputs_BxL: jax.Array,
        positions_BxL: jax.Array | None = None,
        *,
        segments_BxL: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Hidden states of every position.

        Args:
          inputs_BxL: int32 item indices, 0 = padding.
          positions_BxL: int32 position of each input (default ``0..L-1`` on every row,
            SASRec's convention for left-padded windows); must be < ``max_len`` for
            learned positions.
          segments_BxL: int32 segment of each position in a packed batch
            (:mod:`srt_jax.data.packing`): attention never crosses segments. None: one
            window per row.
          rngs: dropout randomness for this call (e.g. ``nnx.Rngs(dropout=key)`` from the
            step's key); default: the model's own stream. Unused in eval mode.

        Returns:
          ``hidden_BxLxD`` in the compute dtype. Rows at padding positions are finite but
          meaningless; they never influence real positions.
        """
        return self._forward(inputs_BxL, positions_BxL, segments_BxL, rngs, last_only=False)

    def last_hidden(
        self, inputs_BxL: jax.Array, positions_BxL: jax.Array | None = None
    ) -> jax.Array:
        """``hidden_BxD`` of the last position alone, equal to ``model(inputs)[:, -1]``; the
        last block computes that position only (its keys and values still cover the window),
        which is what leave-one-out evaluation and serving need."""
        return self._forward(inputs_BxL, positions_BxL, None, None, last_only=True)[:, 0]

    def _forward(
        self,
        inputs_BxL: jax.Array,
        positions_BxL: jax.Array | None,
        segments_BxL: jax.Array | None,
        rngs: nnx.Rngs | None,
        *,
        last_only: bool,
    ) -> jax.Array:
        """Hidden states ``[B, Q, D]``: every position, or the last one (Q = 1)."""
        if positions_BxL is None:
            positions_BxL = default_positions(inputs_BxL)
        bias_Bx1xLxL = attention_bias(inputs_BxL, segments_BxL)
        x_BxLxD = self.item_encoder(inputs_BxL)
        if self.position_table_LxD is not None:
            x_BxLxD = x_BxLxD + jnp.take(self.position_table_LxD[...], positions_BxL, axis=0)
        x_BxLxD = x_BxLxD.astype(self.dtype)
        if self.embed_norm is not None:
            x_BxLxD = self.embed_norm(x_BxLxD)
        x_BxLxD = self.embed_dropout(x_BxLxD, rngs=rngs)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x_BxLxD = block(
                x_BxLxD, bias_Bx1xLxL, positions_BxL, rngs, last_only=last_only and i == last
            )
        if last_only:
            x_BxLxD = x_BxLxD[:, -1:]  # already so after a last block; not without blocks
        if self.final_norm is not None:
            x_BxLxD = self.final_norm(x_BxLxD)
        return self.readout(x_BxLxD)


def transformer_block_flops(cfg: ModelConfig, max_len: int) -> BlockFlops:
    """Forward FLOPs per position of the blocks: QKV, output and feed-forward matmuls
    (``backbone``) and the scores ``Q K^T`` and ``A V`` over all ``max_len`` keys
    (``attention``)."""
    d, L = cfg.d_model, max_len
    per_layer_matmuls = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * cfg.ffn_dim
    per_layer_attention = 2 * 2 * L * d
    return BlockFlops(
        backbone=float(cfg.n_layers * per_layer_matmuls),
        attention=float(cfg.n_layers * per_layer_attention),
    )


def transformer_shape_label(cfg: ModelConfig) -> str:
    """``layers x d_model``, heads and feed-forward width, e.g. ``2x64 h2 ff256``."""
    return f"{cfg.n_layers}x{cfg.d_model} h{cfg.n_heads} ff{cfg.ffn_dim}"

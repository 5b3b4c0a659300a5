"""Mamba4Rec (Liu et al. 2024): a selective state-space backbone for next-item prediction.

``Mamba4Rec(cfg, n_items, max_len, rngs=...)`` has the :class:`~srt_jax.models.backbone.Backbone`
interface of the transformer, plus recurrent serving (``init_cache`` / ``step``: O(1) work
per new event). Its forward pass, as in Mamba4Rec's code (chengkai-liu/Mamba4Rec,
``mamba4rec.py``)::

    x = LayerNorm(Dropout(ItemEmbedding(items)))                     # no position embedding
    n_layers x:  h = Dropout(Mamba(x))
                 x = LayerNorm(h + x)      (n_layers > 1)   or   LayerNorm(h)   (n_layers == 1)
                 x = LayerNorm(x + Dropout(W2(Dropout(GELU(W1(x))))))  # feed-forward, F = d_ff
    scores = x @ ItemTable.T                                         # tied by default

and the Mamba block (Gu & Dao 2023, ``mamba_ssm``'s ``Mamba``)::

    x_in, z = split(in_proj(x))                          # D -> 2I, no bias
    u = SiLU(causal depthwise conv1d(x_in))              # width W, with bias
    dt, B, C = split(x_proj(u))                          # I -> R + 2S, no bias
    delta = softplus(dt_proj(dt))                        # R -> I, with bias
    y = selective_scan(u, delta, A = -exp(A_log), B, C, D) * SiLU(z)
    out = out_proj(y)                                    # I -> D, no bias

LayerNorms use epsilon 1e-12, as in Mamba4Rec.

**Deviations from Mamba4Rec's code, on purpose:**

1. *Padding.* RecBole right-pads, so padding follows the real items and a causal model
   never sees it. srt-jax windows are left-padded (the batch contract), so padding is
   masked out: the convolution input and the scan input are zero and the step size is 0 at
   padding positions, which leaves the convolution window and the state exactly as they
   were — a padded window gives the same hidden states at its real positions as the
   unpadded one (tested), and the recurrent state starts from zero at the first item.
2. *Training positions.* Mamba4Rec trains one target per sample (the last position,
   ``gather_indexes``) over RecBole's prefix-augmented samples; srt-jax trains every position
   of a window (the project's convention), which covers the same prefixes within a window.
3. *Prediction head.* The paper's Eq. 5 reads ``softmax(Linear(h))``; the authors corrected
   it to ``softmax(h E^T)`` with the item embeddings E (Mamba4Rec issue #10), which is what
   their code does and what this module does (``tie_embeddings: true``; ``false`` gives a
   separate output table, never an extra linear layer).
4. *Initialisation.* ``model.mamba.init: mamba4rec`` (default) reproduces what Mamba4Rec's
   ``_init_weights`` does to the Mamba block — it re-initialises every ``nn.Linear``,
   including ``dt_proj``, to N(0, 0.02) with zero biases (so the initial step size is
   softplus(0) = 0.69), keeps PyTorch's U(±1/sqrt(W)) for the convolution, A_log = log(1..S)
   and D = 1. ``init: mamba`` uses ``mamba_ssm``'s own initialisation instead.

Weight decay (see :mod:`srt_jax.train.optim`) applies to parameters named ``kernel`` only,
so ``A_log``, ``D`` (Mamba's ``_no_weight_decay`` pair) and all biases are never decayed.

Shape letters: B rows, L positions, D model width, I inner width (expand x D), S state size,
R step-size rank, W convolution width, F feed-forward width, V item-table rows.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from srt_jax.config import MambaConfig, ModelConfig
from srt_jax.data.item_features import ItemFeatures
from srt_jax.models.backbone import BlockFlops
from srt_jax.models.item_encoders import ItemTables
from srt_jax.models.layers import Dropout, FeedForward, MuP, WidthFixedParam, compute_dtype
from srt_jax.models.selective_scan import selective_scan, selective_scan_step

LAYER_NORM_EPSILON = 1e-12  # Mamba4Rec's
LINEAR_STDDEV = 0.02  # Mamba4Rec's initializer_range
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4  # mamba_ssm's step-size init

MambaCache = list[dict[str, jax.Array]]
"""Per layer ``{"conv": B x (W-1) x I, "state": B x I x S}``: the convolution's last inputs
and the scan state (float32)."""


def _torch_linear_init() -> nnx.Initializer:
    """PyTorch's default ``nn.Linear`` / ``nn.Conv1d`` init: U(±1/sqrt(fan_in))."""
    return nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _uniform(bound: float) -> nnx.Initializer:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _step_size_bias_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """``mamba_ssm``'s dt bias: softplus^-1 of dt ~ log-uniform [DT_MIN, DT_MAX], >= DT_FLOOR."""
    log_dt = jax.random.uniform(key, shape, dtype, math.log(DT_MIN), math.log(DT_MAX))
    dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
    return dt + jnp.log(-jnp.expm1(-dt))


class CausalConv1d(nnx.Module):
    """Depthwise causal convolution over positions: ``y[t] = bias + sum_w kernel[w] x[t-W+1+w]``
    with zeros before the first position (``Conv1d(groups=I, padding=W-1)[..., :L]``)."""

    def __init__(self, width: int, channels: int, *, rngs: nnx.Rngs):
        init = _uniform(1 / math.sqrt(width))  # PyTorch's default for fan_in = W
        self.kernel = WidthFixedParam(init(rngs.params(), (width, channels)))  # W x I
        self.bias = nnx.Param(init(rngs.params(), (channels,)))  # I

    def __call__(self, x_BxLxI: jax.Array, segments_BxL: jax.Array | None = None) -> jax.Array:
        """``y_BxLxI``; with ``segments_BxL`` (a packed batch) a position reads only inputs of
        its own segment, as if zeros came before the segment's first position."""
        W, L = self.kernel.shape[0], x_BxLxI.shape[1]
        kernel_WxI = self.kernel[...].astype(x_BxLxI.dtype)
        padded_BxPxI = jnp.pad(x_BxLxI, ((0, 0), (W - 1, 0), (0, 0)))
        if segments_BxL is None:
            taps = (padded_BxPxI[:, w : w + L] for w in range(W))
        else:
            padded_BxP = jnp.pad(segments_BxL, ((0, 0), (W - 1, 0)), constant_values=-1)
            same_BxLx1 = [(padded_BxP[:, w : w + L] == segments_BxL)[..., None] for w in range(W)]
            taps = (jnp.where(same_BxLx1[w], padded_BxPxI[:, w : w + L], 0) for w in range(W))
        y_BxLxI = sum(tap * kernel_WxI[w] for w, tap in enumerate(taps))
        return y_BxLxI + self.bias[...].astype(x_BxLxI.dtype)

    def step(self, window_BxGxI: jax.Array, x_BxI: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One position: ``(new window, y_BxI)`` from the W-1 previous inputs (G = W-1)."""
        full_BxWxI = jnp.concatenate([window_BxGxI, x_BxI[:, None]], axis=1)
        y_BxI = jnp.einsum("bwi,wi->bi", full_BxWxI, self.kernel[...].astype(x_BxI.dtype))
        return full_BxWxI[:, 1:], y_BxI + self.bias[...].astype(x_BxI.dtype)


def segment_continues(segments_BxL: jax.Array) -> jax.Array:
    """float32 ``[B, L]``: 1 where a position is in the same segment as the one before it,
    0 where a segment starts (the scan's ``keep``: its state restarts there)."""
    same_BxL = segments_BxL[:, 1:] == segments_BxL[:, :-1]
    return jnp.pad(same_BxL, ((0, 0), (1, 0))).astype(jnp.float32)


class MambaMixer(nnx.Module):
    """The Mamba block (see the module docstring) over masked, left-padded windows."""

    def __init__(self, d_model: int, cfg: MambaConfig, dtype: jnp.dtype, *, rngs: nnx.Rngs):
        I, S, R = cfg.inner_width(d_model), cfg.d_state, cfg.step_rank(d_model)
        self.cfg = cfg
        if cfg.init == "mamba4rec":
            dense = nnx.initializers.normal(LINEAR_STDDEV)
            dt_kernel, dt_bias = dense, nnx.initializers.zeros_init()
        else:
            dense = _torch_linear_init()
            dt_kernel, dt_bias = _uniform(R**-0.5), _step_size_bias_init

        def linear(d_in: int, d_out: int, **kwargs: Any) -> nnx.Linear:
            kwargs.setdefault("kernel_init", dense)
            kwargs.setdefault("use_bias", False)
            return nnx.Linear(d_in, d_out, dtype=dtype, rngs=rngs, **kwargs)

        self.in_proj = linear(d_model, 2 * I)
        self.conv = CausalConv1d(cfg.d_conv, I, rngs=rngs)
        self.x_proj = linear(I, R + 2 * S)
        self.dt_proj = linear(R, I, use_bias=True, kernel_init=dt_kernel, bias_init=dt_bias)
        self.A_log = nnx.Param(jnp.log(jnp.tile(jnp.arange(1, S + 1, dtype=jnp.float32), (I, 1))))
        self.D = nnx.Param(jnp.ones((I,), jnp.float32))
        self.out_proj = linear(I, d_model)
        self.split_sizes = (R, R + S)

    def _scan_inputs(self, u_xI: jax.Array, real_x1: jax.Array) -> tuple[jax.Array, ...]:
        """``delta`` (0 at padding), B and C of positions ``u_xI`` (any leading shape)."""
        dt_xR, B_xS, C_xS = jnp.split(self.x_proj(u_xI), self.split_sizes, axis=-1)
        delta_xI = jax.nn.softplus(self.dt_proj(dt_xR).astype(jnp.float32)) * real_x1
        return delta_xI, B_xS, C_xS

    def __call__(
        self,
        x_BxLxD: jax.Array,
        real_BxL: jax.Array,
        *,
        segments_BxL: jax.Array | None = None,
        last_only: bool = False,
    ) -> jax.Array:
        """Mixer output ``[B, Q, D]`` at every position (Q = L) or, with ``last_only``, at the
        last one (Q = 1; the scan still runs over the window). With ``segments_BxL`` (a
        packed batch) the convolution reads only its own segment and the scan's state
        restarts at each segment's first position."""
        real_BxLx1 = real_BxL[..., None].astype(x_BxLxD.dtype)
        x_in_BxLxI, z_BxLxI = jnp.split(self.in_proj(x_BxLxD), 2, axis=-1)
        u_BxLxI = jax.nn.silu(self.conv(x_in_BxLxI * real_BxLx1, segments_BxL)) * real_BxLx1
        delta_BxLxI, B_BxLxS, C_BxLxS = self._scan_inputs(u_BxLxI, real_BxLx1)
        y_BxLxI = selective_scan(
            u_BxLxI,
            delta_BxLxI,
            -jnp.exp(self.A_log[...]),
            B_BxLxS,
            C_BxLxS,
            self.D[...],
            mode=self.cfg.scan,
            chunk_size=self.cfg.chunk_size,
            remat=self.cfg.remat,
            keep_BxL=None if segments_BxL is None else segment_continues(segments_BxL),
        )
        if last_only:
            y_BxLxI, z_BxLxI = y_BxLxI[:, -1:], z_BxLxI[:, -1:]
        y_BxLxI = y_BxLxI.astype(x_BxLxD.dtype) * jax.nn.silu(z_BxLxI)
        return self.out_proj(y_BxLxI)

    def init_cache(self, batch: int) -> dict[str, jax.Array]:
        """Zero convolution window and state for ``batch`` rows."""
        W, I = self.conv.kernel.shape
        return {
            "conv": jnp.zeros((batch, W - 1, I), jnp.float32),
            "state": jnp.zeros((batch, I, self.A_log.shape[1]), jnp.float32),
        }

    def step(
        self, cache: dict[str, jax.Array], x_BxD: jax.Array, real_B: jax.Array
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """One position of :meth:`__call__` from the cache of the positions before it."""
        real_Bx1 = real_B[:, None].astype(x_BxD.dtype)
        x_in_BxI, z_BxI = jnp.split(self.in_proj(x_BxD), 2, axis=-1)
        window, conv_BxI = self.conv.step(cache["conv"], (x_in_BxI * real_Bx1).astype(jnp.float32))
        u_BxI = (jax.nn.silu(conv_BxI) * real_Bx1).astype(x_BxD.dtype)
        delta_BxI, B_BxS, C_BxS = self._scan_inputs(u_BxI, real_Bx1)
        state, y_BxI = selective_scan_step(
            cache["state"], u_BxI, delta_BxI, -jnp.exp(self.A_log[...]), B_BxS, C_BxS, self.D[...]
        )
        y_BxI = y_BxI.astype(x_BxD.dtype) * jax.nn.silu(z_BxI)
        return {"conv": window, "state": state}, self.out_proj(y_BxI)


class MambaLayer(nnx.Module):
    """Mamba block, dropout, residual (when ``residual``) and LayerNorm, then Mamba4Rec's
    feed-forward layer with its own residual and LayerNorm."""

    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, *, residual: bool, rngs: nnx.Rngs):
        if cfg.mamba.init == "mamba4rec":
            ffn_init = nnx.initializers.normal(LINEAR_STDDEV)
        else:
            ffn_init = _torch_linear_init()
        d = cfg.d_model
        self.residual = residual
        self.mixer = MambaMixer(d, cfg.mamba, dtype, rngs=rngs)
        self.mixer_norm = nnx.LayerNorm(d, epsilon=LAYER_NORM_EPSILON, dtype=dtype, rngs=rngs)
        self.ffn = FeedForward(
            d,
            cfg.ffn_dim,
            dtype,
            dropout=cfg.dropout,
            kernel_init=ffn_init,
            rngs=rngs,
        )
        self.ffn_norm = nnx.LayerNorm(d, epsilon=LAYER_NORM_EPSILON, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(cfg.dropout, rngs=rngs)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        real_BxL: jax.Array,
        rngs: nnx.Rngs | None,
        *,
        segments_BxL: jax.Array | None = None,
        last_only: bool = False,
    ) -> jax.Array:
        """The layer's output ``[B, Q, D]``: every position, or the last one (Q = 1)."""
        mixed_BxQxD = self.mixer(x_BxLxD, real_BxL, segments_BxL=segments_BxL, last_only=last_only)
        return self._after_mixer(x_BxLxD[:, -1:] if last_only else x_BxLxD, mixed_BxQxD, rngs)

    def _after_mixer(self, x: jax.Array, mixed: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        """Dropout, residual and LayerNorm of the mixer's output, then the feed-forward
        sublayer; positions are independent here, so the parallel and recurrent forms share
        it (``x`` is ``B x L x D`` or ``B x D``)."""
        h = self.dropout(mixed, rngs=rngs)
        x = self.mixer_norm(x + h if self.residual else h)
        return self.ffn_norm(x + self.dropout(self.ffn(x, rngs=rngs), rngs=rngs))

    def step(
        self, cache: dict[str, jax.Array], x_BxD: jax.Array, real_B: jax.Array
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """One position of :meth:`__call__` (eval mode)."""
        cache, mixed_BxD = self.mixer.step(cache, x_BxD, real_B)
        return cache, self._after_mixer(x_BxD, mixed_BxD, None)


class Mamba4Rec(ItemTables, MuP, nnx.Module):
    """Mamba4Rec backbone; see the module docstring. ``max_len`` is unused (no positions)."""

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
        self.embed_dropout = Dropout(cfg.dropout, rngs=rngs)
        self.embed_norm = nnx.LayerNorm(
            cfg.d_model, epsilon=LAYER_NORM_EPSILON, dtype=dtype, rngs=rngs
        )
        residual = cfg.n_layers > 1  # Mamba4Rec: a single layer has no residual around Mamba
        self.layers = nnx.List(
            [MambaLayer(cfg, dtype, residual=residual, rngs=rngs) for _ in range(cfg.n_layers)]
        )
        self.init_mup(cfg)

    def _embed(self, items: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        x = self.item_encoder(items).astype(self.dtype)
        return self.embed_norm(self.embed_dropout(x, rngs=rngs))

    def __call__(
        self,
        inputs_BxL: jax.Array,
        positions_BxL: jax.Array | None = None,
        *,
        segments_BxL: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Hidden states ``B x L x D`` of every position (see ``Backbone``); padding rows are
        finite but meaningless, and never influence real positions. With ``segments_BxL``
        (a packed batch) no position reads another segment: the convolution stops at the
        segment's start and the scan restarts there."""
        del positions_BxL  # no position embedding: order comes from the recurrence
        return self._forward(inputs_BxL, segments_BxL, rngs, last_only=False)

    def last_hidden(
        self, inputs_BxL: jax.Array, positions_BxL: jax.Array | None = None
    ) -> jax.Array:
        """``hidden_BxD`` of the last position alone, equal to ``model(inputs)[:, -1]``; the
        last layer's output projection and feed-forward run for that position only."""
        del positions_BxL
        return self._forward(inputs_BxL, None, None, last_only=True)[:, 0]

    def _forward(
        self,
        inputs_BxL: jax.Array,
        segments_BxL: jax.Array | None,
        rngs: nnx.Rngs | None,
        *,
        last_only: bool,
    ) -> jax.Array:
        """Hidden states ``[B, Q, D]``: every position, or the last one (Q = 1)."""
        real_BxL = inputs_BxL != 0
        x_BxLxD = self._embed(inputs_BxL, rngs)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x_BxLxD = layer(
                x_BxLxD,
                real_BxL,
                rngs,
                segments_BxL=segments_BxL,
                last_only=last_only and i == last,
            )
        if last_only:
            x_BxLxD = x_BxLxD[:, -1:]  # already so after a last layer; not without layers
        return self.readout(x_BxLxD)

    def init_cache(self, batch: int) -> MambaCache:
        """The state before any item, for ``batch`` rows."""
        return [layer.mixer.init_cache(batch) for layer in self.layers]

    def step(self, cache: MambaCache, items_B: jax.Array) -> tuple[MambaCache, jax.Array]:
        """Consume the next item of each row (eval mode): ``(cache, hidden_BxD)``, equal to
        the forward pass's hidden state at that position. Item 0 (padding) leaves the state
        unchanged."""
        real_B = items_B != 0
        x_BxD = self._embed(items_B, None)
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            layer_cache, x_BxD = layer.step(layer_cache, x_BxD, real_B)
            new_cache.append(layer_cache)
        return new_cache, self.readout(x_BxD)


def mamba_block_flops(cfg: ModelConfig, max_len: int) -> BlockFlops:
    """Forward FLOPs per position of the layers (2 per multiply-add; ``max_len`` unused).

    ``backbone``: the in, x, dt and out projections and the feed-forward layer. ``scan``: the
    depthwise convolution (W multiply-adds per channel) and the selective scan per channel
    and state dimension: delta x A and B x (delta u) (one multiply each), the state update
    and the read-out through C (one multiply-add each), i.e. 6 I S, plus the D skip (2 I).
    """
    del max_len
    d, m = cfg.d_model, cfg.mamba
    I, S, R, W = m.inner_width(d), m.d_state, m.step_rank(d), m.d_conv
    projections = 2 * d * 2 * I + 2 * I * (R + 2 * S) + 2 * R * I + 2 * I * d
    feed_forward = 2 * 2 * d * cfg.ffn_dim
    scan = 2 * W * I + 6 * I * S + 2 * I
    return BlockFlops(
        backbone=float(cfg.n_layers * (projections + feed_forward)),
        scan=float(cfg.n_layers * scan),
    )


def mamba_shape_label(cfg: ModelConfig) -> str:
    """``layers x d_model``, state size, expansion and feed-forward width, e.g.
    ``1x64 s32 e2 ff256``."""
    m = cfg.mamba
    return f"{cfg.n_layers}x{cfg.d_model} s{m.d_state} e{m.expand} ff{cfg.ffn_dim}"

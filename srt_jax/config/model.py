"""The ``model`` section: the backbone, its shape and the item encoder (:class:`ModelConfig`),
and the Mamba block's own keys (:class:`MambaConfig`). How backbone keys behave:
:mod:`srt_jax.config.keys`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from srt_jax.config.keys import (
    backbone_key,
    changed_default,
    check,
    new_backbone_key,
    new_key,
    resolve_owned_keys,
)

Backbone = Literal["transformer", "mamba"]
ItemEncoder = Literal["id", "hashed", "features", "features+id", "features+hashed"]


@dataclass(frozen=True)
class MambaConfig:
    """The selective state-space (Mamba) block of ``model.backbone: mamba``.

    ``d_state`` is the state size S per channel, ``d_conv`` the causal convolution width W,
    ``expand`` the inner width I = expand x d_model, ``dt_rank`` the rank R of the step-size
    projection (null: ceil(d_model / 16), Mamba's "auto"). ``scan`` chooses how the
    recurrence runs in training (:mod:`srt_jax.models.selective_scan`): ``sequential`` (the
    recurrence position by position with a hand-written backward pass), ``chunked`` (a
    sequential scan over chunks of ``chunk_size`` positions, an associative scan inside each),
    ``parallel`` (one associative scan over the whole window) or ``auto`` (``sequential`` on
    CPU, ``chunked`` on GPU/TPU). ``remat`` recomputes each chunk in the backward pass instead
    of storing it (chunked scan; less memory at long L). All give the same numbers up to
    float rounding.
    ``init`` ``mamba4rec`` initialises as Mamba4Rec's code effectively does (every linear
    kernel N(0, 0.02) and bias 0, the step-size bias included); ``mamba`` as ``mamba_ssm``
    does (PyTorch's default linear init, step sizes log-uniform in [0.001, 0.1] through the
    step-size bias).
    """

    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    scan: Literal["auto", "sequential", "chunked", "parallel"] = "auto"
    chunk_size: int = 64
    remat: bool = False
    init: Literal["mamba4rec", "mamba"] = "mamba4rec"

    def __post_init__(self) -> None:
        check(self.d_state >= 1, "model.mamba.d_state", self.d_state, "an integer >= 1")
        check(self.d_conv >= 1, "model.mamba.d_conv", self.d_conv, "an integer >= 1")
        check(self.expand >= 1, "model.mamba.expand", self.expand, "an integer >= 1")
        check(
            self.dt_rank is None or self.dt_rank >= 1,
            "model.mamba.dt_rank",
            self.dt_rank,
            "null (= ceil(d_model / 16)) or an integer >= 1",
        )
        check(self.chunk_size >= 1, "model.mamba.chunk_size", self.chunk_size, "an integer >= 1")

    def inner_width(self, d_model: int) -> int:
        """I = expand x d_model, the width of the scan's channels."""
        return self.expand * d_model

    def step_rank(self, d_model: int) -> int:
        """R: ``dt_rank``, or ceil(d_model / 16) when null."""
        return self.dt_rank or math.ceil(d_model / 16)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and item encoder shape. ``d_ff`` null means ``4 * d_model``.

    Shared keys: ``d_model``, ``n_layers``, ``d_ff`` (the position-wise feed-forward width of
    every block), ``dropout``, the item encoder and ``dtype``. ``item_encoder``: ``id`` (a
    row per item), ``hashed`` (``n_hashes`` rows of ``hash_buckets`` shared ones), ``features``
    (the ``feature_pooling`` sum or mean of the item's feature-token rows, SRT's
    catalog-independent encoder; needs a store with item features), or ``features+id`` /
    ``features+hashed`` (that plus the ID or hashed vector). Transformer keys: ``n_heads``
    (default 2), ``norm`` (``pre``), ``positions`` (``learned``), ``attention`` (``auto``:
    ``einsum`` on a CPU, ``fused`` on a GPU or TPU; ``fused`` is
    ``jax.nn.dot_product_attention``, cuDNN's flash attention where it applies, XLA
    elsewhere; ``einsum`` is the attention written out, 1.7x faster on XLA:CPU). Mamba keys:
    the ``mamba`` section (:class:`MambaConfig`). See the module docstring for how backbone
    keys behave.

    ``dtype``: the compute dtype (parameters, optimiser state and the loss stay float32);
    ``auto`` (the default; it hashes as the ``float32`` it replaced) is ``bfloat16`` on a GPU
    or TPU and ``float32`` on a CPU (:func:`srt_jax.models.layers.compute_dtype`).

    ``mup_base_width`` (null: the standard parametrisation) w₀ turns on the maximal update
    parametrisation (μP; Yang et al. 2021, *Tensor Programs V*) of either backbone, with
    width multiplier m = d_model / w₀: the hidden states are multiplied by 1/m before they
    are scored against the item table (the readout), and AdamW's step on the blocks' matmul
    kernels is multiplied by 1/m (embeddings, biases, LayerNorm, Mamba's A_log and D and its
    depthwise convolution, whose fan-in W does not grow with the width, keep the rate);
    kernels keep their 1/fan-in initialisation and embeddings their N(0, 0.02). The
    transformer's attention scores use 1/E scaled to equal 1/√E at the base head size
    (√E₀ / E, E₀ = w₀ / n_heads). Mamba needs ``mamba.init: mamba`` (fan-in initialisation;
    Mamba4Rec's fixed N(0, 0.02) is not μP). At d_model = w₀ the model and its training
    equal the standard ones, so a learning rate tuned at w₀ transfers to other widths. It
    needs ``train.optimizer: adamw``.
    """

    backbone: Backbone = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int | None = backbone_key("transformer", lambda: 2)
    d_ff: int | None = None
    dropout: float = 0.2
    norm: Literal["pre", "post"] | None = backbone_key("transformer", lambda: "pre")
    positions: Literal["learned", "rope"] | None = backbone_key("transformer", lambda: "learned")
    attention: Literal["auto", "einsum", "fused"] | None = new_backbone_key(
        "transformer", lambda: "auto"
    )
    tie_embeddings: bool = True
    item_encoder: ItemEncoder = "id"
    hash_buckets: int = 4096
    n_hashes: int = 2
    feature_pooling: Literal["sum", "mean"] = new_key("mean")
    dtype: Literal["auto", "float32", "bfloat16"] = changed_default("auto", hashed_as="float32")
    mamba: MambaConfig | None = backbone_key("mamba", MambaConfig)
    mup_base_width: int | None = new_key(None)

    def __post_init__(self) -> None:
        resolve_owned_keys(self, "model")
        check(self.d_model >= 1, "model.d_model", self.d_model, "an integer >= 1")
        check(self.n_layers >= 0, "model.n_layers", self.n_layers, "an integer >= 0")
        check(
            self.d_ff is None or self.d_ff >= 1, "model.d_ff", self.d_ff, "null or an integer >= 1"
        )
        check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a rate in [0, 1)")
        check(self.hash_buckets >= 2, "model.hash_buckets", self.hash_buckets, "an integer >= 2")
        check(self.n_hashes >= 1, "model.n_hashes", self.n_hashes, "an integer >= 1")
        if self.backbone == "transformer":
            check(
                self.n_heads >= 1 and self.d_model % self.n_heads == 0,
                "model.n_heads",
                self.n_heads,
                f"a divisor of d_model={self.d_model}",
            )
            check(
                self.positions != "rope" or (self.d_model // self.n_heads) % 2 == 0,
                "model.positions",
                self.positions,
                f"'learned' when d_model / n_heads = {self.d_model} / {self.n_heads} is odd "
                "(rope needs an even head size)",
            )
            check(
                self.mup_base_width is None or self.mup_base_width >= self.n_heads,
                "model.mup_base_width",
                self.mup_base_width,
                f"null or a width >= model.n_heads = {self.n_heads}",
            )
        else:
            check(
                self.mup_base_width is None or self.mamba.init == "mamba",
                "model.mamba.init",
                self.mamba.init,
                "'mamba' with model.mup_base_width set (μP needs fan-in initialisation; "
                "mamba4rec's fixed N(0, 0.02) is not μP)",
            )
        check(
            self.mup_base_width is None or self.mup_base_width >= 1,
            "model.mup_base_width",
            self.mup_base_width,
            "null or an integer >= 1",
        )

    @property
    def mup_width_multiplier(self) -> float | None:
        """μP's m = d_model / ``mup_base_width``, or None without μP."""
        return None if self.mup_base_width is None else self.d_model / self.mup_base_width

    @property
    def ffn_dim(self) -> int:
        """Feed-forward width: ``d_ff``, or ``4 * d_model`` when null."""
        return self.d_ff or 4 * self.d_model

"""Parameter counts and analytic training FLOPs.

**Parameters** are counted from the model's real parameter tree (``nnx.state(model,
nnx.Param)``). Rule: *embedding* parameters are the :class:`EmbeddingParam` tables — item
tables (the input table and, when untied, the output table; ID rows or hashed buckets) and
the learned position table; every other parameter (attention and feed-forward kernels and
biases, LayerNorm scales and biases) is *non-embedding*.

**FLOPs** are counted per computed position (one row of ``inputs_BxL``) for the forward
pass, 2 per multiply-accumulate, and training is forward x 3. Only matmuls and the sums of
hashed buckets are counted; lookups, residual adds, norms, softmax and activations are not
(that is why XLA's own count, which includes them, is a few percent higher). Multiply by the
number of trained target positions to get a run's training FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
from flax import nnx

from srt_jax.config import ModelConfig, TrainConfig
from srt_jax.data.item_features import ItemFeatures
from srt_jax.models.factory import backbone_entry
from srt_jax.models.item_encoders import EmbeddingParam


@dataclass(frozen=True)
class ParamCounts:
    """Numbers of scalar parameters."""

    total: int
    embedding: int
    non_embedding: int


def _size(state: nnx.State) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(state))


def count_params(model: nnx.Module) -> ParamCounts:
    """Total / embedding / non-embedding parameters of ``model`` (see the module docstring).

    Works on abstract models too (``nnx.eval_shape(lambda: build_model(...))``).
    """
    total = _size(nnx.state(model, nnx.Param))
    embedding = _size(nnx.state(model, EmbeddingParam))
    return ParamCounts(total=total, embedding=embedding, non_embedding=total - embedding)


TRAINING_PER_FORWARD = 3.0
"""Training FLOPs per forward FLOP: the backward pass costs twice the forward."""


@dataclass(frozen=True)
class FlopsBreakdown:
    """Forward FLOPs per computed position, by part.

    Attributes:
      backbone: the blocks' dense projections and feed-forward matmuls, all layers (for the
        transformer: QKV, output and feed-forward; for Mamba: input, x, dt, output and
        feed-forward projections).
      attention: scores ``Q K^T`` and ``A V`` over the full ``max_len`` keys, all layers
        (0 for Mamba).
      scan: causal convolution and selective scan, all layers (0 for the transformer).
      embedding: sums of hashed buckets and of feature tokens: an item table built once per
        step (features: twice, for the inputs and the output table; hashed: the output
        table), spread over the step's ``batch_size x max_len`` positions, plus the inputs'
        own bucket sums (hashed); 0 for ID tables.
      output: scoring the candidates of the loss used: n_items rows (full softmax), K + 1
        (sampled softmax, gBCE) or 2 (BCE); plus n_items for ORPO's odds.
    """

    backbone: float
    attention: float
    scan: float
    embedding: float
    output: float

    @property
    def forward(self) -> float:
        """Forward FLOPs per position."""
        return self.backbone + self.attention + self.scan + self.embedding + self.output

    @property
    def total(self) -> float:
        """Training FLOPs per position: forward x 3 (backward = 2 x forward)."""
        return TRAINING_PER_FORWARD * self.forward

    def training_parts(self) -> dict[str, float]:
        """Training FLOPs per position of each part (forward x 3), by part name."""
        parts = ("backbone", "attention", "scan", "embedding", "output")
        return {name: TRAINING_PER_FORWARD * getattr(self, name) for name in parts}


def output_candidates(train_cfg: TrainConfig, n_items: int) -> int:
    """Number of items the objective scores per position: the loss's candidates, plus the
    whole catalog again for ORPO's odds (``train.objective: orpo``), which scores it apart."""
    loss = {
        "full_softmax": n_items,
        "sampled_softmax": train_cfg.num_negatives + 1,
        "gbce": train_cfg.num_negatives + 1,
        "bce": 2,
    }[train_cfg.loss]
    return loss + (n_items if train_cfg.objective == "orpo" else 0)


def flops_per_token(
    model_cfg: ModelConfig,
    n_items: int,
    max_len: int,
    train_cfg: TrainConfig,
    *,
    item_features: ItemFeatures | None = None,
) -> FlopsBreakdown:
    """Analytic forward FLOPs per position of the model ``model_cfg`` trained with
    ``train_cfg``: its backbone's own block count plus the item encoder and the loss
    (``item_features``: the store's, needed by the ``features`` item encoders)."""
    d, L = model_cfg.d_model, max_len
    blocks = backbone_entry(model_cfg).block_flops(model_cfg, L)
    positions_per_step = train_cfg.batch_size * L
    embedding = 0.0
    if model_cfg.item_encoder.endswith("hashed"):
        bucket_sums = (model_cfg.n_hashes - 1) * d
        embedding = bucket_sums * (1 + (n_items + 1) / positions_per_step)
    if model_cfg.item_encoder.startswith("features"):
        if item_features is None:
            raise ValueError("flops_per_token: a features item encoder needs item_features")
        token_sums = (len(item_features.tokens) - n_items) * d
        embedding += 2 * token_sums / positions_per_step
    return FlopsBreakdown(
        backbone=blocks.backbone,
        attention=blocks.attention,
        scan=blocks.scan,
        embedding=float(embedding),
        output=float(2 * d * output_candidates(train_cfg, n_items)),
    )


def six_n_d(n_params: int, tokens: float) -> float:
    """Kaplan et al.'s ``6 N D`` training-compute estimate, reported beside the analytic count."""
    return 6.0 * n_params * tokens

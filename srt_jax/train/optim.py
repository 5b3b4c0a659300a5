"""The optimiser: AdamW with global-norm clipping, a token-based schedule, a decay mask.

The learning rate follows :func:`optax.warmup_cosine_decay_schedule` — linear warmup from 0
over the first ``warmup_fraction`` of the run's TOKEN budget, then cosine decay to
``min_lr_ratio x learning_rate`` at the end of the budget — evaluated at the number of
target tokens trained before each step. The host knows that number before it dispatches a
step (the sampler builds the mask in numpy), so the schedule is exact over tokens with no
device sync: the jitted step is given the run's progress (tokens so far / token budget)
and the peak learning rate as arguments, evaluates :func:`lr_multiplier` at that progress
and writes the product into the optimiser state with :func:`set_learning_rate` (the AdamW
transform is wrapped in :func:`optax.inject_hyperparams`). Neither the budget nor the peak
rate is a compile-time constant, so runs of one shape that differ only in them (an IsoFLOP
sweep's budgets, a learning-rate sweep) share one compiled step.

Weight decay (decoupled, AdamW's) applies to matmul kernels only: never to LayerNorm scales,
biases, and, unless ``decay_embeddings``, the embedding tables (item tables, hashed buckets,
positions — every :class:`srt_jax.models.item_encoders.EmbeddingParam`).
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import nnx

from srt_jax.config import TrainConfig
from srt_jax.models.item_encoders import EmbeddingParam

DECAYED_NAMES = ("kernel",)
"""Names of the parameters (last path key) that get weight decay: matmul kernels."""


PROGRESS_RESOLUTION = 1 << 20
"""Schedule steps per run: :func:`lr_multiplier` counts progress in 1/2**20ths of the budget."""


def lr_multiplier(train_cfg: TrainConfig) -> optax.Schedule:
    """The learning rate over ``learning_rate`` as a function of ``progress x``
    :data:`PROGRESS_RESOLUTION`, where progress is the fraction of the token budget trained.

    0 at the start, 1 after ``warmup_fraction`` (linear), ``min_lr_ratio`` at the end of the
    budget (cosine) and after it.
    """
    warmup = round(train_cfg.warmup_fraction * PROGRESS_RESOLUTION)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=warmup,
        decay_steps=max(PROGRESS_RESOLUTION, warmup + 1),
        end_value=train_cfg.min_lr_ratio,
    )


def lr_schedule(train_cfg: TrainConfig, total_tokens: int) -> optax.Schedule:
    """Learning rate as a function of target tokens trained so far (0..total_tokens).

    Linear warmup from 0 to ``learning_rate`` over ``warmup_fraction x total_tokens``
    tokens, then cosine decay to ``min_lr_ratio x learning_rate`` at ``total_tokens``.
    """
    multiplier = lr_multiplier(train_cfg)

    def schedule(tokens: Any) -> Any:
        return scheduled_lr(train_cfg.learning_rate, multiplier, tokens / total_tokens)

    return schedule


def scheduled_lr(peak: Any, multiplier: optax.Schedule, progress: Any) -> Any:
    """The learning rate at ``progress`` (fraction of the token budget trained): ``peak x``
    the :func:`lr_multiplier` ``multiplier`` there. The train step and :func:`lr_schedule`
    both use it."""
    return peak * multiplier(progress * PROGRESS_RESOLUTION)


def decay_mask(params: nnx.State, *, decay_embeddings: bool) -> Any:
    """A tree of bools like ``params`` (one per parameter): True where weight decay applies.

    Decayed: parameters named in :data:`DECAYED_NAMES` (kernels), and embedding tables when
    ``decay_embeddings``. Not decayed: biases, LayerNorm scales, and the other embeddings.
    """

    def decayed(path: tuple, variable: nnx.Variable) -> bool:
        if isinstance(variable, EmbeddingParam):
            return decay_embeddings
        return getattr(path[-1], "key", None) in DECAYED_NAMES

    return jax.tree_util.tree_map_with_path(
        decayed, params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def make_optimizer(train_cfg: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping (``grad_clip``) then AdamW (``b1``, ``b2``, ``weight_decay``
    masked by :func:`decay_mask`) whose learning rate is set per step by
    :func:`set_learning_rate`."""

    def mask(params: nnx.State) -> Any:
        return decay_mask(params, decay_embeddings=train_cfg.decay_embeddings)

    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=train_cfg.learning_rate,
        b1=train_cfg.b1,
        b2=train_cfg.b2,
        weight_decay=train_cfg.weight_decay,
        mask=mask,
    )
    return optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), adamw)


def set_learning_rate(opt_state: tuple, learning_rate: jax.Array) -> tuple:
    """``opt_state`` of :func:`make_optimizer` with the AdamW learning rate replaced."""
    clip_state, adamw_state = opt_state
    hyperparams = {**adamw_state.hyperparams, "learning_rate": learning_rate}
    return clip_state, adamw_state._replace(hyperparams=hyperparams)

"""The optimiser: global-norm clipping, then AdamW or an adaptive-step optimiser, a
token-based schedule and a weight-decay mask.

:func:`make_optimizer` builds the :class:`Optimizer` of ``train.optimizer``:

- ``adamw``: AdamW at ``learning_rate`` on the token schedule below.
- ``prodigy``, ``dadapt_adamw`` (optax.contrib, :mod:`srt_jax.train.contrib_optim`):
  learning-rate-free AdamW; the step is their adapted d times their section's ``scale``
  (1.0) times the token schedule's multiplier (warmup and cosine decay, which the authors
  recommend on top of d); ``learning_rate`` is not used. d is reported per step (``d``).
- ``schedule_free_adamw`` (optax.contrib): at ``learning_rate``, warmup then constant (the
  averaging replaces the decay; ``min_lr_ratio`` is not used). Its parameters to evaluate
  are the averaged sequence (:meth:`Optimizer.eval_params`).
- ``usgm`` (:mod:`srt_jax.train.usgm`): step 1/L from a line search on the step's batch
  loss; no token schedule. Reported per step: ``lr`` (1/L), ``lipschitz`` (L) and
  ``evals`` (loss evaluations of the line search).

The learning rate follows :func:`optax.warmup_cosine_decay_schedule` — linear warmup from 0
over the first ``warmup_fraction`` of the run's TOKEN budget, then cosine decay to
``min_lr_ratio x learning_rate`` at the end of the budget — evaluated at the number of
target tokens trained before each step. The host knows that number before it dispatches a
step (the sampler builds the mask in numpy), so the schedule is exact over tokens with no
device sync: the jitted step is given the run's progress (tokens so far / token budget)
and the peak learning rate as arguments, evaluates :func:`lr_multiplier` at that progress
and writes the product into the optimiser state with :meth:`Optimizer.set_learning_rate`
(the optimiser is wrapped in :func:`optax.inject_hyperparams`, which also keeps every other
numeric hyperparameter in the state). Neither the budget nor the peak rate is a compile-time
constant, so runs of one shape that differ only in them (an IsoFLOP sweep's budgets, a
learning-rate sweep) share one compiled step, whichever the optimiser.

Weight decay (decoupled, AdamW's) applies to matmul kernels only: never to LayerNorm scales,
biases, and, unless ``decay_embeddings``, the embedding tables (item tables, hashed buckets,
positions — every :class:`srt_jax.models.item_encoders.EmbeddingParam`). USGM has its
own rate (``train.usgm.weight_decay``, default 0): it adds ``rate x kernel`` to its
direction, so its line search sees the decayed step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import optax
from flax import nnx

from srt_jax.config import TrainConfig
from srt_jax.models.item_encoders import EmbeddingParam
from srt_jax.models.layers import WidthFixedParam
from srt_jax.train import contrib_optim
from srt_jax.train.usgm import usgm

DECAYED_NAMES = ("kernel",)
"""Names of the parameters (last path key) that get weight decay: matmul kernels."""


PROGRESS_RESOLUTION = 1 << 20
"""Schedule steps per run: :func:`lr_multiplier` counts progress in 1/2**20ths of the budget."""


def lr_multiplier(train_cfg: TrainConfig) -> optax.Schedule:
    """The learning rate over ``learning_rate`` as a function of ``progress x``
    :data:`PROGRESS_RESOLUTION`, where progress is the fraction of the token budget trained.

    0 at the start, 1 after ``warmup_fraction`` (linear), ``min_lr_ratio`` at the end of the
    budget (cosine) and after it; for ``schedule_free_adamw`` 1 from the end of the warmup on.
    """
    warmup = round(train_cfg.warmup_fraction * PROGRESS_RESOLUTION)
    decays = train_cfg.optimizer != "schedule_free_adamw"
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=warmup,
        decay_steps=max(PROGRESS_RESOLUTION, warmup + 1),
        end_value=train_cfg.min_lr_ratio if decays else 1.0,
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


FACTORIES = {
    "adamw": optax.adamw,
    "prodigy": contrib_optim.prodigy,
    "dadapt_adamw": contrib_optim.dadapt_adamw,
    "schedule_free_adamw": contrib_optim.schedule_free_adamw,
}
"""The optimisers the token schedule drives (usgm aside): factories taking ``learning_rate``,
``b1``, ``b2``, ``weight_decay``, ``mask`` and their section's other knobs."""

LEARNING_RATE_FREE = ("prodigy", "dadapt_adamw")
"""Optimisers whose peak is their section's ``scale`` (not ``learning_rate``)."""


@dataclass(frozen=True)
class Optimizer:
    """An optimiser as the train step drives it (built by :func:`make_optimizer`).

    Attributes:
      name: ``train.optimizer``.
      tx: global-norm clipping, then the optimiser (its state: ``(clip, ..., optimiser)``).
      peak: the rate the token schedule scales, passed to the step as an argument
        (``learning_rate``, or the learning-rate-free optimisers' ``scale``); None for usgm.
      multiplier: :func:`lr_multiplier`, or None (usgm: no token schedule).
      line_search: whether ``tx.update`` takes the batch loss: ``value`` (the loss at the
        parameters), ``value_fn`` (parameters -> the same batch's loss, same keys) and
        ``grad`` (the unclipped gradient).
      metric_keys: figures :meth:`diagnostics` adds to each ``train`` line besides ``lr``.
    """

    name: str
    tx: optax.GradientTransformationExtraArgs
    peak: float | None
    multiplier: optax.Schedule | None
    line_search: bool = False
    metric_keys: tuple[str, ...] = ()
    injected: int = -1
    """Index in the chain's state of the injected optimiser's state."""

    def learning_rate(self, peak: jax.Array, progress: jax.Array) -> jax.Array | None:
        """The scheduled rate at ``progress`` (fraction of the token budget), None for usgm."""
        if self.multiplier is None:
            return None
        return scheduled_lr(peak, self.multiplier, progress)

    def set_learning_rate(self, opt_state: tuple, learning_rate: jax.Array | None) -> tuple:
        """``opt_state`` with the injected learning rate replaced (unchanged for None)."""
        if learning_rate is None:
            return opt_state
        states = list(opt_state)
        injected = states[self.injected]
        hyperparams = {**injected.hyperparams, "learning_rate": learning_rate}
        states[self.injected] = injected._replace(hyperparams=hyperparams)
        return tuple(states)

    def eval_params(self, opt_state: tuple, params: nnx.State) -> nnx.State:
        """The parameters to evaluate: schedule-free's averaged sequence
        (:func:`optax.contrib.schedule_free_eval_params`), else ``params`` themselves."""
        if self.name == "schedule_free_adamw":
            inner = opt_state[self.injected].inner_state
            return optax.contrib.schedule_free_eval_params(inner, params)
        return params

    def diagnostics(self, opt_state: tuple) -> dict[str, jax.Array]:
        """Per-step figures of the optimiser state after an update: prodigy and dadapt_adamw
        ``d`` (the adapted distance estimate; their step is d x ``lr``), usgm ``lr`` (its step
        size 1/L), ``lipschitz`` (L) and ``evals``; empty for the others."""
        inner = opt_state[self.injected].inner_state
        if self.name in ("prodigy", "dadapt_adamw"):
            return {"d": inner.estim_lr}
        if self.name == "usgm":
            return {"lr": 1.0 / inner.accepted, "lipschitz": inner.accepted, "evals": inner.evals}
        return {}


def make_optimizer(train_cfg: TrainConfig, hidden_lr_scale: float = 1.0) -> Optimizer:
    """The :class:`Optimizer` of ``train_cfg.optimizer``: global-norm clipping
    (``grad_clip``), then the optimiser with its weight decay masked by :func:`decay_mask`;
    with ``hidden_lr_scale`` != 1 (μP, AdamW only), the steps of the matmul kernels (the
    decayed non-embedding parameters but a :class:`~srt_jax.models.layers.WidthFixedParam`)
    multiplied by it, weight decay included."""

    def mask(params: nnx.State) -> Any:
        return decay_mask(params, decay_embeddings=train_cfg.decay_embeddings)

    cfg, clip = train_cfg, optax.clip_by_global_norm(train_cfg.grad_clip)
    if cfg.optimizer == "usgm":
        options = dataclasses.asdict(cfg.usgm)
        decay = optax.add_decayed_weights(options.pop("weight_decay"), mask)
        search = optax.inject_hyperparams(usgm, static_args=("max_backtracks",))(**options)
        tx = optax.chain(clip, decay, search)
        return Optimizer(cfg.optimizer, tx, None, None, True, ("lipschitz", "evals"))
    options: dict[str, Any] = {}
    peak, keys = cfg.learning_rate, ()
    if cfg.optimizer in LEARNING_RATE_FREE:  # their section's knobs, "scale" as the peak
        options = dataclasses.asdict(getattr(cfg, cfg.optimizer))
        peak, keys = options.pop("scale"), ("d",)
    opt = optax.inject_hyperparams(FACTORIES[cfg.optimizer], static_args=("mask",))(
        learning_rate=peak,
        b1=cfg.b1,
        b2=cfg.b2,
        weight_decay=cfg.weight_decay,
        mask=mask,
        **options,
    )
    multiplier = lr_multiplier(cfg)
    if hidden_lr_scale == 1.0:
        return Optimizer(cfg.optimizer, optax.chain(clip, opt), peak, multiplier, False, keys)
    if cfg.optimizer != "adamw":
        raise ValueError(f"a per-layer step multiplier (μP) needs adamw, not {cfg.optimizer}")

    def kernels(params: nnx.State) -> Any:  # the decayed kernels whose fan-in grows with width
        decayed = decay_mask(params, decay_embeddings=False)
        width_fixed = jax.tree.map(
            lambda v: isinstance(v, WidthFixedParam),
            params,
            is_leaf=lambda x: isinstance(x, nnx.Variable),
        )
        return jax.tree.map(lambda d, f: d and not f, decayed, width_fixed)

    hidden = optax.masked(optax.scale(hidden_lr_scale), kernels)
    tx = optax.chain(clip, opt, hidden)
    return Optimizer(cfg.optimizer, tx, peak, multiplier, False, keys, injected=1)

"""The ``train`` section: loss, optimiser, schedule, budget and checkpoints
(:class:`TrainConfig`), and the learning-rate-free optimisers' own sections. How optimiser
keys behave: :mod:`srt_jax.config.keys`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from srt_jax.config.keys import (
    check,
    new_key,
    observer_key,
    optimizer_key,
    owned_key,
    resolve_owned_keys,
)

OptimizerName = Literal["adamw", "prodigy", "dadapt_adamw", "schedule_free_adamw", "usgm"]
Objective = Literal["next_item", "orpo"]
RejectedRule = Literal["uniform", "popularity", "hard", "disliked"]
TrackerName = Literal["tensorboard", "mlflow"]


@dataclass(frozen=True)
class ORPOConfig:
    """Odds-ratio preference optimisation (``train.objective: orpo``; Hong et al. 2024) for
    next-item models (:mod:`srt_jax.train.orpo`).

    Each counted position adds ``weight`` (λ) x -log σ(log odds(chosen) - log odds(rejected))
    to its next-item loss, with odds(y) = p(y) / (1 - p(y)) and p the model's softmax over
    the whole catalog; chosen is the true next item, rejected an item picked by
    ``rejected``:

    - ``uniform``: an item drawn uniformly (never the target);
    - ``popularity``: drawn in proportion to training-set counts + 1 (never the target);
    - ``hard``: the highest-scored item other than the target;
    - ``disliked``: an item the same user rated ``<= disliked_max_rating`` within the
      window (one per window, drawn uniformly among its targets with such ratings); only
      positions whose own target is rated above it form pairs. Needs a store with ratings.
    """

    weight: float = 0.1
    rejected: RejectedRule = "uniform"
    disliked_max_rating: float = 2.0

    def __post_init__(self) -> None:
        check(self.weight >= 0, "train.orpo.weight", self.weight, "a number >= 0 (λ)")


@dataclass(frozen=True)
class DAdaptConfig:
    """D-Adaptation AdamW (``train.optimizer: dadapt_adamw``; Defazio & Mishchenko 2023).

    Learning-rate-free: the step is d x ``scale`` x the token schedule's multiplier, where d,
    an estimate of the distance to the solution, grows from ``d0`` (optax's ``estim_lr0``);
    ``scale`` is optax's ``learning_rate`` (1.0 as the authors recommend).
    """

    SECTION: ClassVar[str] = "train.dadapt_adamw"
    scale: float = 1.0
    d0: float = 1e-6

    def __post_init__(self) -> None:
        check(self.scale > 0, f"{self.SECTION}.scale", self.scale, "a positive number")
        check(self.d0 > 0, f"{self.SECTION}.d0", self.d0, "a positive number")


@dataclass(frozen=True)
class ProdigyConfig(DAdaptConfig):
    """Prodigy (``train.optimizer: prodigy``; Mishchenko & Defazio 2023): D-Adaptation AdamW
    whose estimate d adapts faster. ``scale`` and ``d0`` as :class:`DAdaptConfig`;
    ``d_coef`` multiplies each new estimate of d (optax's ``estim_lr_coef``);
    ``safeguard_warmup`` leaves the schedule out of d's denominator (helps during warmup).
    """

    SECTION: ClassVar[str] = "train.prodigy"
    d_coef: float = 1.0
    safeguard_warmup: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.d_coef > 0, f"{self.SECTION}.d_coef", self.d_coef, "a positive number")


@dataclass(frozen=True)
class USGMConfig:
    """The universal stochastic gradient method (``train.optimizer: usgm``;
    :mod:`srt_jax.train.usgm`): gradient steps 1/L with L found by a line search on the
    step's own batch.

    ``epsilon`` is the accuracy ε (nats of the mean per-token training loss): each step
    accepts an L whose quadratic model overestimates the batch loss at the new point up to
    ε/2. ``lipschitz0`` is the initial estimate L_0 (the first step tries 1/L_0; L halves
    after every step and doubles until the model holds, at most ``max_backtracks`` times
    per step). ``weight_decay`` λ adds λ x parameter to the direction of the decayed
    parameters (kernels; embeddings with ``train.decay_embeddings``), so a step of size 1/L
    shrinks them by λ/L: 0 (default) is USGM as published. ``train.weight_decay`` (AdamW's
    rate, multiplied by a learning rate near 1e-3) is not used: at USGM's steps (1/L is
    typically 0.1 to 1 here) its 0.1 would shrink kernels by 1-10% a step.
    """

    epsilon: float = 0.01
    lipschitz0: float = 1.0
    max_backtracks: int = 20
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check(self.epsilon >= 0, "train.usgm.epsilon", self.epsilon, "a number >= 0")
        check(self.lipschitz0 > 0, "train.usgm.lipschitz0", self.lipschitz0, "a positive number")
        check(
            self.max_backtracks >= 1,
            "train.usgm.max_backtracks",
            self.max_backtracks,
            "an integer >= 1",
        )
        check(self.weight_decay >= 0, "train.usgm.weight_decay", self.weight_decay, "a number >= 0")


@dataclass(frozen=True)
class AdaptiveBatchConfig:
    """Adaptive batch size (``train.adaptive_batch``; :mod:`srt_jax.train.adaptive_batch`):
    the batch grows during training by accumulating the gradients of ``train.batch_size``
    windows (the micro-batch) over A micro-batches per optimiser update, A chosen from the
    measured gradient noise scale (McCandlish et al. 2018).

    Every micro-batch's gradient is taken on its two halves, which gives the noise scale
    B_noise = tr(Σ) / |G|² (in trained tokens) at every step without extra compute; its two
    parts are averaged with an exponential moving average of decay ``ema_decay`` (per
    micro-batch). At every train line (and checkpoint) A becomes
    ``min(max_accumulation, max(A, round(scale x B_noise / tokens per micro-batch)))``:
    it only grows. A is an argument of the one compiled step, so changing it recompiles
    nothing; the controller's state is in the checkpoint, so a resumed run continues
    exactly. Needs an even ``train.batch_size`` and an optimiser driven by the token
    schedule (not usgm).
    """

    max_accumulation: int = 16
    ema_decay: float = 0.95
    scale: float = 1.0

    def __post_init__(self) -> None:
        check(
            self.max_accumulation >= 1,
            "train.adaptive_batch.max_accumulation",
            self.max_accumulation,
            "an integer >= 1",
        )
        check(
            0.0 <= self.ema_decay < 1.0,
            "train.adaptive_batch.ema_decay",
            self.ema_decay,
            "a number in [0, 1)",
        )
        check(self.scale > 0, "train.adaptive_batch.scale", self.scale, "a positive number")


@dataclass(frozen=True)
class TransferConfig:
    """Fine-tuning a pre-trained run (``train.transfer``, with ``train.init_from``;
    :mod:`srt_jax.train.transfer`).

    ``freeze``: ``none`` (every parameter trains), ``backbone`` (only the item encoders —
    ID rows, hashed buckets, feature tokens — train; the blocks, norms and position table
    keep the pre-trained values), or ``progressive`` (ULMFiT's gradual unfreezing: the
    backbone starts frozen, and after every ``unfreeze_every`` of the token budget (null:
    1 / (n_layers + 1)) one more block unfreezes, top block first; the parameters outside
    the blocks unfreeze with the top one).
    ``l2_to_init`` (λ >= 0): a pull of the backbone's parameters back to the pre-trained
    values, L2-SP (Li et al. 2018; EWC with an identity Fisher) decoupled from the gradient
    as AdamW decouples weight decay: every step moves them by ``-lr x λ x (θ - θ₀)``, so
    ``lr x λ`` must stay at most 1 (at 1 a step returns them to θ₀).
    """

    freeze: Literal["none", "backbone", "progressive"] = "none"
    unfreeze_every: float | None = None
    l2_to_init: float = 0.0

    def __post_init__(self) -> None:
        check(
            self.unfreeze_every is None
            or (self.freeze == "progressive" and 0 < self.unfreeze_every <= 1),
            "train.transfer.unfreeze_every",
            self.unfreeze_every,
            "null, or a fraction in (0, 1] with train.transfer.freeze = 'progressive'",
        )
        check(self.l2_to_init >= 0, "train.transfer.l2_to_init", self.l2_to_init, "a number >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Loss, optimiser, schedule and budget.

    The budget is ``tokens`` (trained target positions) or ``epochs`` (multiples of the
    number of target positions in the training histories); exactly one must be set. The
    learning-rate schedule runs over that token budget.

    ``optimizer`` (:mod:`srt_jax.train.optim`; every one after global-norm clipping at
    ``grad_clip``, with weight decay on kernels only, and embeddings when
    ``decay_embeddings``):

    - ``adamw`` (default): peak rate ``learning_rate``, ``b1``, ``b2``; the token schedule
      (linear warmup over ``warmup_fraction``, cosine to ``min_lr_ratio``).
    - ``prodigy``, ``dadapt_adamw``: learning-rate-free AdamW (optax.contrib); the step is
      the adapted d x their section's ``scale`` (1.0) x the token schedule's multiplier;
      ``learning_rate`` is not used. Sections ``prodigy`` / ``dadapt_adamw``
      (:class:`ProdigyConfig`, :class:`DAdaptConfig`).
    - ``schedule_free_adamw``: schedule-free AdamW (optax.contrib) at ``learning_rate``,
      interpolation ``b1``, ``b2``; warmup only (the averaging replaces the decay, so
      ``min_lr_ratio`` is not used); evaluation and checkpoints' test figures use its
      averaged (eval) parameters.
    - ``usgm``: the universal stochastic gradient method; step 1/L from a line search on the
      step's own batch, no token schedule (``learning_rate``, ``warmup_fraction``,
      ``min_lr_ratio``, ``b1``, ``b2``, ``weight_decay`` are not used; its section has its
      own ``weight_decay``, default 0). Section ``usgm`` (:class:`USGMConfig`).

    An optimiser's section is null under any other optimiser (setting it is an error).

    ``objective``: ``next_item`` (default: the ``loss`` alone) or ``orpo`` (``loss`` plus the
    odds-ratio term of the ``orpo`` section, :class:`ORPOConfig`; the section is null under
    ``next_item``). ``init_from``: the directory of a finished (or checkpointed) run whose
    best-validation parameters start this run instead of a fresh initialisation — the same
    backbone and shape; item rows aligned by original item id, new items freshly
    initialised (:mod:`srt_jax.train.init_from`); the optimiser starts fresh.

    ``adaptive_batch`` (null: a fixed batch): the section of :class:`AdaptiveBatchConfig`.
    ``transfer`` (null: plain fine-tuning): freezing and the pull to the pre-trained values
    of a run that starts from ``init_from`` (:class:`TransferConfig`).

    ``data_parallel`` (null: as many as the devices allow) x ``item_shards`` (default 1) is
    the device mesh: the batch is split over ``data_parallel`` devices, and the ID item
    tables and their optimiser state over ``item_shards`` (catalogs of millions of items;
    the full softmax is computed shard by shard, :mod:`srt_jax.train.item_shards`).

    ``optimizer``, ``objective``, ``init_from``, ``adaptive_batch``, ``transfer`` and
    ``item_shards`` are :func:`new_key` s:
    configs keep the run ids they had before these keys existed.

    ``trackers`` (default none): where the run's figures are also logged, ``tensorboard``
    and/or ``mlflow`` (:mod:`srt_jax.train.tracking`; optional extras
    ``srt-jax[tensorboard]``, ``srt-jax[mlflow]``). ``tracking_uri``: the MLflow tracking
    URI (null: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///RUN_DIR/mlflow.db``; a sweep
    sets its own ``sqlite:///ROOT/mlflow.db``); ``tracking_experiment``: the MLflow
    experiment (null: ``srt-jax``, or the sweep's ``srt-jax sweep NAME``). These three are
    :func:`observer_key` s: they never change a run's id.
    """

    loss: Literal["full_softmax", "sampled_softmax", "bce", "gbce"] = "full_softmax"
    num_negatives: int = 100
    negatives: Literal["uniform", "popularity"] = "uniform"
    gbce_t: float = 0.75
    batch_size: int = 256
    tokens: int | None = None
    epochs: float | None = 20.0
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.02
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    grad_clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.98
    optimizer: OptimizerName = new_key("adamw")
    prodigy: ProdigyConfig | None = optimizer_key("prodigy", ProdigyConfig)
    dadapt_adamw: DAdaptConfig | None = optimizer_key("dadapt_adamw", DAdaptConfig)
    usgm: USGMConfig | None = optimizer_key("usgm", USGMConfig)
    objective: Objective = new_key("next_item")
    orpo: ORPOConfig | None = owned_key("objective", "orpo", ORPOConfig)
    init_from: str | None = new_key(None)
    adaptive_batch: AdaptiveBatchConfig | None = new_key(None)
    transfer: TransferConfig | None = new_key(None)
    seed: int = 0
    data_parallel: int | None = None
    item_shards: int = new_key(1)
    log_every: int = 50
    eval_every_tokens: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    trackers: tuple[TrackerName, ...] = observer_key(())
    tracking_uri: str | None = observer_key(None)
    tracking_experiment: str | None = observer_key(None)

    def __post_init__(self) -> None:
        resolve_owned_keys(self, "train")
        check(
            (self.tokens is None) != (self.epochs is None),
            "train.tokens/train.epochs",
            (self.tokens, self.epochs),
            "exactly one of them set (the other null)",
        )
        check(
            self.tokens is None or self.tokens >= 1, "train.tokens", self.tokens, "an integer >= 1"
        )
        check(
            self.epochs is None or self.epochs > 0, "train.epochs", self.epochs, "a positive number"
        )
        check(self.num_negatives >= 1, "train.num_negatives", self.num_negatives, "an integer >= 1")
        check(
            not (self.loss == "gbce" and self.negatives == "popularity"),
            "train.negatives",
            self.negatives,
            "'uniform' with train.loss = 'gbce' (its calibration assumes uniform negatives)",
        )
        check(0.0 < self.gbce_t <= 1.0, "train.gbce_t", self.gbce_t, "a number in (0, 1]")
        check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        check(
            self.learning_rate > 0, "train.learning_rate", self.learning_rate, "a positive number"
        )
        check(
            0.0 <= self.warmup_fraction < 1.0,
            "train.warmup_fraction",
            self.warmup_fraction,
            "a fraction in [0, 1)",
        )
        check(
            0.0 <= self.min_lr_ratio <= 1.0,
            "train.min_lr_ratio",
            self.min_lr_ratio,
            "a fraction in [0, 1]",
        )
        check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        check(
            self.init_from is None or bool(str(self.init_from).strip()),
            "train.init_from",
            self.init_from,
            "null or the directory of a trained run",
        )
        check(
            self.transfer is None or self.init_from is not None,
            "train.transfer",
            self.transfer,
            "null unless train.init_from names the pre-trained run",
        )
        check(
            self.transfer is None or self.transfer.l2_to_init == 0 or self.optimizer != "usgm",
            "train.transfer.l2_to_init",
            None if self.transfer is None else self.transfer.l2_to_init,
            "0 with train.optimizer = 'usgm' (the pull is scaled by the scheduled rate)",
        )
        check(
            self.transfer is None
            or self.optimizer not in ("adamw", "schedule_free_adamw")
            or self.transfer.l2_to_init * self.learning_rate <= 1,
            "train.transfer.l2_to_init",
            None if self.transfer is None else self.transfer.l2_to_init,
            f"at most 1 / train.learning_rate = {1 / self.learning_rate:g} (a larger pull "
            "overshoots the pre-trained values)",
        )
        check(
            self.adaptive_batch is None or self.batch_size % 2 == 0,
            "train.batch_size",
            self.batch_size,
            "an even number with train.adaptive_batch (each micro-batch is taken in halves)",
        )
        check(
            self.adaptive_batch is None or self.optimizer != "usgm",
            "train.adaptive_batch",
            self.adaptive_batch,
            "null with train.optimizer = 'usgm' (its line search needs the whole batch)",
        )
        check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "a positive number")
        check(
            self.optimizer != "schedule_free_adamw" or 0 < self.b1 < 1,
            "train.b1",
            self.b1,
            "a number in (0, 1) with train.optimizer = 'schedule_free_adamw' (its interpolation)",
        )
        check(
            self.data_parallel is None or self.data_parallel >= 1,
            "train.data_parallel",
            self.data_parallel,
            "null (all devices) or an integer >= 1",
        )
        check(self.item_shards >= 1, "train.item_shards", self.item_shards, "an integer >= 1")
        check(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        check(
            self.checkpoint_every >= 1,
            "train.checkpoint_every",
            self.checkpoint_every,
            "an integer >= 1",
        )
        check(
            len(set(self.trackers)) == len(self.trackers),
            "train.trackers",
            list(self.trackers),
            "each tracker at most once",
        )
        for key in ("tracking_uri", "tracking_experiment"):
            value = getattr(self, key)
            check(
                value is None or ("mlflow" in self.trackers and bool(value.strip())),
                f"train.{key}",
                value,
                "null unless train.trackers includes 'mlflow' (then a non-empty string)",
            )
        check(
            self.keep_checkpoints >= 1,
            "train.keep_checkpoints",
            self.keep_checkpoints,
            "an integer >= 1",
        )

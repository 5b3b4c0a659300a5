"""The config schema: one frozen dataclass per section, the reference for every key.

Each key's default, type and allowed values are here, and each key is validated in one place:
its section's ``__post_init__`` (keys that constrain each other are checked by the section
that holds both). Loading, overrides and hashing live in :mod:`srt_jax.config.loading`.

Backbone keys: ``model.backbone`` names the sequence model, and a key that belongs to one
backbone (``n_heads``, ``norm``, ``positions`` for the transformer; the ``mamba`` section for
Mamba) is declared with :func:`backbone_key`. It is null in the config of any other backbone
— setting it there is an error naming the key — and takes its default when its own backbone
is chosen. :func:`srt_jax.config.loading.to_dict` leaves null backbone keys out, so a
transformer config reads (and hashes) exactly as it did before Mamba existed. Optimiser
sections (``train.prodigy``, ``train.dadapt_adamw``, ``train.usgm``) belong to their
``train.optimizer`` the same way (:func:`optimizer_key`); both are :func:`owned_key` fields.

Keys added after run ids existed are declared with :func:`new_key`:
:func:`srt_jax.config.loading.config_hash` leaves such a key out while it holds its default,
so the run id of a config that predates the key does not change (``train.optimizer``:
``adamw``), while ``config.yaml`` and every other reader still see it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from srt_jax.errors import ConfigError

SamplerMode = Literal["recent", "sliding", "stride", "mixed", "recency_weighted"]
Backbone = Literal["transformer", "mamba"]
OptimizerName = Literal["adamw", "prodigy", "dadapt_adamw", "schedule_free_adamw", "usgm"]

OWNER = "owner"
"""Field metadata of an :func:`owned_key`: (the selecting field's name, the owning value)."""
_DEFAULT = "owner_default"
NEW_KEY = "new_key"
"""Field metadata of a :func:`new_key`: left out of the config hash while at its default."""


def owned_key(selector: str, owner: str, default: Callable[[], Any]) -> Any:
    """A field that belongs to one value ``owner`` of its section's field ``selector``: null
    under any other value (setting it there is an error), ``default()`` when left null under
    its own (see :func:`resolve_owned_keys`)."""
    return field(default=None, metadata={OWNER: (selector, owner), _DEFAULT: default})


def backbone_key(backbone: str, default: Callable[[], Any]) -> Any:
    """A ``ModelConfig`` field that belongs to ``backbone`` (an :func:`owned_key`)."""
    return owned_key("backbone", backbone, default)


def optimizer_key(optimizer: str, default: Callable[[], Any]) -> Any:
    """A ``TrainConfig`` field that belongs to ``optimizer`` (an :func:`owned_key`)."""
    return owned_key("optimizer", optimizer, default)


def new_key(default: Any) -> Any:
    """A field added after run ids existed, with an immutable ``default``: the config hash
    leaves it out while it holds that default (see the module docstring)."""
    return field(default=default, metadata={NEW_KEY: True})


def owner_of(f: dataclasses.Field) -> tuple[str, str] | None:
    """(selecting field, owning value) of an :func:`owned_key` field; None for a shared one."""
    return f.metadata.get(OWNER)


def backbone_of(f: dataclasses.Field) -> str | None:
    """The backbone a config field belongs to, or None for a shared field."""
    owner = owner_of(f)
    return owner[1] if owner and owner[0] == "backbone" else None


def resolve_owned_keys(section: Any, where: str) -> None:
    """Check and fill the :func:`owned_key` fields of the frozen dataclass ``section`` (at
    dotted ``where``): one set under another value of its selector is a ConfigError naming
    it; one left null under its own value takes its default."""
    for f in dataclasses.fields(section):
        owner, value = owner_of(f), getattr(section, f.name)
        if owner is None:
            continue
        selector, own = owner
        chosen = getattr(section, selector)
        if own != chosen and value is not None:
            raise ConfigError(
                f"{where}.{f.name} is a {own} key, but {where}.{selector} is {chosen!r}: "
                f"remove it, or set {where}.{selector} to {own!r}",
                key=f"{where}.{f.name}",
            )
        if own == chosen and value is None:
            object.__setattr__(section, f.name, f.metadata[_DEFAULT]())


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic log used when ``data.dataset`` is ``synthetic`` (see srt_jax.data.synthetic)."""

    users: int = 2000
    items: int = 1000
    mean_length: float = 50.0
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the interactions come from and how training windows are drawn.

    ``dataset`` is a built-in name (``movielens-100k``, ``synthetic``) or the path of a
    sequence store made by ``srt-jax data prepare`` / ``data synth``.
    """

    dataset: str = "movielens-100k"
    cache_dir: str | None = None
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    max_len: int = 50
    max_users: int | None = None
    heldout_users: float = 0.1
    split_seed: int = 0
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    temporal_cutoff_quantile: float = 0.9
    sampler: SamplerMode = "sliding"
    stride: int | None = None
    mixed_by: Literal["batch", "epoch"] = "batch"
    mixed_sliding_fraction: float = 0.5
    recency_half_life: float = 50.0
    user_weighting: Literal["uniform", "length"] = "uniform"
    prefetch: int = 2

    def __post_init__(self) -> None:
        check(self.max_len >= 1, "data.max_len", self.max_len, "an integer >= 1")
        check(
            self.max_users is None or self.max_users >= 1,
            "data.max_users",
            self.max_users,
            "null or an integer >= 1",
        )
        check(
            0.0 <= self.heldout_users < 1.0,
            "data.heldout_users",
            self.heldout_users,
            "a fraction in [0, 1)",
        )
        check(
            0.0 < self.temporal_cutoff_quantile < 1.0,
            "data.temporal_cutoff_quantile",
            self.temporal_cutoff_quantile,
            "a quantile in (0, 1) of the interaction timestamps",
        )
        check(
            self.stride is None or self.stride >= 1,
            "data.stride",
            self.stride,
            "null (= max_len) or an integer >= 1",
        )
        check(
            0.0 <= self.mixed_sliding_fraction <= 1.0,
            "data.mixed_sliding_fraction",
            self.mixed_sliding_fraction,
            "a fraction in [0, 1]",
        )
        check(
            self.recency_half_life > 0,
            "data.recency_half_life",
            self.recency_half_life,
            "a positive number of interactions",
        )
        check(self.prefetch >= 0, "data.prefetch", self.prefetch, "an integer >= 0")


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
    every block), ``dropout``, the item encoder and ``dtype``. Transformer keys: ``n_heads``
    (default 2), ``norm`` (``pre``), ``positions`` (``learned``). Mamba keys: the ``mamba``
    section (:class:`MambaConfig`). See the module docstring for how backbone keys behave.
    """

    backbone: Backbone = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int | None = backbone_key("transformer", lambda: 2)
    d_ff: int | None = None
    dropout: float = 0.2
    norm: Literal["pre", "post"] | None = backbone_key("transformer", lambda: "pre")
    positions: Literal["learned", "rope"] | None = backbone_key("transformer", lambda: "learned")
    tie_embeddings: bool = True
    item_encoder: Literal["id", "hashed"] = "id"
    hash_buckets: int = 4096
    n_hashes: int = 2
    dtype: Literal["float32", "bfloat16"] = "float32"
    mamba: MambaConfig | None = backbone_key("mamba", MambaConfig)

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

    @property
    def ffn_dim(self) -> int:
        """Feed-forward width: ``d_ff``, or ``4 * d_model`` when null."""
        return self.d_ff or 4 * self.d_model


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
    ``optimizer`` is a :func:`new_key`: ``adamw`` configs keep the run ids they had before
    it existed.
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
    seed: int = 0
    data_parallel: int | None = None
    log_every: int = 50
    eval_every_tokens: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

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
        check(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        check(
            self.checkpoint_every >= 1,
            "train.checkpoint_every",
            self.checkpoint_every,
            "an integer >= 1",
        )
        check(
            self.keep_checkpoints >= 1,
            "train.keep_checkpoints",
            self.keep_checkpoints,
            "an integer >= 1",
        )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol; it is recorded beside every number it produces.

    Ranking is over the whole catalog unless ``sampled_candidates`` (the target against
    that many random items drawn from ``candidate_seed``, SRT's protocol); users are ranked
    ``batch_users`` at a time and items scored ``item_chunk`` at a time, which bounds
    memory. ``heldout_stride`` is the window stride of the held-out loss (null: max_len).
    """

    cutoffs: tuple[int, ...] = (5, 10, 20)
    batch_users: int = 256
    item_chunk: int = 65536
    sampled_candidates: int | None = None
    candidate_seed: int = 0
    heldout_stride: int | None = None

    def __post_init__(self) -> None:
        check(
            10 in self.cutoffs and all(k >= 1 for k in self.cutoffs),
            "eval.cutoffs",
            self.cutoffs,
            "a list of integers >= 1 that includes 10 (validation NDCG@10 picks the best "
            "checkpoint)",
        )
        check(self.batch_users >= 1, "eval.batch_users", self.batch_users, "an integer >= 1")
        check(self.item_chunk >= 1, "eval.item_chunk", self.item_chunk, "an integer >= 1")
        check(
            self.sampled_candidates is None or self.sampled_candidates >= 1,
            "eval.sampled_candidates",
            self.sampled_candidates,
            "null or an integer >= 1",
        )
        check(
            self.heldout_stride is None or self.heldout_stride >= 1,
            "eval.heldout_stride",
            self.heldout_stride,
            "null (= data.max_len) or an integer >= 1",
        )


@dataclass(frozen=True)
class RunConfig:
    """A whole run: data, model, training and evaluation sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    """Raise a ConfigError naming ``key`` and what is expected unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: expected {expected}", key=key)

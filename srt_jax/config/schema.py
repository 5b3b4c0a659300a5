"""The config schema: one frozen dataclass per section, the reference for every key.

Each key's default, type and allowed values are declared with its section, and each key is
validated in one place: its section's ``__post_init__`` (keys that constrain each other are
checked by the section that holds both). The ``data`` and ``eval`` sections and the whole
:class:`RunConfig` are here; ``model`` is in :mod:`srt_jax.config.model`, ``train`` in
:mod:`srt_jax.config.train`; how backbone-, optimiser- and new keys behave is in
:mod:`srt_jax.config.keys`. Loading, overrides and hashing live in
:mod:`srt_jax.config.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from srt_jax.config.keys import changed_default, check, new_key
from srt_jax.config.model import ModelConfig
from srt_jax.config.train import TrainConfig

SamplerMode = Literal["recent", "sliding", "stride", "mixed", "recency_weighted"]
TestSetName = Literal["old_windows", "long_history"]


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
    sequence store made by ``srt-jax data prepare`` / ``data synth``. ``pack`` (a
    :func:`new_key`, default off) packs the windows of each training batch into fewer rows
    with segment ids (:mod:`srt_jax.data.packing`).
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
    pack: bool = new_key(False)

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
class EvalConfig:
    """Evaluation protocol; it is recorded beside every number it produces.

    Ranking is over the whole catalog unless ``sampled_candidates`` (the target against
    that many random items drawn from ``candidate_seed``, SRT's protocol); users are ranked
    ``batch_users`` at a time and items scored ``item_chunk`` at a time, which bounds
    memory. ``batch_users`` null (the default) is chosen by platform as measured by
    ``benchmarks/bench_eval.py`` (:data:`srt_jax.train.evaluate.BATCH_USERS`; 256 before,
    which the run id still reads, see :func:`changed_default`). It changes the speed, not
    the ranks (held-out loss sums move in the seventh digit). ``heldout_stride`` is the
    window stride of the held-out loss (null: max_len).

    ``test_sets`` (a :func:`new_key`, default none): test sets scored at the end besides the
    split's own test targets, at the same checkpoint — ``old_windows`` (held-out users'
    targets drawn before their most recent ``max_len`` items) and ``long_history`` (the test
    targets of users with more than ``max_len`` items before them); see
    :mod:`srt_jax.data.test_sets`. ``embedding_quality`` (a :func:`new_key`, default off):
    also measure the item embeddings at the end (:mod:`srt_jax.train.embedding_quality`);
    ``embedding_feature`` (a :func:`new_key`, default none; needs ``embedding_quality``):
    also measure how often an item's neighbours share a value of this item-feature column
    (``class``: MovieLens genres), from the store's item features.
    """

    cutoffs: tuple[int, ...] = (5, 10, 20)
    batch_users: int | None = changed_default(None, hashed_as=256)
    item_chunk: int = 65536
    sampled_candidates: int | None = None
    candidate_seed: int = 0
    heldout_stride: int | None = None
    test_sets: tuple[TestSetName, ...] = new_key(())
    embedding_quality: bool = new_key(False)
    embedding_feature: str | None = new_key(None)

    def __post_init__(self) -> None:
        check(
            10 in self.cutoffs and all(k >= 1 for k in self.cutoffs),
            "eval.cutoffs",
            self.cutoffs,
            "a list of integers >= 1 that includes 10 (validation NDCG@10 picks the best "
            "checkpoint)",
        )
        check(
            self.batch_users is None or self.batch_users >= 1,
            "eval.batch_users",
            self.batch_users,
            "null (chosen by platform) or an integer >= 1",
        )
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
        check(
            len(set(self.test_sets)) == len(self.test_sets),
            "eval.test_sets",
            list(self.test_sets),
            "each test set at most once",
        )
        check(
            self.embedding_feature is None
            or (self.embedding_quality and bool(self.embedding_feature)),
            "eval.embedding_feature",
            self.embedding_feature,
            "null, or a feature column name (e.g. class) with eval.embedding_quality: true",
        )


@dataclass(frozen=True)
class RunConfig:
    """A whole run: data, model, training and evaluation sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check(
            self.model.mup_base_width is None or self.train.optimizer == "adamw",
            "train.optimizer",
            self.train.optimizer,
            "'adamw' with model.mup_base_width set (μP scales AdamW's per-layer steps)",
        )
        check(
            not self.data.pack or self.train.adaptive_batch is None,
            "data.pack",
            self.data.pack,
            "false with train.adaptive_batch (its micro-batches split a batch's rows in half)",
        )

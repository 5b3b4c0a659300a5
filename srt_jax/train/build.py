"""Building a run: everything a run makes from its config before the first step.

:func:`build_run` opens the data (:mod:`srt_jax.data.sources`), splits it, sizes the token
budget, builds the window sampler, the model (the backbone the config names; initialised
from another run with ``train.init_from``, :mod:`srt_jax.train.init_from`), the jitted
step over a device mesh and the evaluator, and counts the analytic FLOPs. The training loop
(:mod:`srt_jax.train.loop`), ``srt-jax eval`` (:mod:`srt_jax.train.run_eval`) and sweep
planning (:mod:`srt_jax.train.timing`) all start here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from flax import nnx
from jax.sharding import Mesh

from srt_jax.config import RunConfig
from srt_jax.data.sampler import WindowSampler
from srt_jax.data.sources import open_dataset
from srt_jax.data.splits import Segments, Split, split_from_config
from srt_jax.data.store import SequenceStore
from srt_jax.data.test_sets import build_test_sets
from srt_jax.errors import ConfigError
from srt_jax.models.counting import FlopsBreakdown, flops_per_token
from srt_jax.models.factory import build_model, model_item_features
from srt_jax.train.embedding_quality import feature_membership
from srt_jax.train.evaluate import Evaluator
from srt_jax.train.init_from import InitRecord, init_from_run
from srt_jax.train.losses import log_q_from_counts
from srt_jax.train.mesh import DATA_AXIS, check_divisible, data_mesh
from srt_jax.train.step import TrainStep

_COUNT_CHUNK = 1 << 24


# --------------------------------------------------------------------------- building a run


@dataclass
class RunParts:
    """Everything a run builds from its config before the first step."""

    config: RunConfig
    store: SequenceStore
    split: Split
    sampler: WindowSampler
    model: nnx.Module
    step: TrainStep
    evaluator: Evaluator
    token_budget: int
    flops: FlopsBreakdown
    init: InitRecord | None = None
    embedding_feature: tuple[str, sp.csr_matrix] | None = None
    """``eval.embedding_feature`` and its :func:`feature_membership`, checked before training."""

    @property
    def flops_per_token(self) -> float:
        """Analytic training FLOPs per trained target token (forward x 3)."""
        return self.flops.total


def token_budget(config: RunConfig, split: Split) -> int:
    """Target tokens the run trains: ``train.tokens``, or ``train.epochs`` times the target
    positions of the training segments."""
    if config.train.tokens is not None:
        return config.train.tokens
    return max(1, round(config.train.epochs * split.train.n_targets))


def train_item_counts(items: np.ndarray, segments: Segments, n_items: int) -> np.ndarray:
    """int64 [n_items + 1]: occurrences of each item in the training segments."""
    counts = np.zeros(n_items + 1, np.int64)
    order = np.argsort(segments.start)
    start, end = segments.start[order], segments.end[order]
    lo = 0
    while lo < len(start):  # groups of segments spanning at most _COUNT_CHUNK items
        hi = max(lo + 1, int(np.searchsorted(start, start[lo] + _COUNT_CHUNK, "left")))
        chunk = np.asarray(items[start[lo] : end[hi - 1]])
        inside = np.zeros(len(chunk) + 1, np.int64)
        np.add.at(inside, start[lo:hi] - start[lo], 1)
        np.add.at(inside, end[lo:hi] - start[lo], -1)
        counts += np.bincount(chunk[np.cumsum(inside[:-1]) > 0], minlength=n_items + 1)
        lo = hi
    return counts


def run_mesh(config: RunConfig, *, fit_devices: bool = False) -> Mesh:
    """The mesh of ``train.data_parallel`` x ``train.item_shards`` devices; with
    ``fit_devices``, one device when this machine has too few for it (evaluating or serving
    a saved run elsewhere: the checkpoint's padded item tables are then replicated)."""
    train_cfg = config.train
    try:
        return data_mesh(train_cfg.data_parallel, train_cfg.item_shards)
    except ConfigError:
        if not fit_devices:
            raise
        return data_mesh(1, 1)


def build_run(config: RunConfig, *, progress: bool = True, fit_devices: bool = False) -> RunParts:
    """Open the data and build the split, sampler, model, step and evaluator of ``config``
    (``fit_devices``: see :func:`run_mesh`)."""
    data, train_cfg = config.data, config.train
    store = open_dataset(data, progress=progress)
    split = split_from_config(store, data)
    for which in ("valid", "test"):
        if len(getattr(split, which)) == 0:
            raise ConfigError(
                f"the {data.split} split of {data.dataset!r} has no {which} targets "
                "(no training user has enough interactions)",
                key="data.split",
            )
    budget = token_budget(config, split)
    mesh = run_mesh(config, fit_devices=fit_devices)
    check_divisible(train_cfg.batch_size, mesh, "train.batch_size")
    orpo = train_cfg.orpo
    ratings = None
    if orpo is not None and orpo.rejected == "disliked":
        if store.ratings is None:
            raise ConfigError(
                f"train.orpo.rejected = 'disliked' needs ratings, but the store of "
                f"data.dataset = {data.dataset!r} has none; choose uniform, popularity or hard",
                key="train.orpo.rejected",
            )
        ratings = store.ratings
    sampler = WindowSampler.from_config(
        store.items,
        split.train,
        data,
        train_cfg.batch_size,
        train_cfg.seed,
        token_budget=budget,
        ratings=ratings,
        pack_multiple=mesh.shape[DATA_AXIS],
    )
    features = model_item_features(config.model, store)
    model = build_model(
        config.model, store.n_items, data.max_len, nnx.Rngs(train_cfg.seed), item_features=features
    )
    init = None if train_cfg.init_from is None else init_from_run(model, config, store, mesh)
    log_q = {}
    popular_negatives = train_cfg.negatives == "popularity" and train_cfg.loss != "full_softmax"
    popular_rejected = orpo is not None and orpo.rejected == "popularity"
    if popular_negatives or popular_rejected:
        counts = train_item_counts(store.items, split.train, store.n_items)
        item_log_q = np.asarray(log_q_from_counts(counts))
        log_q = {
            "item_log_q": item_log_q if popular_negatives else None,
            "rejected_log_q": item_log_q if popular_rejected else None,
        }
    step = TrainStep(
        model,
        train_cfg,
        total_tokens=budget,
        mesh=mesh,
        n_layers=config.model.n_layers,
        packed=sampler.packed_rows is not None,
        **log_q,
    )
    evaluator = Evaluator(
        model,
        store.items,
        split,
        n_items=store.n_items,
        max_len=data.max_len,
        eval_cfg=config.eval,
        mesh=mesh,
        test_sets=build_test_sets(config.eval.test_sets, split, data.max_len, data.split_seed),
    )
    flops = flops_per_token(
        config.model, store.n_items, data.max_len, train_cfg, item_features=features
    )
    column = config.eval.embedding_feature
    feature = None if column is None else (column, feature_membership(store, column))
    return RunParts(
        config, store, split, sampler, model, step, evaluator, budget, flops, init, feature
    )

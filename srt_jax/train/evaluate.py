"""Evaluation: held-out per-token cross-entropy and leave-one-out ranking over the catalog.

**Held-out loss** (the scaling-law target): the full-softmax cross-entropy (nats) of every
target position of the held-out users' histories, each position once with up to ``max_len``
items of context (:func:`srt_jax.data.sampler.iter_eval_batches`, stride
``eval.heldout_stride``), summed then divided by the number of positions.

**Ranking** (``valid`` / ``test`` targets of the split): the model reads the last
``max_len`` items before the target (left-padded) and scores every item with its last
hidden state. The target's rank is

    rank = 1 + #{items i != target : score_i >= score_target}

over the candidates, i.e. ties are resolved pessimistically (an item scoring exactly as the
target counts as above it, so a constant scorer ranks every target last, never first).
Candidates are the whole catalog (full ranking, the default) or, with
``eval.sampled_candidates``, the target plus that many distinct other items drawn uniformly per
target from ``(candidate_seed, user, target position)`` — SRT's protocol, labelled as such.

Every ranking is reported twice: unfiltered (RecBole's protocol, keys like ``ndcg@10``) and
with the user's seen items filtered (keys like ``ndcg@10_filtered``). The filter removes
from the candidates every item of the user's history before the target — all of it, not
only the last ``max_len`` — except the target itself (RecBole-style: a repeated target is
still ranked, its earlier occurrences do not remove it).

Users are ranked in order of their context length, and each chunk of users reads only the
last W columns of its windows, W the smallest of :func:`context_widths` that holds its
longest context, with positions ``max_len - W .. max_len - 1`` so that every real item keeps
the position it has in the full window: the scores are those of the full, left-padded
window (padding never influences a real position) but for float rounding, at a fraction
of its cost where most contexts are shorter than ``max_len``.

Memory stays bounded as the catalog grows: users are processed in chunks of
``eval.batch_users`` and, inside the jitted ranking, items in chunks of ``eval.item_chunk``
with a running count of the items scoring at or above the target, so no ``[users, n_items]``
array larger than ``batch_users x item_chunk`` exists. Seen items and sampled candidates are
scattered into a per-chunk mask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

from srt_jax.config import EvalConfig
from srt_jax.data.sampler import gather_windows, iter_eval_batches
from srt_jax.data.splits import Split, Targets
from srt_jax.data.test_sets import describe
from srt_jax.train.distributed import place
from srt_jax.train.item_shards import (
    item_table_rows,
    pad_item_tables,
    pad_rows,
    state_shardings,
    unpad_item_tables,
)
from srt_jax.train.losses import full_softmax_loss, scores, target_scores
from srt_jax.train.mesh import DATA_AXIS, ITEMS_AXIS, batch_sharding, replicated
from srt_jax.train.metrics import ranking_metrics

SplitName = Literal["valid", "test"]
BATCH_USERS = {"cpu": 64}
"""``eval.batch_users`` when null, by JAX platform; 256 on any other. On XLA:CPU the
MovieLens-100K ranking runs 1.6x faster at 64 users per call than at 256 (the ``[U, L, 4D]``
activations stay in cache; ``benchmarks/bench_eval.py``)."""
OTHER_PLATFORMS_BATCH_USERS = 256
FILTERED = "_filtered"
TIE_RULE = "pessimistic: rank = 1 + number of other candidates scoring >= the target"
SEEN_FILTER_RULE = (
    "removes every item of the user's history before the target except the target itself"
)


def rank_targets(
    hidden_UxD: jax.Array,
    table_VxD: jax.Array,
    targets_U: jax.Array,
    seen_UxA: jax.Array,
    candidates_UxY: jax.Array | None,
    item_chunk: int,
    *,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """1-based ranks of each user's target, unfiltered and with seen items filtered.

    Args:
      hidden_UxD: the hidden state that scores the next item, per user.
      table_VxD: item table, V = n_items + 1 (row 0 = padding, never a candidate).
      targets_U: int32 target item of each user (>= 1).
      seen_UxA: int32 items to filter per user (0 = none; may repeat).
      candidates_UxY: int32 sampled candidates per user (besides the target), or None for
        the whole catalog.
      item_chunk: items scored at a time (T; at most V, so a small catalog is one chunk).
      mesh: with S > 1 devices on its ``items`` axis (``train.item_shards``), the table is
        padded to a multiple of S rows and split over ``items``; each device counts the
        items above the target among its own rows for its ``data`` shard of the users, and
        the counts are summed across ``items`` (``jax.shard_map``).

    Returns:
      ``(ranks_U, filtered_ranks_U)`` int32, see the module docstring for the rule.
    """
    V = table_VxD.shape[0]
    target_score_U = target_scores(hidden_UxD, table_VxD, targets_U)
    args = (hidden_UxD, target_score_U, targets_U, seen_UxA)
    if candidates_UxY is not None:
        args += (candidates_UxY,)
    if mesh is None or mesh.shape[ITEMS_AXIS] == 1:
        above_U, above_unseen_U = _count_above(table_VxD, 0, V, item_chunk, *args)
        return above_U + 1, above_unseen_U + 1
    shards = mesh.shape[ITEMS_AXIS]
    table_XxD = pad_rows(table_VxD, shards)

    def local(shard_XxD: jax.Array, *users: jax.Array) -> tuple[jax.Array, jax.Array]:
        first = jax.lax.axis_index(ITEMS_AXIS) * shard_XxD.shape[0]
        counts = _count_above(shard_XxD, first, V, item_chunk, *users)
        return jax.lax.psum(counts, ITEMS_AXIS)

    users = PartitionSpec(DATA_AXIS)
    above_U, above_unseen_U = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(ITEMS_AXIS), *(users,) * len(args)),
        out_specs=(users, users),
        check_vma=False,  # the sum across items makes the counts what out_specs say
    )(table_XxD, *args)
    return above_U + 1, above_unseen_U + 1


def _count_above(
    rows_XxD: jax.Array,
    first: jax.Array | int,
    n_rows: int,
    item_chunk: int,
    hidden_UxD: jax.Array,
    target_score_U: jax.Array,
    targets_U: jax.Array,
    seen_UxA: jax.Array,
    candidates_UxY: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Items among ``rows_XxD`` (catalog rows ``first .. first + X - 1``; rows 0 and ``>=
    n_rows`` are not items) scoring at or above each user's target: ``(all, unseen)`` int32
    [U], scored ``item_chunk`` rows at a time."""
    U = hidden_UxD.shape[0]
    X = rows_XxD.shape[0]
    item_chunk = min(item_chunk, X)
    n_chunks = -(-X // item_chunk)
    rows_ZxD = jnp.pad(rows_XxD, ((0, n_chunks * item_chunk - X), (0, 0)))
    users_U = jnp.arange(U)[:, None]

    def in_chunk(listed: jax.Array, start: jax.Array) -> jax.Array:
        """bool [U, T]: which of the chunk's items each user lists in ``listed`` (int32
        [U, A] seen items or [U, Y] candidates)."""
        local = listed - start
        local = jnp.where((local >= 0) & (local < item_chunk), local, item_chunk)
        mask = jnp.zeros((U, item_chunk), bool)
        return mask.at[users_U, local].set(True, mode="drop")

    def count_chunk(counts: tuple[jax.Array, jax.Array], c: jax.Array):
        offset = c * item_chunk
        chunk_TxD = jax.lax.dynamic_slice_in_dim(rows_ZxD, offset, item_chunk)
        scores_UxT = scores(hidden_UxD, chunk_TxD)
        start = first + offset
        item_T = start + jnp.arange(item_chunk)
        eligible_UxT = (
            (item_T >= 1)
            & (item_T < n_rows)
            & (offset + jnp.arange(item_chunk) < X)
            & (item_T != targets_U[:, None])
        )
        if candidates_UxY is not None:
            eligible_UxT &= in_chunk(candidates_UxY, start)
        above_UxT = eligible_UxT & (scores_UxT >= target_score_U[:, None])
        above_unseen_UxT = above_UxT & ~in_chunk(seen_UxA, start)
        return (
            counts[0] + above_UxT.sum(axis=1, dtype=jnp.int32),
            counts[1] + above_unseen_UxT.sum(axis=1, dtype=jnp.int32),
        ), None

    zeros = jnp.zeros(U, jnp.int32)
    counts, _ = jax.lax.scan(count_chunk, (zeros, zeros), jnp.arange(n_chunks))
    return counts


class Evaluator:
    """Held-out loss and ranking metrics of one model shape on one split.

    Args:
      model: a model of the run's shape (its graph is used; parameters come per call).
      items: the store's items (memmap).
      split: the run's split.
      n_items: catalog size (items 1..n_items).
      max_len: L, the context the model reads.
      eval_cfg: cutoffs, user chunk, item chunk, sampled candidates.
      mesh: the device mesh; users are sharded along its ``data`` axis.
      test_sets: name -> targets of the extra test sets (``eval.test_sets``,
        :mod:`srt_jax.data.test_sets`), scored by :meth:`test_set_metrics`.

    Methods take the parameter state (``nnx.State`` of :class:`nnx.Param`) to evaluate.
    """

    context_buckets = True
    """Rank chunks of users at the context widths of :func:`context_widths` (False: every
    chunk at ``max_len``, as before: the same scores but for rounding; a reference for
    ``benchmarks/bench_eval.py``)."""

    def __init__(
        self,
        model: nnx.Module,
        items: np.ndarray,
        split: Split,
        *,
        n_items: int,
        max_len: int,
        eval_cfg: EvalConfig,
        mesh: Mesh,
        test_sets: dict[str, Targets] | None = None,
    ) -> None:
        model.eval()
        self.test_sets = dict(test_sets or {})
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self.items, self.split, self.max_len, self.cfg = items, split, max_len, eval_cfg
        self.mesh = mesh
        self.n_items = n_items
        devices = mesh.shape[DATA_AXIS]
        self.rows = -(-batch_users(eval_cfg, mesh) // devices) * devices
        self._rest = place(rest, replicated(mesh))
        self.candidates = (
            None
            if eval_cfg.sampled_candidates is None
            else min(eval_cfg.sampled_candidates, self.n_items - 1)
        )
        rep, rows = replicated(mesh), batch_sharding(mesh)
        self._item_rows = item_table_rows(params)
        shards = mesh.shape[ITEMS_AXIS]
        self._items_mesh = mesh if shards > 1 else None
        self._split_tables = self._items_mesh is not None and self._item_rows is not None
        padded = jax.eval_shape(lambda p: pad_item_tables(p, shards), params)
        self._param_shardings = state_shardings(padded, mesh)
        self._abstract_params = jax.tree.map(
            lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            padded,
            self._param_shardings,
        )
        on_mesh = self._param_shardings
        self._split = jax.jit(lambda p: pad_item_tables(p, shards), out_shardings=on_mesh)
        self._rows = rows
        self._loss: Any = jax.jit(
            self._loss_fn, in_shardings=(on_mesh, rep, rows, rows, rows), out_shardings=rep
        )
        n_row_args = 4 if self.candidates is None else 5  # + candidates when sampled
        self._rank_jit = jax.jit(  # ranks gathered on every device: every process reads them
            self._rank_fn, in_shardings=(on_mesh, rep) + (rows,) * n_row_args, out_shardings=rep
        )
        self._rank_compiled: dict[tuple[int, int], Any] = {}
        self._plans = {which: self._plan(getattr(split, which)) for which in ("valid", "test")}

    # ------------------------------------------------------------------ jitted kernels

    def _model(self, params: nnx.State, rest: nnx.State) -> nnx.Module:
        if self._split_tables:
            params = unpad_item_tables(params, self._item_rows)
        return nnx.merge(self.graphdef, params, rest)

    def _on_mesh(self, params: nnx.State) -> nnx.State:
        """``params`` placed as the kernels take them: with ``train.item_shards``, the item
        tables padded and split over ``items`` (:mod:`srt_jax.train.item_shards`)."""
        return self._split(params) if self._split_tables else params

    def _on_rows(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        """Numpy arrays of a chunk of users (or held-out windows) split over ``data``, as
        global arrays (:func:`~srt_jax.train.distributed.place`)."""
        placed = place(dict(enumerate(arrays)), self._rows)
        return tuple(placed[i] for i in range(len(arrays)))

    def _loss_fn(self, params, rest, inputs_BxL, targets_BxL, mask_BxL):
        net = self._model(params, rest)
        return full_softmax_loss(
            net(inputs_BxL), net.item_table(), targets_BxL, mask_BxL, mesh=self._items_mesh
        )

    def _rank_fn(
        self, params, rest, inputs_UxL, positions_UxL, targets_U, seen_UxA, *candidates_UxY
    ):
        net = self._model(params, rest)
        hidden_UxD = net.last_hidden(inputs_UxL, positions_UxL)
        return rank_targets(
            hidden_UxD,
            net.item_table(),
            targets_U,
            seen_UxA,
            candidates_UxY[0] if candidates_UxY else None,
            self.cfg.item_chunk,
            mesh=self._items_mesh,
        )

    # ------------------------------------------------------------------ public

    def compile(self) -> float:
        """Compile the held-out loss and the rankings of both splits ahead of time; seconds."""
        start = time.perf_counter()
        rows, L = self.rows, self.max_len
        params, rest = self._abstract_params, self._rest

        def arg(*shape: int, dtype: Any = jnp.int32) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(shape, dtype)

        if self.split.heldout.n_targets:
            self._loss = self._loss.lower(
                params, rest, arg(rows, L), arg(rows, L), arg(rows, L, dtype=jnp.bool_)
            ).compile()
        shapes = {(c, plan.seen_width) for plan in self._plans.values() for c in plan.contexts}
        for context, seen in shapes:
            candidates = () if self.candidates is None else (arg(rows, self.candidates),)
            self._rank_compiled[context, seen] = self._rank_jit.lower(
                params,
                rest,
                arg(rows, context),
                arg(rows, context),
                arg(rows),
                arg(rows, seen),
                *candidates,
            ).compile()
        return time.perf_counter() - start

    def heldout_loss(self, params: nnx.State) -> float | None:
        """Per-token cross-entropy (nats) over every held-out target; None without held-out
        users."""
        if self.split.heldout.n_targets == 0:
            return None
        params = self._on_mesh(params)
        sums = []
        for batch in iter_eval_batches(
            self.items,
            self.split.heldout,
            max_len=self.max_len,
            batch_size=self.rows,
            stride=self.cfg.heldout_stride,
        ):
            arrays = self._on_rows(batch.inputs, batch.targets, batch.mask)
            sums.append(self._loss(params, self._rest, *arrays))
        loss_sum, count = np.sum(np.asarray(jax.device_get(sums), np.float64), axis=0)
        return float(loss_sum / count)

    def ranks(self, params: nnx.State, which: SplitName | Targets) -> tuple[np.ndarray, np.ndarray]:
        """1-based ranks of every target of ``which`` (the split's ``valid`` or ``test``, or
        any :class:`Targets`, e.g. a test set of :mod:`srt_jax.data.test_sets`):
        ``(unfiltered, seen-filtered)`` int arrays."""
        if isinstance(which, str):
            targets, plan = getattr(self.split, which), self._plans[which]
        else:
            targets, plan = which, self._plan(which)
        params = self._on_mesh(params)
        out = []
        for context, arrays in self._chunks(targets, plan):
            rank = self._rank_compiled.get((context, plan.seen_width), self._rank_jit)
            out.append(rank(params, self._rest, *self._on_rows(*arrays)))
        ranks = jax.device_get(out)
        unfiltered = np.empty(len(targets), np.int64)
        filtered = np.empty(len(targets), np.int64)
        unfiltered[plan.order] = np.concatenate([r[0] for r in ranks])[: len(targets)]
        filtered[plan.order] = np.concatenate([r[1] for r in ranks])[: len(targets)]
        return unfiltered, filtered

    def metrics(self, params: nnx.State, which: SplitName | Targets) -> dict[str, float]:
        """Ranking metrics of ``which`` (as :meth:`ranks`; unfiltered keys and ``_filtered``
        keys)."""
        unfiltered, filtered = self.ranks(params, which)
        return {
            **ranking_metrics(unfiltered, self.cfg.cutoffs),
            **ranking_metrics(filtered, self.cfg.cutoffs, suffix=FILTERED),
        }

    def item_table(self, params: nnx.State) -> np.ndarray:
        """float32 [n_items + 1, D]: the model's output item table (row 0 padding)."""
        table = self._model(self._on_mesh(params), self._rest).item_table()
        return np.asarray(jax.device_get(table), np.float32)

    def test_set_metrics(self, params: nnx.State) -> dict[str, dict[str, float]]:
        """name -> ranking metrics (and ``targets``, their count) of every extra test set."""
        return {
            name: {**self.metrics(params, targets), "targets": len(targets)}
            for name, targets in self.test_sets.items()
        }

    def protocol(self) -> dict[str, Any]:
        """How the numbers of this evaluator were made (recorded beside them)."""
        extra = {
            name: describe(name, targets, self.max_len) for name, targets in self.test_sets.items()
        }
        return {
            **({"test_sets": extra} if extra else {}),
            "split": dict(self.split.protocol),
            "ranking": "full" if self.candidates is None else "sampled",
            "sampled_candidates": self.candidates,
            "candidate_seed": None if self.candidates is None else self.cfg.candidate_seed,
            "ties": TIE_RULE,
            "seen_filter": f"reported both ways; the '{FILTERED}' keys' filter {SEEN_FILTER_RULE}",
            "cutoffs": list(self.cfg.cutoffs),
            "batch_users": self.rows,
            "context": f"last {self.max_len} items before the target",
            "n_valid_users": len(self.split.valid),
            "n_test_users": len(self.split.test),
            "heldout_loss": {
                "users": len(self.split.heldout),
                "targets": self.split.heldout.n_targets,
                "stride": self.cfg.heldout_stride or self.max_len,
                "loss": "full-softmax cross-entropy, nats per target",
            },
        }

    # ------------------------------------------------------------------ host side

    def _plan(self, targets: Targets) -> RankingPlan:
        """The order and chunk widths in which ``targets`` are ranked (module docstring)."""
        length = np.minimum(targets.target_pos - targets.context_start, self.max_len)
        order = np.argsort(length, kind="stable")
        widths = context_widths(self.max_len) if self.context_buckets else [self.max_len]
        contexts = []
        for first in range(0, len(targets), self.rows):
            longest = int(length[order[first : first + self.rows]].max())
            contexts.append(next(w for w in widths if w >= longest))
        return RankingPlan(order, tuple(contexts), _history_width(targets))

    def _chunks(
        self, targets: Targets, plan: RankingPlan
    ) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
        """Per chunk of ``rows`` users in the plan's order: its context width W and its
        arrays: inputs [rows, W], their positions, targets, seen items (``plan.seen_width``
        per user) and, when sampled, the candidates (numpy; the last chunk padded with its
        first user)."""
        width = plan.seen_width
        for chunk, first in enumerate(range(0, len(targets), self.rows)):
            index = np.arange(first, first + self.rows)
            index = plan.order[np.where(index < len(targets), index, first)]
            start, pos = targets.context_start[index], targets.target_pos[index]
            window = gather_windows(self.items, start, pos + 1, targets.user[index], self.max_len)
            context = plan.contexts[chunk]
            inputs = np.ascontiguousarray(window.inputs[:, self.max_len - context :])
            positions = np.repeat(
                np.arange(self.max_len - context, self.max_len, dtype=np.int32)[None],
                len(index),
                axis=0,
            )
            target_U = np.asarray(self.items[pos], np.int32)
            seen = np.asarray(
                self.items[np.minimum(start[:, None] + np.arange(width), pos[:, None])]
            )
            seen = np.where(
                (start[:, None] + np.arange(width) < pos[:, None]) & (seen != target_U[:, None]),
                seen,
                0,
            ).astype(np.int32)
            arrays = (inputs, positions, target_U, seen)
            if self.candidates is not None:
                arrays += (self._candidates(targets.user[index], pos, target_U),)
            yield context, arrays

    def _candidates(self, user: np.ndarray, pos: np.ndarray, target: np.ndarray) -> np.ndarray:
        """int32 [U, Y]: ``sampled_candidates`` distinct items other than the target, per row."""
        rows = []
        for u, p, t in zip(user, pos, target, strict=True):
            rng = np.random.default_rng([self.cfg.candidate_seed, int(u), int(p)])
            drawn = rng.choice(self.n_items - 1, size=self.candidates, replace=False) + 1
            rows.append(drawn + (drawn >= t))
        return np.asarray(rows, np.int32)


@dataclass(frozen=True)
class RankingPlan:
    """How one set of targets is ranked: ``order`` [targets] (by context length), the
    context width of each chunk of ``rows`` targets in that order, and the seen-item slots
    per target."""

    order: np.ndarray
    contexts: tuple[int, ...]
    seen_width: int


def context_widths(max_len: int) -> list[int]:
    """The context widths a ranking chunk can have: 16, 32, 64, ... below ``max_len``, then
    ``max_len`` (few shapes to compile; at most twice the columns a chunk needs)."""
    widths = [16 << k for k in range(max(0, math.ceil(math.log2(max_len / 16))))]
    return [w for w in widths if w < max_len] + [max_len]


def batch_users(eval_cfg: EvalConfig, mesh: Mesh) -> int:
    """Users ranked per call: ``eval.batch_users``, or when null the platform's measured
    choice (:data:`BATCH_USERS`)."""
    if eval_cfg.batch_users is not None:
        return eval_cfg.batch_users
    platform = mesh.devices.flat[0].platform
    return BATCH_USERS.get(platform, OTHER_PLATFORMS_BATCH_USERS)


def _history_width(targets: Targets) -> int:
    """Seen-item slots per user: the longest history before a target, rounded up to a power
    of two (so few shapes are compiled)."""
    longest = int((targets.target_pos - targets.context_start).max(initial=1))
    return 1 << max(0, math.ceil(math.log2(max(1, longest))))

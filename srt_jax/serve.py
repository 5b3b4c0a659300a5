"""Serving a trained run: the top-k next items after a history, and after each new event.

``Recommender.from_run_dir(run_dir)`` rebuilds the run from its config and restores its
best-validation checkpoint once, exactly as ``srt-jax eval`` picks it
(:func:`srt_jax.train.run_eval.restore_best`); its scoring functions are jit-compiled on
first use and reused, so serving many histories in one process costs one compilation::

    rec = Recommender.from_run_dir("runs/d128")
    state = rec.encode(rec.item_indices(["1193", "661", "914"]))   # original ids -> indices
    top = rec.top_k(state, 10, exclude=state.seen)                 # ids and scores
    state = rec.observe(state, rec.item_indices(["3408"])[0])      # one new event
    top = rec.top_k(state, 10)

**What the model reads.** Like evaluation, the model reads the last ``data.max_len`` events
of a history, left-padded (the transformer's positions are those of training and
evaluation). A Mamba run can instead read a whole history recurrently
(``full_history=True``); it is off by default so that both backbones see the same window.

**New events.** :meth:`Recommender.observe` adds one event. For a recurrent backbone
(Mamba) it is one ``model.step`` on the carried state — O(1) work per event, and the state
keeps everything it has read: the encoded window plus every observed event, so its
context grows past ``max_len`` (it equals encoding that extended history with
``full_history=True``). For the transformer it re-encodes the last ``max_len`` events.

**Scores** are the model's logits, ``hidden · item_table[i]`` (the softmax over the catalog
is monotone in them); ties go to the lower item index. Item 0 (padding) is never
recommended; ``exclude`` removes further items (e.g. the history: seen-item filtering).

**Ids.** The store maps original item and user ids to indices (item 1..n_items, user
0..n_users-1; ``item_ids.npy`` / ``user_ids.npy``); :meth:`Recommender.item_indices` and
:meth:`Recommender.user_history` take original ids (as strings or ints), results carry
original ids. An unknown id is a :class:`~srt_jax.errors.DataError` that names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from srt_jax.config import RunConfig
from srt_jax.data.splits import training_range
from srt_jax.errors import ConfigError, DataError
from srt_jax.models.factory import backbone_entry, shape_label
from srt_jax.train.losses import scores
from srt_jax.train.run_dir import RunDirectory
from srt_jax.train.run_eval import RestoredRun, restore_best

_SCORE_BUDGET = 1 << 24
"""Float32 scores a batched top-k call may hold at once (rows x catalog): 64 MiB."""
_MIN_EXCLUDE = 64
"""The narrowest exclusion list compiled (lists are padded to powers of two from here)."""


def _bucket(n: int, floor: int) -> int:
    """The smallest power of two that is >= n and >= ``floor``."""
    return max(floor, 1 << max(0, math.ceil(math.log2(max(1, n)))))


def is_recurrent(model: Any) -> bool:
    """Whether a backbone (class or instance) runs one event at a time
    (:class:`srt_jax.models.backbone.RecurrentBackbone`)."""
    return callable(getattr(model, "step", None)) and callable(getattr(model, "init_cache", None))


def _check_full_history(config: RunConfig) -> None:
    if not is_recurrent(backbone_entry(config.model).build):
        raise ConfigError(
            f"--full-history needs a recurrent backbone (model.backbone: mamba); this run's "
            f"backbone is {config.model.backbone}, which reads the last data.max_len = "
            f"{config.data.max_len} events"
        )


class IdIndex:
    """Original ids of a store's items or users and their indices.

    Args:
      ids: the store's id array (``item_ids()`` or ``user_ids()``): integers or strings.
      first: the first real entry, whose index is ``first`` (1 for items: entry 0 is the
        padding sentinel; 0 for users).
    """

    def __init__(self, ids: np.ndarray, first: int) -> None:
        self.ids = np.asarray(ids)
        real = self.ids[first:]
        self._order = np.argsort(real, kind="stable")
        self._sorted = real[self._order]
        self._first = first
        self._integer = self.ids.dtype.kind in "iu"

    def lookup(self, tokens: Sequence[str | int]) -> np.ndarray:
        """int64 indices of ``tokens`` (original ids), -1 for ids not in the store."""
        if self._integer:
            values = np.array([_as_int(t) for t in tokens], dtype=object)
            known = np.array([v is not None for v in values], bool)
            query = np.where(known, values, 0).astype(np.int64)
        else:
            query = np.array([str(t) for t in tokens], dtype=self._sorted.dtype)
            known = np.array([str(t) == q for t, q in zip(tokens, query, strict=True)], bool)
        if len(self._sorted) == 0:
            return np.full(len(tokens), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, query), len(self._sorted) - 1)
        found = known & (self._sorted[pos] == query)
        return np.where(found, self._order[pos] + self._first, -1).astype(np.int64)

    def original(self, indices: np.ndarray) -> list[int | str]:
        """Original ids of ``indices`` as Python ints or strings (JSON-ready)."""
        return [v.item() if hasattr(v, "item") else v for v in self.ids[np.asarray(indices)]]


def _as_int(token: str | int) -> int | None:
    """``token`` as an int64 value, or None when it is not one."""
    try:
        value = int(str(token).strip())
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


@dataclass(frozen=True)
class State:
    """What a recommender holds after a history (immutable: :meth:`Recommender.observe`
    returns a new one).

    Attributes:
      seen: int32 item indices of every event so far (the history, then observed events);
        pass it as ``exclude`` to filter seen items.
      context: how many of them the hidden state reads (the window, or all of them).
      hidden: float ``[D]``: the model's last hidden state, which scores the next item.
      cache: the recurrent state (batch of one row) for a recurrent backbone, else None.
    """

    seen: np.ndarray
    context: int
    hidden: jax.Array
    cache: Any = None


@dataclass(frozen=True)
class TopK:
    """Ranked items: ``indices`` (store indices, best first), ``ids`` (original ids) and
    ``scores`` (float logits). Fewer than k when exclusions leave fewer items."""

    indices: np.ndarray
    ids: list[int | str]
    scores: np.ndarray

    def as_json(self) -> list[dict[str, Any]]:
        """``[{"item": original id, "score": float}, ...]``."""
        return [
            {"item": item, "score": float(score)}
            for item, score in zip(self.ids, self.scores, strict=True)
        ]


class Recommender:
    """Top-k next items from a trained run's best-validation checkpoint (module docstring).

    Args:
      restored: the rebuilt run and its restored parameters.
      full_history: a recurrent (Mamba) run reads whole histories instead of their last
        ``data.max_len`` events.

    Raises:
      ConfigError: ``full_history`` for a backbone that is not recurrent.
    """

    def __init__(self, restored: RestoredRun, *, full_history: bool = False) -> None:
        parts = restored.parts
        config = parts.config
        self.run_id = restored.run_id
        self.step = restored.step  # the restored checkpoint
        self.checkpoint = restored.checkpoint  # which one and why, in words
        self.backbone = config.model.backbone
        self.shape = shape_label(config.model)
        self.max_len = config.data.max_len
        self.store, self.split = parts.store, parts.split
        self.n_items = parts.store.n_items
        model = parts.model
        self.recurrent = is_recurrent(model)
        if full_history:
            _check_full_history(config)
        self.full_history = full_history
        model.eval()
        self._graphdef, _, self._rest = nnx.split(model, nnx.Param, ...)
        self._params = restored.params
        self.items = IdIndex(parts.store.item_ids(), first=1)
        self.users = IdIndex(parts.store.user_ids(), first=0)
        self._heldout = np.sort(np.asarray(parts.split.heldout.user))
        self._encode_jit = jax.jit(self._encode_fn)
        self._observe_jit = jax.jit(self._observe_fn)
        self._top_k_jit = jax.jit(self._top_k_fn, static_argnames="k")
        self.batch_rows = max(1, min(64, _SCORE_BUDGET // (self.n_items + 1)))

    @classmethod
    def from_run_dir(
        cls, run_dir: str | Path, *, full_history: bool = False, progress: bool = False
    ) -> Recommender:
        """Build the run of ``run_dir`` and restore its best-validation checkpoint (once).

        Raises:
          TrainingError: no checkpoint, or one that does not match the run's model.
          ConfigError: ``full_history`` for a non-recurrent backbone, or a bad config.
        """
        if full_history:  # fail before the run is built
            _check_full_history(RunDirectory(run_dir).read_config())
        restored = restore_best(run_dir, purpose="recommend from", progress=progress)
        return cls(restored, full_history=full_history)

    # ------------------------------------------------------------------ jitted kernels

    def _net(self, params: nnx.State, rest: nnx.State) -> Any:
        return nnx.merge(self._graphdef, params, rest)

    def _encode_fn(self, params, rest, windows_BxL):
        """``(cache or None, hidden_BxD)`` after reading each left-padded row."""
        net = self._net(params, rest)
        if not self.recurrent:
            return None, net.last_hidden(windows_BxL)

        def read(cache, items_B):
            cache, _ = net.step(cache, items_B)
            return cache, None

        # padding (item 0) leaves the state unchanged, so left-padded rows start at zero
        cache, _ = jax.lax.scan(read, net.init_cache(windows_BxL.shape[0]), windows_BxL[:, :-1].T)
        return net.step(cache, windows_BxL[:, -1])

    def _observe_fn(self, params, rest, cache, items_B):
        return self._net(params, rest).step(cache, items_B)

    def _top_k_fn(self, params, rest, hidden_BxD, exclude_BxE, *, k):
        net = self._net(params, rest)
        scores_BxV = scores(hidden_BxD, net.item_table())
        rows_Bx1 = jnp.arange(scores_BxV.shape[0])[:, None]
        scores_BxV = scores_BxV.at[:, 0].set(-jnp.inf)  # padding
        scores_BxV = scores_BxV.at[rows_Bx1, exclude_BxE].set(-jnp.inf)  # 0 = no exclusion
        return jax.lax.top_k(scores_BxV, k)

    # ------------------------------------------------------------------ ids and histories

    def item_indices(self, ids: Sequence[str | int], where: str = "") -> np.ndarray:
        """int32 store indices of original item ids.

        Raises:
          DataError: naming the ids that are not in the run's catalog (``where`` prefixes
            the message, e.g. a file and line).
        """
        indices = self.items.lookup(ids)
        unknown = [str(t) for t, i in zip(ids, indices, strict=True) if i < 0]
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            noun = "item id" if len(unknown) == 1 else "item ids"
            verb = "is" if len(unknown) == 1 else "are"
            raise DataError(
                f"{where}{noun} {shown}{more} {verb} not in the run's catalog "
                f"({self.n_items} items of the store {self.store.path})"
            )
        return indices.astype(np.int32)

    def user_history(self, user_id: str | int) -> tuple[np.ndarray, str]:
        """``(item indices, which part)`` of a store user's history that serving reads:
        for a training user, the part before its valid and test targets (what the model
        trained on); for a held-out user (never trained on), its whole history.

        Raises:
          DataError: the user is not in the run's store.
        """
        (user,) = self.users.lookup([user_id])
        if user < 0:
            raise DataError(
                f"user id {str(user_id)!r} is not a user of the run's store "
                f"({self.store.n_users} users in {self.store.path})"
            )
        pos = np.searchsorted(self._heldout, user)
        if pos < len(self._heldout) and self._heldout[pos] == user:
            history = np.asarray(self.store.history(int(user)), np.int32)
            return history, "whole history (a held-out user of the run's split, never trained on)"
        start, end = training_range(self.store, self.split, int(user))
        trained = (
            "" if np.isin(user, self.split.train.user) else "; not among the run's training users"
        )
        return (
            np.asarray(self.store.items[start:end], np.int32),
            f"training part of the history (before its valid/test targets{trained})",
        )

    def _check_history(self, history: np.ndarray, where: str = "") -> np.ndarray:
        history = np.asarray(history, np.int32).reshape(-1)
        if len(history) == 0:
            raise DataError(f"{where}empty history: at least one item is needed")
        if history.min() < 1 or history.max() > self.n_items:
            raise DataError(f"{where}item indices must lie in 1..{self.n_items}")
        return history

    def context_of(self, n_events: int) -> int:
        """How many of a history's ``n_events`` events :meth:`encode` reads."""
        return n_events if self.full_history else min(n_events, self.max_len)

    def _windows(self, histories: Sequence[np.ndarray], rows: int) -> np.ndarray:
        """int32 ``[rows, W]``: each history's read events, left-padded (padding rows are
        one item, read and discarded)."""
        reads = [h[len(h) - self.context_of(len(h)) :] for h in histories]
        width = self.max_len
        if self.full_history:
            width = _bucket(max(len(r) for r in reads), self.max_len)
        windows = np.zeros((rows, width), np.int32)
        windows[len(reads) :, -1] = 1
        for row, read in enumerate(reads):
            windows[row, width - len(read) :] = read
        return windows

    # ------------------------------------------------------------------ serving

    def encode(self, history: np.ndarray) -> State:
        """The state after ``history`` (item indices, oldest first; non-empty)."""
        history = self._check_history(history)
        cache, hidden = self._encode_jit(self._params, self._rest, self._windows([history], 1))
        return State(history, self.context_of(len(history)), hidden[0], cache)

    def observe(self, state: State, item: int) -> State:
        """The state after one more event ``item`` (an index): a recurrent step for a
        recurrent backbone, else the last ``max_len`` events re-encoded."""
        item = int(item)
        if not 1 <= item <= self.n_items:
            raise DataError(f"item index {item} must lie in 1..{self.n_items}")
        seen = np.append(state.seen, np.int32(item))
        if self.recurrent:
            cache, hidden = self._observe_jit(
                self._params, self._rest, state.cache, np.array([item], np.int32)
            )
            return State(seen, state.context + 1, hidden[0], cache)
        window = self._windows([seen[-self.max_len :]], 1)
        _, hidden = self._encode_jit(self._params, self._rest, window)
        return State(seen, min(len(seen), self.max_len), hidden[0], None)

    def top_k(self, state: State, k: int, exclude: np.ndarray | None = None) -> TopK:
        """The ``k`` best next items after ``state``, never an item of ``exclude`` (indices,
        e.g. ``state.seen``)."""
        return self._top_k(state.hidden[None], 1, k, [exclude])[0]

    def recommend_many(
        self, histories: Sequence[np.ndarray], k: int, *, filter_seen: bool = False
    ) -> list[TopK]:
        """Top-k after each of many histories, ``batch_rows`` histories per device call
        (the same as ``top_k(encode(h), k, h if filter_seen else None)`` for each)."""
        histories = [self._check_history(h) for h in histories]
        out: list[TopK] = []
        rows = self.batch_rows
        for first in range(0, len(histories), rows):
            chunk = histories[first : first + rows]
            _, hidden_BxD = self._encode_jit(self._params, self._rest, self._windows(chunk, rows))
            exclude = list(chunk) if filter_seen else [None] * len(chunk)
            out.extend(self._top_k(hidden_BxD, len(chunk), k, exclude))
        return out

    def _top_k(
        self, hidden_BxD: jax.Array, n_rows: int, k: int, exclude: list[np.ndarray | None]
    ) -> list[TopK]:
        """Top-k of the first ``n_rows`` rows of ``hidden_BxD`` (the rest are padding)."""
        if k < 1:
            raise DataError(f"top-k must be at least 1, got {k}")
        k = min(k, self.n_items + 1)
        lists = [np.zeros(0, np.int32) if e is None else np.asarray(e) for e in exclude]
        width = _bucket(max(len(e) for e in lists), _MIN_EXCLUDE)
        exclude_BxE = np.zeros((hidden_BxD.shape[0], width), np.int32)
        for row, items in enumerate(lists):
            exclude_BxE[row, : len(items)] = items
        values, indices = jax.device_get(
            self._top_k_jit(self._params, self._rest, hidden_BxD, exclude_BxE, k=k)
        )
        ranked = []
        for row in range(n_rows):
            keep = np.isfinite(values[row])
            idx = indices[row][keep].astype(np.int64)
            ranked.append(TopK(idx, self.items.original(idx), values[row][keep]))
        return ranked

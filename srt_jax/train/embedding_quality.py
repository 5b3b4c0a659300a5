"""Quality of a trained run's item embeddings (``eval.embedding_quality``).

Netflix's sliding-window study (Joshi et al. 2024) claims that training on windows from the
whole history improves the item embeddings learnt in pre-training, over the catalog on
average. The embeddings are the rows of the output item table (``model.item_table()``,
row 0 padding); neighbours are by cosine similarity, an item never its own neighbour.
Measured, each as an average over the catalog's items and per popularity bucket:

- ``cooccurrence_recall@k`` (any store): for every consecutive pair ``i -> j`` (``i != j``)
  in the held-out users' histories (never trained on), whether ``j`` is among the ``k``
  nearest neighbours of ``i``; averaged per item ``i`` over its pairs, then over items.
- ``topic_agreement@k`` (synthetic stores): the share of an item's ``k`` nearest
  neighbours that have its generator topic (:mod:`srt_jax.data.synthetic`); chance is about
  1 / topics.
- ``feature_agreement@k`` (stores with item features, ``eval.embedding_feature``): over the
  items that have a value of the chosen feature column (``class``: MovieLens genres), the
  share of an item's ``k`` nearest neighbours that share at least one value with it (a
  neighbour without the column never agrees); chance is the same share for random pairs of
  distinct items, estimated from :data:`CHANCE_PAIRS` seeded pairs.

Popularity buckets by training interactions: ``head`` = the most popular items that make
up the first half of the training interactions, ``torso`` = the next 30 %, ``tail`` = the
rest (items never trained on included). With more than :data:`MAX_QUERY_ITEMS` items, that
many query items are drawn (seeded) and their neighbours searched over the whole catalog.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp

from srt_jax.data.item_features import ItemFeatures
from srt_jax.data.splits import Segments
from srt_jax.data.store import SequenceStore
from srt_jax.data.synthetic.generator import SyntheticGenerator
from srt_jax.data.synthetic.options import GeneratorOptions
from srt_jax.errors import ConfigError

K = 10
MAX_QUERY_ITEMS = 20_000
BUCKET_SHARES = (("head", 0.5), ("torso", 0.8), ("tail", 1.0))
"""Bucket -> cumulative share of training interactions it ends at."""
_CHUNK = 1024
_QUERY_STREAM = 0xE3B
_PAIR_STREAM = 0xFA1
CHANCE_PAIRS = 200_000


def nearest_neighbours(table_VxD: np.ndarray, query_Q: np.ndarray, k: int) -> np.ndarray:
    """int64 [Q, k]: the ``k`` items (1..V-1, never the query itself) most cosine-similar
    to each query item, most similar first."""
    norms = np.linalg.norm(table_VxD, axis=1, keepdims=True)
    unit = table_VxD / np.maximum(norms, 1e-12)
    out = np.empty((len(query_Q), k), np.int64)
    for first in range(0, len(query_Q), _CHUNK):
        query = query_Q[first : first + _CHUNK]
        sims = unit[query] @ unit.T
        sims[:, 0] = -np.inf
        sims[np.arange(len(query)), query] = -np.inf
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[first : first + len(query)] = np.take_along_axis(top, order, axis=1)
    return out


def popularity_buckets(counts: np.ndarray) -> np.ndarray:
    """object [n_items + 1]: the bucket name of each item (entry 0 unused) from its training
    interaction count (see the module docstring)."""
    order = np.argsort(-counts[1:], kind="stable") + 1
    cumulative = np.cumsum(counts[order]) / max(counts.sum(), 1)
    bucket = np.full(len(counts), BUCKET_SHARES[-1][0], object)
    bucket[0] = ""
    before = np.concatenate([[0.0], cumulative[:-1]])
    for name, end in reversed(BUCKET_SHARES[:-1]):
        bucket[order[before < end]] = name
    return bucket


def _averaged(per_item: np.ndarray, items: np.ndarray, bucket: np.ndarray) -> dict[str, Any]:
    """The mean of ``per_item`` (one value per entry of ``items``) overall and per bucket."""
    result: dict[str, Any] = {"all": float(per_item.mean()) if per_item.size else None}
    for name, _ in BUCKET_SHARES:
        chosen = bucket[items] == name
        result[name] = float(per_item[chosen].mean()) if chosen.any() else None
    result["items"] = int(per_item.size)
    return result


def cooccurrence_recall(
    neighbours_QxK: np.ndarray,
    query_Q: np.ndarray,
    items: np.ndarray,
    heldout: Segments,
    bucket: np.ndarray,
) -> dict[str, Any]:
    """``cooccurrence_recall@k`` (module docstring) of the query items that have pairs."""
    n_slots = len(bucket)
    table = np.full((n_slots, neighbours_QxK.shape[1]), -1, np.int64)
    table[query_Q] = neighbours_QxK
    hits = np.zeros(n_slots)
    pairs = np.zeros(n_slots)
    for start, end in zip(heldout.start, heldout.end, strict=True):
        history = np.asarray(items[start:end], np.int64)
        first, then = history[:-1], history[1:]
        keep = (first != then) & (table[first, 0] >= 0)
        first, then = first[keep], then[keep]
        np.add.at(hits, first, (table[first] == then[:, None]).any(axis=1))
        np.add.at(pairs, first, 1.0)
    measured = np.flatnonzero(pairs > 0)
    return _averaged(hits[measured] / pairs[measured], measured, bucket)


def topic_agreement(
    neighbours_QxK: np.ndarray, query_Q: np.ndarray, topic_of: np.ndarray, bucket: np.ndarray
) -> dict[str, Any]:
    """``topic_agreement@k`` (module docstring) of the query items."""
    per_item = (topic_of[neighbours_QxK] == topic_of[query_Q][:, None]).mean(axis=1)
    result = _averaged(per_item, query_Q, bucket)
    result["chance"] = float(np.sum(np.bincount(topic_of[1:]) ** 2) / (len(topic_of) - 1) ** 2)
    return result


def feature_membership(store: SequenceStore, column: str) -> sp.csr_matrix:
    """bool CSR [n_items + 1, values]: which values of feature ``column`` (tokens
    ``column=value``) each item has (row 0, padding, has none).

    Raises:
      ConfigError: the store has no item features, or none with that column (the error
        names the store's columns).
    """
    features: ItemFeatures | None = store.item_features()
    if features is None:
        raise ConfigError(
            f"eval.embedding_feature = {column!r} needs item features, but the store at "
            f"{store.path} has none (prepare it with --item-features FILE)",
            key="eval.embedding_feature",
        )
    prefix = f"{column}="
    chosen = np.array([token.startswith(prefix) for token in features.vocab])
    if not chosen.any():
        columns = sorted({t.split("=", 1)[0] for t in features.vocab if "=" in t})
        raise ConfigError(
            f"eval.embedding_feature = {column!r}: the item features of {store.path} have "
            f"no {prefix}... tokens; their columns are {columns}",
            key="eval.embedding_feature",
        )
    value_of = np.cumsum(chosen) - 1  # token id -> column of the membership matrix
    rows = np.repeat(np.arange(len(features.offsets) - 1), np.diff(features.offsets))
    keep = chosen[features.tokens]
    shape = (len(features.offsets) - 1, int(chosen.sum()))
    data = np.ones(int(keep.sum()), bool)
    matrix = sp.csr_matrix((data, (rows[keep], value_of[features.tokens[keep]])), shape=shape)
    matrix.sum_duplicates()
    return matrix.astype(bool)


def _share_a_value(members: sp.csr_matrix, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """bool [P]: whether items ``left[p]`` and ``right[p]`` share a value."""
    return np.asarray(members[left].multiply(members[right]).sum(axis=1)).ravel() > 0


def feature_agreement(
    neighbours_QxK: np.ndarray,
    query_Q: np.ndarray,
    members: sp.csr_matrix,
    bucket: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """``feature_agreement@k`` (module docstring) of the query items that have a value."""
    has_value = np.asarray(members.sum(axis=1)).ravel() > 0
    keep = has_value[query_Q]
    query, neighbours = query_Q[keep], neighbours_QxK[keep]
    agrees = np.stack(
        [_share_a_value(members, query, neighbours[:, j]) for j in range(neighbours.shape[1])],
        axis=1,
    )
    result = _averaged(agrees.mean(axis=1), query, bucket)
    rng = np.random.default_rng([seed, _PAIR_STREAM])
    left = rng.choice(query, CHANCE_PAIRS)
    right = rng.integers(1, members.shape[0] - 1, CHANCE_PAIRS)
    right = right + (right >= left)  # a uniform other item, never the item itself
    result["chance"] = float(_share_a_value(members, left, right).mean())
    return result


def synthetic_topics(store: SequenceStore) -> np.ndarray | None:
    """int64 [n_items + 1]: the generator topic of each item of a synthetic store (None for
    any other store)."""
    generator = store.meta.get("generator")
    if store.meta.get("source") != "synthetic" or not generator:
        return None
    names = {f.name for f in dataclasses.fields(GeneratorOptions)}
    options = GeneratorOptions(**{k: v for k, v in generator.items() if k in names})
    topics = SyntheticGenerator(generator["items"], options, generator["seed"]).topic_of
    ids = np.asarray(store.item_ids()).astype(np.int64)  # the generator's item of each index
    ids[0] = 0
    return topics[ids]


def embedding_quality(
    table_VxD: np.ndarray,
    store: SequenceStore,
    heldout: Segments,
    train_counts: np.ndarray,
    *,
    k: int = K,
    seed: int = 0,
    feature: tuple[str, sp.csr_matrix] | None = None,
) -> dict[str, Any]:
    """The measures of the module docstring for one item table.

    Args:
      table_VxD: float [n_items + 1, D], the output item table (row 0 padding).
      store: the run's store (histories, and the generator's topics when synthetic).
      heldout: the held-out users' whole histories.
      train_counts: int64 [n_items + 1], training interactions per item.
      k: neighbours per item.
      seed: draws the query items when the catalog is larger than MAX_QUERY_ITEMS, and
        the pairs that estimate ``feature_agreement``'s chance level.
      feature: (column, :func:`feature_membership` of it), to measure
        ``feature_agreement``.

    Returns:
      ``{"k", "buckets", "cooccurrence_recall": {...}, "topic_agreement": {...},
      "feature_agreement": {...}}`` (topics only for synthetic stores, features only with
      ``feature``); each measure has ``all``, ``head``, ``torso``, ``tail`` (None for an
      empty bucket) and ``items`` (how many items it averages).
    """
    table = np.asarray(table_VxD, np.float32)
    n_items = table.shape[0] - 1
    query = np.arange(1, n_items + 1)
    if n_items > MAX_QUERY_ITEMS:
        rng = np.random.default_rng([seed, _QUERY_STREAM])
        query = np.sort(rng.choice(query, MAX_QUERY_ITEMS, replace=False))
    neighbours_QxK = nearest_neighbours(table, query, min(k, n_items - 1))
    bucket = popularity_buckets(np.asarray(train_counts))
    result: dict[str, Any] = {
        "k": int(neighbours_QxK.shape[1]),
        "buckets": {name: int(np.sum(bucket == name)) for name, _ in BUCKET_SHARES},
        "cooccurrence_recall": cooccurrence_recall(
            neighbours_QxK, query, store.items, heldout, bucket
        ),
    }
    topics = synthetic_topics(store)
    if topics is not None:
        result["topic_agreement"] = topic_agreement(neighbours_QxK, query, topics, bucket)
    if feature is not None:
        column, members = feature
        result["feature_agreement"] = {
            "column": column,
            **feature_agreement(neighbours_QxK, query, members, bucket, seed),
        }
    return result

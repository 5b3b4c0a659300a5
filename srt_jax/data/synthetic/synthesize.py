"""Write a synthetic log as a sequence store, with its oracle loss in ``meta.json``.

The generator's chunks go straight into the store's memory maps, so memory stays bounded
whatever the size.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from srt_jax.data.item_features import from_token_lists
from srt_jax.data.store import SequenceStore, create_store
from srt_jax.data.synthetic.generator import (
    LENGTH_SIGMA,
    MEAN_GAP_S,
    N_FAVOURITES,
    N_SUCCESSORS,
    START_SPAN_S,
    START_TIME_S,
    SyntheticGenerator,
)
from srt_jax.data.synthetic.options import generator_options
from srt_jax.errors import ConfigError
from srt_jax.progress import progress_bar

_PROGRESS_MIN_INTERACTIONS = 1_000_000


def synthesize_store(
    out: str | Path,
    *,
    users: int,
    items: int,
    mean_length: float,
    seed: int,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> SequenceStore:
    """Generate a synthetic log and write it as a sequence store (atomically).

    Args:
      out: the store directory to create.
      users: number of users (>= 1).
      items: catalog size (items are 1..items).
      mean_length: mean history length (> min_length); interactions ~ users x mean_length.
      seed: the random seed; the store is a pure function of all arguments but ``out``,
        ``overwrite`` and ``progress``.
      overwrite: replace an existing store at ``out``.
      progress: show a progress bar (for stores of >= 1e6 interactions).
      **options: fields of :class:`GeneratorOptions` (zipf_exponent, topics, transition_prob,
        interest_weight, interest_drift, long_term_early, long_term_late,
        long_term_half_life, min_length, chunk_users, feature_tokens, topic_tokens,
        feature_noise, item_id_offset).

    Returns:
      The opened store. ``meta.json`` holds ``source: "synthetic"``, ``generator`` (every
      parameter), ``oracle_loss`` (mean nats per target position), ``oracle_loss_stderr``
      and ``oracle_targets``.
    """
    opts = generator_options(**options)
    if users < 1:
        raise ConfigError(f"users = {users!r} is invalid: expected an integer >= 1", key="users")
    if items < 1:
        raise ConfigError(f"items = {items!r} is invalid: expected an integer >= 1", key="items")
    generator = SyntheticGenerator(items, opts, seed)
    opts = generator.options
    lengths = generator.lengths(users, mean_length)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n_interactions = int(offsets[-1])
    nll_sum = nll_sq_sum = 0.0
    n_targets = 0
    meta = {
        "source": "synthetic",
        "generator": {
            "users": users,
            "items": items,
            "mean_length": mean_length,
            "seed": seed,
            **dataclasses.asdict(opts),
            "successors_per_item": N_SUCCESSORS,
            "favourite_topics": N_FAVOURITES,
            "length_sigma": LENGTH_SIGMA,
            "start_time_s": START_TIME_S,
            "start_span_s": START_SPAN_S,
            "mean_gap_s": MEAN_GAP_S,
        },
    }
    # create_store reads ``record`` when the block ends: the oracle figures are added inside.
    record: dict[str, Any] = {}
    with create_store(out, users, n_interactions, items, record, overwrite=overwrite) as arrays:
        arrays.offsets[:] = offsets
        bar = progress_bar(
            n_interactions,
            "synth",
            "interactions",
            disable=not progress or n_interactions < _PROGRESS_MIN_INTERACTIONS,
        )
        with bar:
            for chunk, u0 in enumerate(range(0, users, opts.chunk_users)):
                u1 = min(users, u0 + opts.chunk_users)
                result = generator.sample_chunk(lengths[u0:u1], chunk)
                arrays.items[offsets[u0] : offsets[u1]] = result.items
                arrays.timestamps[offsets[u0] : offsets[u1]] = result.timestamps
                nll_sum += result.nll_sum
                nll_sq_sum += result.nll_sq_sum
                n_targets += result.n_targets
                bar.update(int(offsets[u1] - offsets[u0]))
        mean = nll_sum / max(n_targets, 1)
        variance = max(nll_sq_sum / max(n_targets, 1) - mean**2, 0.0)
        record.update(
            meta,
            oracle_loss=mean,
            oracle_loss_stderr=math.sqrt(variance / max(n_targets, 1)),
            oracle_targets=n_targets,
            mean_length_realised=n_interactions / users,
        )
        item_ids = np.arange(items + 1, dtype=np.int64) + opts.item_id_offset
        item_ids[0] = -1
        arrays.item_ids = item_ids
        arrays.user_ids = np.arange(users, dtype=np.int64)
        if opts.feature_tokens:
            arrays.item_features = from_token_lists(generator.item_tokens())
            arrays.item_features_meta = {
                "source": "synthetic",
                "items_with_features": items,
                "items_without_features": 0,
            }
    return SequenceStore(out)

"""Odds-ratio preference optimisation (ORPO; Hong et al. 2024) for next-item models.

ORPO adds to the supervised loss a term that widens the gap between the odds of the
chosen answer and those of a rejected one:

    L = L_next_item + λ · mean over pairs of -log σ(log odds(chosen) - log odds(rejected)),

with odds(y) = p(y) / (1 - p(y)) and p the model's softmax over the n_items real items of
the catalog (row 0, padding, is never a candidate) at a position. Chosen is the true next
item; the rejected item is picked by :class:`~srt_jax.config.ORPOConfig`'s ``rejected``
rule (:func:`rejected_items`). ``log odds = log p - log(1 - p)`` is computed as
``log p - log(-expm1(log p))`` with log p capped at :data:`LOG_P_MAX` (so p = 1 in float32
gives a finite value, and no gradient beyond it).

The catalog softmax is scored chunk by chunk of positions (:func:`~srt_jax.train.losses.
chunk_length`), each chunk under ``jax.checkpoint``, so the ``[positions, n_items]``
logits never exist whole, in the forward or the backward pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from srt_jax.config import ORPOConfig
from srt_jax.train.losses import chunk_length, sample_negatives, scores, to_chunks

LOG_P_MAX = -(2.0**-20)
"""The largest log-probability the log odds use (p = 1 - 2^-20 or so)."""


@dataclass(frozen=True)
class ORPOTerm:
    """Sums over the pairs of a batch (float32 scalars).

    Attributes:
      loss_sum: Σ -log σ(log odds ratio) over pairs.
      ratio_sum: Σ log odds(chosen) - log odds(rejected) over pairs.
      pairs: the number of pairs (positions with a rejected item).
    """

    loss_sum: jax.Array
    ratio_sum: jax.Array
    pairs: jax.Array


def log_odds(log_p: jax.Array) -> jax.Array:
    """log(p / (1 - p)) from log p (capped at :data:`LOG_P_MAX`)."""
    log_p = jnp.minimum(log_p, LOG_P_MAX)
    return log_p - jnp.log(-jnp.expm1(log_p))


def rejected_items(
    cfg: ORPOConfig,
    key: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    n_items: int,
    *,
    ratings_BxL: jax.Array | None = None,
    log_q_V: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The rejected item of each position and which positions form pairs.

    Args:
      cfg: the ``train.orpo`` section (its ``rejected`` rule).
      key: randomness of the draw.
      targets_BxL: int32 next items; mask_BxL: bool, positions that count.
      n_items: the catalog size (items 1..n_items).
      ratings_BxL: float32 ratings of the targets (``disliked`` only).
      log_q_V: ``[n_items + 1]`` log probabilities of popularity draws (``popularity`` only).

    Returns:
      ``(rejected_BxL, pairs_BxL)``: int32 item indices (0 for ``hard``, whose item is the
      highest-scored non-target, picked while scoring) and bool, the positions that form a
      pair. A rejected item is never the position's target.
    """
    if cfg.rejected == "hard":
        return jnp.zeros_like(targets_BxL), mask_BxL
    if cfg.rejected == "uniform":  # uniform over the n_items - 1 items other than the target
        draw_BxL = jax.random.randint(key, targets_BxL.shape, 1, n_items, dtype=jnp.int32)
        return draw_BxL + (draw_BxL >= targets_BxL), mask_BxL
    if cfg.rejected == "popularity":  # the first of two draws that is not the target
        if log_q_V is None:
            raise ValueError("train.orpo.rejected = popularity needs item counts (log_q_V)")
        first_BxL, second_BxL = sample_negatives(key, log_q_V, (2, *targets_BxL.shape))
        rejected_BxL = jnp.where(first_BxL == targets_BxL, second_BxL, first_BxL)
        return rejected_BxL, mask_BxL & (rejected_BxL != targets_BxL)
    if ratings_BxL is None:
        raise ValueError("train.orpo.rejected = disliked needs the targets' ratings")
    disliked_BxL = mask_BxL & (ratings_BxL <= cfg.disliked_max_rating)
    noise_BxL = jax.random.uniform(key, targets_BxL.shape)
    pick_B = jnp.argmax(jnp.where(disliked_BxL, noise_BxL, -1.0), axis=1)
    rejected_B = jnp.take_along_axis(targets_BxL, pick_B[:, None], axis=1)[:, 0]
    rejected_BxL = jnp.broadcast_to(rejected_B[:, None], targets_BxL.shape)
    liked_BxL = mask_BxL & (ratings_BxL > cfg.disliked_max_rating)
    pairs_BxL = liked_BxL & disliked_BxL.any(axis=1)[:, None] & (rejected_BxL != targets_BxL)
    return rejected_BxL, pairs_BxL


def orpo_term(
    hidden_BxLxD: jax.Array,
    item_table_VxD: jax.Array,
    targets_BxL: jax.Array,
    rejected_BxL: jax.Array,
    pairs_BxL: jax.Array,
    *,
    hard: bool,
) -> ORPOTerm:
    """The odds-ratio term of the pairs of a batch (see the module docstring).

    Args:
      hidden_BxLxD: model outputs; item_table_VxD: output item table (V = n_items + 1).
      targets_BxL: chosen items; rejected_BxL: rejected items (ignored when ``hard``).
      pairs_BxL: bool, the positions that count.
      hard: reject the highest-scored item other than the target (no gradient flows
        through the choice).
    """
    B, L, _ = hidden_BxLxD.shape
    items_CxD = item_table_VxD[1:]
    chunk_len = chunk_length(B, L, items_CxD.shape[0])
    chosen_BxL = jnp.where(pairs_BxL, targets_BxL - 1, 0)
    other_BxL = jnp.where(pairs_BxL, rejected_BxL - 1, 0)

    @jax.checkpoint
    def chunk(sums: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
        h_TxD, chosen_T, other_T, weight_T = xs
        logits_TxC = scores(h_TxD, items_CxD)
        lse_T = jax.nn.logsumexp(logits_TxC, axis=1)
        if hard:
            is_chosen_TxC = jnp.arange(logits_TxC.shape[1]) == chosen_T[:, None]
            other_T = jnp.argmax(jnp.where(is_chosen_TxC, -jnp.inf, logits_TxC), axis=1)

        def log_p(labels_T: jax.Array) -> jax.Array:
            return jnp.take_along_axis(logits_TxC, labels_T[:, None], axis=1)[:, 0] - lse_T

        ratio_T = log_odds(log_p(chosen_T)) - log_odds(log_p(other_T))
        loss_T = jax.nn.softplus(-ratio_T)
        return sums + jnp.stack([(weight_T * loss_T).sum(), (weight_T * ratio_T).sum()]), None

    by_chunk = functools.partial(to_chunks, chunk_len=chunk_len)
    xs = (
        by_chunk(hidden_BxLxD),
        by_chunk(chosen_BxL),
        by_chunk(other_BxL),
        by_chunk(pairs_BxL.astype(jnp.float32)),
    )
    sums, _ = jax.lax.scan(chunk, jnp.zeros(2, jnp.float32), xs)
    return ORPOTerm(sums[0], sums[1], pairs_BxL.sum(dtype=jnp.float32))

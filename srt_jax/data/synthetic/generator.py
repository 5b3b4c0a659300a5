"""The synthetic generator: a next-item distribution with a known loss floor.

:class:`SyntheticGenerator` draws each user's next item from an explicit distribution over
the catalog, given a latent state:

- **Zipf popularity**: item ``i`` has weight ``pop_i ∝ rank_i ** -zipf_exponent`` (ranks a
  random permutation). Items are split evenly into ``topics`` topics; within topic ``k`` an
  item is drawn with ``q(i | k) = pop_i / sum_{j in k} pop_j``, and topic ``k`` has global
  popularity ``P_k = sum_{i in k} pop_i``.
- **Drifting interest**: each user has a current interest topic ``c_t``, drawn from ``P`` at
  the start and re-drawn from ``P`` with probability ``interest_drift`` before every later step.
- **Stable long-term preference**: each user has 3 favourite topics (drawn uniformly) with
  Dirichlet(1) weights, a topic distribution ``w_u`` that never changes. Its
  weight ``lambda_t = long_term_late + (long_term_early - long_term_late) * 2**(-t / h)``
  (``h = long_term_half_life`` interactions, ``t`` the 0-based position in the history) is
  large early in a history and small later: the preference shows mainly in OLDER history, yet
  still shapes every later step, so a model that reads old history can beat one that only
  sees a recent window.
- **Item-to-item transitions**: each item has ``4`` successors in its own topic (drawn
  uniformly) with Dirichlet(1) weights ``T(i, .)``; with probability ``transition_prob`` the
  next item is a successor of the previous one.

So at position ``t >= 1`` (``rho = transition_prob``, ``beta = interest_weight``)::

    pi_t(k)  = lambda_t * w_u(k) + (1 - lambda_t) * (beta * [k == c_t] + (1 - beta) * P_k)
    p_t(i)   = rho * T(x_{t-1}, i) + (1 - rho) * pi_t(topic(i)) * q(i | topic(i))

and at ``t = 0`` the transition term is absent (``rho`` taken as 0). The **oracle loss**
recorded in ``meta.json`` is ``mean_t -log p_t(x_t)`` (nats) over every target position
(``t = 1 .. n-1`` of every history): the cross-entropy of the generator's own next-item
distribution given its latent state, a floor for any model's per-token loss.

**Item features** (``feature_tokens > 0``): each item carries ``feature_tokens`` draws
(duplicates kept once) from its topic's own ``topic_tokens`` tokens ``tag=t<topic>_<j>`` or,
with probability ``feature_noise``, from ``topics`` shared noise tokens ``tag=noise_<j>``. The
token names depend on the topic index only, so two logs made with different seeds (and
``item_id_offset`` s) are two domains with disjoint catalogs whose features mean the same:
a model pre-trained on one can move to the other through the shared vocabulary. Features
do not change the next-item distribution (nor the oracle loss).

History lengths are ``min_length + rint(LogNormal)`` with mean ``mean_length``, drawn up front;
items are then generated chunk by chunk (``chunk_users`` users at a time, vectorised over the
users of a chunk, one step of every active user per numpy operation). Timestamps (int64
seconds) start uniformly over two years from 2020-09-13 and advance by exponential gaps of
mean one day (at least one second). Each chunk has its own random stream, so the output is a
pure function of ``(users, items, mean_length, seed, options)`` with ``chunk_users`` among
the options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from srt_jax.data.synthetic.options import GeneratorOptions
from srt_jax.errors import ConfigError

N_SUCCESSORS = 4
N_FAVOURITES = 3
LENGTH_SIGMA = 1.0
START_TIME_S = 1_600_000_000
START_SPAN_S = 2 * 365 * 86_400
MEAN_GAP_S = 86_400.0
_STREAM_TABLES, _STREAM_LENGTHS, _STREAM_CHUNK, _STREAM_FEATURES = 0, 1, 2, 3


@dataclass
class ChunkResult:
    """Items of one chunk of users, in user order, with the oracle loss terms.

    Attributes:
      items: int32 [sum(lengths)]: the chunk's histories concatenated.
      timestamps: int64 [sum(lengths)].
      nll_sum, nll_sq_sum: sum of -log p_t(x_t) (nats) and of its square over targets t >= 1.
      n_targets: number of target positions, sum(lengths - 1).
      interest: int32 [sum(lengths)] interest topic c_t at every position (trace only).
      favourites, favourite_weights: int64 / float64 [n_users, 3]: each user's long-term
        preference, ``w_u(k) = sum_j favourite_weights[u, j] * [favourites[u, j] == k]``
        (trace only).
    """

    items: np.ndarray
    timestamps: np.ndarray
    nll_sum: float
    nll_sq_sum: float
    n_targets: int
    interest: np.ndarray | None = None
    favourites: np.ndarray | None = None
    favourite_weights: np.ndarray | None = None


class SyntheticGenerator:
    """The catalog-level tables of the generator and the vectorised chunk sampler.

    Attributes (items are 1..n_items; index 0 of per-item arrays is unused padding):
      topic_of: int64 [n_items + 1] topic of each item.
      within_topic: float64 [n_items + 1] q(i | topic(i)).
      topic_pop: float64 [topics] P_k.
      successors: int32 [n_items + 1, 4] successor items of each item.
      successor_prob: float64 [n_items + 1, 4] their transition probabilities T(i, .).

    Draws use Walker alias tables (O(1) per draw): one over topics by ``P`` and one per topic
    over its items by ``q``.
    """

    def __init__(self, n_items: int, options: GeneratorOptions, seed: int) -> None:
        options = options.resolved(n_items)
        self.n_items = n_items
        self.options = options
        self.seed = seed
        rng = np.random.default_rng([seed, _STREAM_TABLES])
        k = options.topics
        rank = rng.permutation(n_items) + 1
        pop = np.zeros(n_items + 1)
        pop[1:] = rank.astype(np.float64) ** -options.zipf_exponent
        pop /= pop.sum()
        self.topic_of = np.zeros(n_items + 1, np.int64)
        self.topic_of[1:] = rng.permutation(np.arange(n_items) % k)
        self.topic_pop = np.bincount(self.topic_of[1:], weights=pop[1:], minlength=k)
        self.within_topic = pop / self.topic_pop[self.topic_of]
        self.within_topic[0] = 0.0
        self._topic_alias = _alias_table(self.topic_pop)
        # Items grouped by topic: topic k's members are _by_topic[_topic_off[k]:_topic_off[k+1]].
        self._by_topic = (np.argsort(self.topic_of[1:], kind="stable") + 1).astype(np.int32)
        self._topic_size = np.bincount(self.topic_of[1:], minlength=k)
        self._topic_off = np.concatenate([[0], np.cumsum(self._topic_size)])
        tables = [
            _alias_table(self.within_topic[self._by_topic[a:b]])
            for a, b in zip(self._topic_off[:-1], self._topic_off[1:], strict=True)
        ]
        self._item_accept = np.concatenate([accept for accept, _ in tables])
        self._item_alias = np.concatenate(
            [a + alias for a, (_, alias) in zip(self._topic_off[:-1], tables, strict=True)]
        )
        self.successors = self._topic_draw(
            np.repeat(self.topic_of, N_SUCCESSORS),
            rng.random((n_items + 1) * N_SUCCESSORS),
            by_popularity=False,
        ).reshape(n_items + 1, N_SUCCESSORS)
        self.successors[0] = 0
        self.successor_prob = rng.dirichlet(np.ones(N_SUCCESSORS), size=n_items + 1)
        # Slot thresholds, one contiguous row per slot boundary: slot = #{thresholds < u}.
        self._successor_cdf = np.ascontiguousarray(np.cumsum(self.successor_prob, axis=1)[:, :-1].T)

    def item_tokens(self) -> list[list[str]]:
        """Feature token strings of items 1..n_items (see the module docstring); empty lists
        when ``feature_tokens`` is 0."""
        opts = self.options
        if opts.feature_tokens == 0:
            return [[] for _ in range(self.n_items)]
        rng = np.random.default_rng([self.seed, _STREAM_FEATURES])
        shape = (self.n_items, opts.feature_tokens)
        noise = rng.random(shape) < opts.feature_noise
        own = rng.integers(0, opts.topic_tokens, shape)
        pool = rng.integers(0, opts.topics, shape)
        return [
            list(
                dict.fromkeys(
                    f"tag=noise_{p}" if is_noise else f"tag=t{topic}_{j}"
                    for is_noise, j, p in zip(noise[i], own[i], pool[i], strict=True)
                )
            )
            for i, topic in enumerate(self.topic_of[1:].tolist())
        ]

    def lengths(self, n_users: int, mean_length: float) -> np.ndarray:
        """int64 [n_users]: history lengths, min_length + rint(LogNormal) with the given mean."""
        min_length = self.options.min_length
        if not mean_length > min_length:
            raise ConfigError(
                f"mean_length = {mean_length!r} is invalid: expected a number > "
                f"min_length = {min_length}",
                key="mean_length",
            )
        rng = np.random.default_rng([self.seed, _STREAM_LENGTHS])
        mu = math.log(mean_length - min_length) - LENGTH_SIGMA**2 / 2
        extra = np.rint(rng.lognormal(mu, LENGTH_SIGMA, size=n_users))
        return min_length + extra.astype(np.int64)

    def _topic_draw(
        self, topic: np.ndarray, u: np.ndarray, *, by_popularity: bool = True
    ) -> np.ndarray:
        """int32 [m]: an item of each ``topic``, drawn by q(. | topic) or uniformly."""
        slot, frac = _split_uniform(u, self._topic_size[topic])
        index = self._topic_off[topic] + slot
        if by_popularity:
            index = np.where(frac < self._item_accept[index], index, self._item_alias[index])
        return self._by_topic[index]

    def _popular_topic(self, u: np.ndarray) -> np.ndarray:
        """int64 [m]: topics drawn from P by uniforms ``u``."""
        accept, alias = self._topic_alias
        slot, frac = _split_uniform(u, len(accept))
        return np.where(frac < accept[slot], slot, alias[slot])

    def sample_chunk(
        self, lengths: np.ndarray, chunk_index: int, *, trace: bool = False
    ) -> ChunkResult:
        """Generate the histories of one chunk of users (vectorised over its users).

        Args:
          lengths: int64 [n] history lengths of the chunk's users, in user order.
          chunk_index: selects the chunk's random stream ``(seed, 2, chunk_index)``.
          trace: also return the latent interest topics and long-term preferences.
        """
        opts = self.options
        rng = np.random.default_rng([self.seed, _STREAM_CHUNK, chunk_index])
        n = len(lengths)
        local_off = np.concatenate([[0], np.cumsum(lengths)])
        total = int(local_off[-1])
        favourites = rng.integers(0, opts.topics, size=(n, N_FAVOURITES))
        favourite_weights = rng.dirichlet(np.ones(N_FAVOURITES), size=n)
        # Users sorted by decreasing length: the users active at step t are a prefix.
        order = np.argsort(-lengths, kind="stable")
        base = local_off[:-1][order]
        fav, fav_w = favourites[order], favourite_weights[order]
        fav_cdf = np.cumsum(fav_w, axis=1)
        fav_cdf[:, -1] = 1.0
        n_active = n - np.searchsorted(
            np.sort(lengths), np.arange(int(lengths.max(initial=0))), side="right"
        )
        lam = opts.long_term_weight(np.arange(len(n_active)))
        rho, beta = opts.transition_prob, opts.interest_weight
        interest = self._popular_topic(rng.random(n))
        prev = np.zeros(n, np.int32)
        items = np.empty(total, np.int32)
        interest_trace = np.empty(total, np.int32) if trace else None
        nll_sum = nll_sq_sum = 0.0
        for t, m in enumerate(n_active):
            u = rng.random((6, m))
            rows = np.arange(m)
            c = interest[:m]
            if t > 0:
                redraw = u[0] < opts.interest_drift
                c[redraw] = self._popular_topic(u[1][redraw])
            rho_t = rho if t > 0 else 0.0
            mix = (u[2] - rho_t) / (1.0 - rho_t)
            long_topic = fav[rows, (fav_cdf[:m] < u[3][:, None]).sum(axis=1)]
            topic = np.where(
                mix < lam[t],
                long_topic,
                np.where(mix < lam[t] + (1 - lam[t]) * beta, c, self._popular_topic(u[3])),
            )
            x = self._topic_draw(topic, u[4])
            if t > 0:
                p_prev = prev[:m]
                slot = sum(threshold[p_prev] < u[5] for threshold in self._successor_cdf)
                x = np.where(u[2] < rho, self.successors[p_prev, slot], x)
                kx = self.topic_of[x]
                pi = lam[t] * (fav_w[:m] * (fav[:m] == kx[:, None])).sum(axis=1) + (1 - lam[t]) * (
                    beta * (kx == c) + (1 - beta) * self.topic_pop[kx]
                )
                nll = -np.log(
                    rho * self._transition_prob(p_prev, x) + (1 - rho) * pi * self.within_topic[x]
                )
                nll_sum += float(nll.sum())
                nll_sq_sum += float(np.dot(nll, nll))
            items[base[:m] + t] = x
            if interest_trace is not None:
                interest_trace[base[:m] + t] = c
            prev[:m] = x
        timestamps = self._timestamps(rng, lengths, local_off)
        return ChunkResult(
            items,
            timestamps,
            nll_sum,
            nll_sq_sum,
            int(total - n),
            interest_trace,
            *((favourites, favourite_weights) if trace else ()),
        )

    def _transition_prob(self, prev: np.ndarray, x: np.ndarray) -> np.ndarray:
        """float64 [m]: T(prev, x), summed over the successor slots that hold x."""
        is_next = self.successors[prev] == x[:, None]
        hit = np.flatnonzero(is_next.any(axis=1))
        prob = np.zeros(len(x))
        prob[hit] = (self.successor_prob[prev[hit]] * is_next[hit]).sum(axis=1)
        return prob

    @staticmethod
    def _timestamps(
        rng: np.random.Generator, lengths: np.ndarray, local_off: np.ndarray
    ) -> np.ndarray:
        """int64 [sum(lengths)]: per-user start + cumulative exponential gaps (>= 1 s)."""
        start = START_TIME_S + rng.integers(0, START_SPAN_S, size=len(lengths))
        gaps = np.maximum(1, np.rint(rng.exponential(MEAN_GAP_S, size=int(local_off[-1]))))
        return _segment_cumsum(gaps.astype(np.int64), local_off) + np.repeat(start, lengths)


def _split_uniform(u: np.ndarray, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Uniforms in [0, 1) -> (slot uniform in 0..n-1, an independent uniform in [0, 1))."""
    scaled = u * n
    slot = np.minimum(scaled.astype(np.int64), np.asarray(n) - 1)
    return slot, scaled - slot


def _alias_table(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias table of ``prob`` (Vose's construction), for O(1) categorical draws.

    Returns:
      accept: float64 [n]; alias: int64 [n]. Draw slot j uniformly and a uniform f: the
      outcome is j if f < accept[j], else alias[j].
    """
    n = len(prob)
    scaled = (np.asarray(prob, np.float64) * (n / np.sum(prob))).tolist()
    accept = np.ones(n)
    alias = np.arange(n)
    small = [i for i, s in enumerate(scaled) if s < 1.0]
    large = [i for i, s in enumerate(scaled) if s >= 1.0]
    while small and large:
        lo, hi = small.pop(), large[-1]
        accept[lo] = scaled[lo]
        alias[lo] = hi
        scaled[hi] -= 1.0 - scaled[lo]
        if scaled[hi] < 1.0:
            small.append(large.pop())
    return accept, alias


def _segment_cumsum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of ``values`` restarting at every segment.

    Args:
      values: [n] numbers.
      offsets: int [n_segments + 1]: segment j is ``values[offsets[j]:offsets[j + 1]]``.
    """
    total = np.cumsum(values)
    before = np.concatenate([[0], total])[offsets[:-1]]
    return total - np.repeat(before, np.diff(offsets))

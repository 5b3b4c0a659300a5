"""The synthetic generator's options (see :mod:`srt_jax.data.synthetic.generator` for what
each one does), with their defaults and range checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from srt_jax.errors import ConfigError

DEFAULT_TOPICS = 32


@dataclass(frozen=True)
class GeneratorOptions:
    """The generator's keyword options (all recorded in ``meta.json``).

    Attributes:
      zipf_exponent: exponent ``s`` of item popularity ``rank ** -s`` (>= 0).
      topics: number of item topics (1 <= topics <= items); None: min(32, items).
      transition_prob: probability that the next item follows the previous item's
        successor table (in [0, 1)).
      interest_weight: share of the non-long-term topic mass on the current interest topic;
        the rest follows global topic popularity (in [0, 1]).
      interest_drift: per-step probability that the current interest topic is re-drawn.
      long_term_early: weight of the long-term preference at the first interaction.
      long_term_late: weight of the long-term preference long after (<= long_term_early).
      long_term_half_life: interactions over which the excess weight halves (> 0).
      min_length: shortest history (>= 2).
      chunk_users: users generated together (memory ~ 100 bytes x chunk_users x mean_length);
        part of the output's identity, since each chunk has its own random stream.
      feature_tokens: feature tokens drawn per item (0: the store has no item features).
      topic_tokens: size of each topic's own token set (``tag=t<topic>_<j>``).
      feature_noise: probability that a draw comes from the shared pool of ``topics`` noise
        tokens (``tag=noise_<j>``) instead of the item's topic set.
      item_id_offset: original item ids are ``item_id_offset + 1 .. + items``, so two stores
        made with different offsets have disjoint catalogs (a pair of domains).
    """

    zipf_exponent: float = 1.0
    topics: int | None = None
    transition_prob: float = 0.2
    interest_weight: float = 0.5
    interest_drift: float = 0.05
    long_term_early: float = 0.8
    long_term_late: float = 0.2
    long_term_half_life: float = 20.0
    min_length: int = 3
    chunk_users: int = 65_536
    feature_tokens: int = 0
    topic_tokens: int = 8
    feature_noise: float = 0.2
    item_id_offset: int = 0

    def resolved(self, n_items: int) -> GeneratorOptions:
        """These options with ``topics`` set, checked for a catalog of ``n_items``."""
        topics = min(DEFAULT_TOPICS, n_items) if self.topics is None else self.topics
        options = dataclasses.replace(self, topics=topics)
        options.check(n_items)
        return options

    def check(self, n_items: int) -> None:
        """Raise ConfigError naming the first option that is out of range."""
        rules = (
            ("zipf_exponent", self.zipf_exponent >= 0, "a number >= 0"),
            ("topics", 1 <= self.topics <= n_items, f"an integer in 1..items={n_items}"),
            ("transition_prob", 0 <= self.transition_prob < 1, "a probability in [0, 1)"),
            ("interest_weight", 0 <= self.interest_weight <= 1, "a fraction in [0, 1]"),
            ("interest_drift", 0 <= self.interest_drift <= 1, "a probability in [0, 1]"),
            ("long_term_early", 0 <= self.long_term_early <= 1, "a fraction in [0, 1]"),
            (
                "long_term_late",
                0 <= self.long_term_late <= self.long_term_early,
                f"a fraction in [0, long_term_early={self.long_term_early}]",
            ),
            ("long_term_half_life", self.long_term_half_life > 0, "a positive number"),
            ("min_length", self.min_length >= 2, "an integer >= 2"),
            ("chunk_users", self.chunk_users >= 1, "an integer >= 1"),
            ("feature_tokens", self.feature_tokens >= 0, "an integer >= 0"),
            ("topic_tokens", self.topic_tokens >= 1, "an integer >= 1"),
            ("feature_noise", 0 <= self.feature_noise <= 1, "a probability in [0, 1]"),
            ("item_id_offset", self.item_id_offset >= 0, "an integer >= 0"),
        )
        for name, ok, expected in rules:
            if not ok:
                raise ConfigError(
                    f"synthetic option {name} = {getattr(self, name)!r} is "
                    f"invalid: expected {expected}",
                    key=name,
                )

    def long_term_weight(self, t: np.ndarray) -> np.ndarray:
        """float64 [len(t)]: lambda_t, the long-term preference weight at history position t."""
        excess = self.long_term_early - self.long_term_late
        return self.long_term_late + excess * np.exp2(-np.asarray(t) / self.long_term_half_life)


def generator_options(**options: Any) -> GeneratorOptions:
    """GeneratorOptions from keyword options; an unknown name is a ConfigError listing all."""
    names = [f.name for f in dataclasses.fields(GeneratorOptions)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown synthetic option(s) {', '.join(unknown)} (allowed: {', '.join(names)})",
            key=unknown[0],
        )
    return GeneratorOptions(**options)

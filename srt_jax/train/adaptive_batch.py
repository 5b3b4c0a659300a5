"""Adaptive batch size (``train.adaptive_batch``): gradient accumulation over micro-batches,
grown from the measured gradient noise scale (McCandlish et al. 2018, *An empirical model of
large-batch training*).

Device side (inside the one jitted step, :mod:`srt_jax.train.step`):

- :func:`half_gradients` takes a micro-batch's gradient on its two halves (a ``vmap`` over
  ``[2, B/2, L]``; the same FLOPs as one pass) and combines them, weighted by their counted
  targets, into the micro-batch's mean gradient. The halves give the two estimators of the
  paper's appendix A at every step, with B_big the micro-batch's trained tokens and
  B_small = B_big / 2: |G|² ≈ 2 |g_big|² - |g_small|² and tr(Σ) ≈ (|g_small|² - |g_big|²)
  B_big, with |g_small|² the mean of the halves' squared norms.
- :func:`accumulate` adds the micro-batch gradient (times its targets) to the train state's
  accumulator and, once A micro-batches are in (A an argument of the step), applies the
  optimiser to their token-weighted mean and empties it (a ``lax.cond``): the update uses the
  exact mean over every target of the A micro-batches.

Host side, :class:`BatchController` (its state travels in the loop state, so in every
checkpoint): exponential moving averages of the two estimators, the noise scale B_noise =
tr(Σ) / |G|² (trained tokens), and the accumulation A = min(max_accumulation, max(A,
round(scale x B_noise / tokens per micro-batch))), revised at every train line and
checkpoint; it only grows. The learning rate follows the token schedule at every micro-batch
(the update uses the rate of its last one). The run's last micro-batch always applies what
is accumulated, so no trained target is left out of an update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from srt_jax.config import AdaptiveBatchConfig

NOISE_METRICS = ("noise_g2", "noise_trace")
"""Per-step device figures: the |G|² and tr(Σ) estimates of the step's micro-batch."""


def half_gradients(
    loss_fn: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    params: Any,
    batch: dict[str, jax.Array],
    dropout_key: jax.Array,
    loss_key: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array], Any, dict[str, jax.Array]]:
    """``(loss, figures, grads, noise)`` of a micro-batch taken in two halves.

    ``loss_fn(params, batch, dropout_key, loss_key) -> (loss, figures)`` with ``figures``
    holding ``loss_sum`` and ``count`` (summed over the halves; other figures are averaged,
    weighted by count). ``grads`` is the count-weighted mean of the halves' gradients;
    ``noise`` holds :data:`NOISE_METRICS` (see the module docstring).
    """
    halves = jax.tree.map(lambda x: x.reshape(2, x.shape[0] // 2, *x.shape[1:]), batch)
    keys = jax.random.split(dropout_key, 2), jax.random.split(loss_key, 2)
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    (loss_2, figures_2), grads_2 = jax.vmap(value_and_grad, in_axes=(None, 0, 0, 0))(
        params, halves, *keys
    )
    count_2 = figures_2["count"]
    total = count_2.sum()
    weight_2 = count_2 / jnp.maximum(total, 1.0)
    grads = jax.tree.map(lambda g: jnp.tensordot(weight_2, g, axes=1), grads_2)
    figures = {
        name: value.sum() if name in ("loss_sum", "count") else (weight_2 * value).sum()
        for name, value in figures_2.items()
    }
    small_sq = jnp.mean(jax.vmap(optax.tree.norm)(grads_2) ** 2)
    big_sq = optax.tree.norm(grads) ** 2
    noise = {"noise_g2": 2.0 * big_sq - small_sq, "noise_trace": (small_sq - big_sq) * total}
    return (weight_2 * loss_2).sum(), figures, grads, noise


def empty_accumulator(params: Any) -> dict[str, Any]:
    """The accumulator of a train state: gradient sums like ``params`` (float32), targets
    and micro-batches so far."""
    return {
        "grads": jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
        "tokens": jnp.zeros((), jnp.float32),
        "micro": jnp.zeros((), jnp.int32),
    }


def accumulate(
    state: dict[str, Any],
    grads: Any,
    count: jax.Array,
    accumulation: jax.Array,
    update: Callable[[Any, Any], tuple[Any, Any]],
) -> dict[str, Any]:
    """The train state after one micro-batch: its gradient (the mean over its ``count``
    targets) added to ``state["accum"]``; when that makes ``accumulation`` micro-batches,
    ``update(mean_grads, opt_state) -> (params, opt_state)`` applied to the token-weighted
    mean and the accumulator emptied."""
    accum = state["accum"]
    sums = jax.tree.map(lambda a, g: a + g.astype(jnp.float32) * count, accum["grads"], grads)
    tokens, micro = accum["tokens"] + count, accum["micro"] + 1

    def apply(_: None) -> dict[str, Any]:
        mean = jax.tree.map(
            lambda s, p: (s / jnp.maximum(tokens, 1.0)).astype(p.dtype), sums, grads
        )
        params, opt_state = update(mean, state["opt_state"])
        return {"params": params, "opt_state": opt_state, "accum": empty_accumulator(sums)}

    def keep(_: None) -> dict[str, Any]:
        kept = {"grads": sums, "tokens": tokens, "micro": micro}
        return {"params": state["params"], "opt_state": state["opt_state"], "accum": kept}

    return jax.lax.cond(micro >= accumulation, apply, keep, None)


@dataclass
class BatchController:
    """The host's side of the adaptive batch (see the module docstring); JSON via
    :meth:`to_json` / :meth:`from_json`, carried in the loop state.

    Attributes:
      accumulation: A, micro-batches per optimiser update.
      micro: micro-batches accumulated since the last update.
      updates: optimiser updates so far.
      g2, trace: moving averages of the |G|² and tr(Σ) estimates (None before the first).
    """

    accumulation: int = 1
    micro: int = 0
    updates: int = 0
    g2: float | None = None
    trace: float | None = None

    def observe(self, cfg: AdaptiveBatchConfig, g2: float, trace: float) -> None:
        """Fold one micro-batch's estimates into the moving averages."""
        decay = cfg.ema_decay
        self.g2 = g2 if self.g2 is None else decay * self.g2 + (1 - decay) * g2
        self.trace = trace if self.trace is None else decay * self.trace + (1 - decay) * trace

    @property
    def noise_scale(self) -> float | None:
        """B_noise = tr(Σ) / |G|² in trained tokens (None until |G|² is positive)."""
        if self.g2 is None or self.trace is None or self.g2 <= 0:
            return None
        return max(self.trace, 0.0) / self.g2

    def decide(self, cfg: AdaptiveBatchConfig, tokens_per_micro_batch: float) -> None:
        """Grow A towards ``scale x B_noise`` tokens (never shrink; at most the maximum)."""
        if self.noise_scale is None:
            return
        wanted = round(cfg.scale * self.noise_scale / max(tokens_per_micro_batch, 1.0))
        self.accumulation = min(cfg.max_accumulation, max(self.accumulation, wanted))

    def dispatch(self, *, last: bool) -> int:
        """The accumulation to give the step about to run (the number it completes when it
        is the ``last`` of the run), counting the update it makes."""
        self.micro += 1
        accumulation = self.micro if last else self.accumulation
        if self.micro >= accumulation:
            self.updates += 1
            self.micro = 0
        return accumulation

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BatchController:
        return cls(**raw)

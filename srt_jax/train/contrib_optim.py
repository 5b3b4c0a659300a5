"""optax.contrib's adaptive AdamW variants with a weight-decay mask.

:func:`optax.contrib.prodigy` and :func:`optax.contrib.dadapt_adamw` decay every parameter
and :func:`optax.contrib.schedule_free_adamw` takes no mask; this project decays kernels
only (:func:`srt_jax.train.optim.decay_mask`). The factories here give optax's updates with
the decoupled decay restricted to ``mask`` (a function of the parameters returning a tree of
bools, True where decay applies). With a mask that is True everywhere they equal optax's own
(``tests/test_optim.py`` checks it), so they stay tied to optax's code.

One more difference, in prodigy and dadapt_adamw: a step whose new estimate d is not finite
changes nothing (zero updates, the state kept). optax divides by the summed gradient
history, which is 0 after a step at learning rate 0 (the first step of a warmup from 0),
and its d becomes NaN for good; the authors' implementations return early when that
denominator is 0, which this reproduces.

Every argument that is a number may be an array, so they can be wrapped in
:func:`optax.inject_hyperparams` (``mask`` static) and their learning rate set per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Mask = Callable[[optax.Params], Any]


def _decay_scaled_by_step(
    inner: optax.GradientTransformation,
    learning_rate: Any,
    b1: Any,
    b2: Any,
    weight_decay: Any,
    mask: Mask,
) -> optax.GradientTransformation:
    """``inner`` (a D-adapted AdamW built without weight decay) plus the decoupled decay
    ``-weight_decay x dlr x p`` on the masked parameters, where ``dlr = d x learning_rate x
    sqrt(1 - b2^t) / (1 - b1^t)`` is the step optax scales its own decay by (d: the state's
    ``estim_lr`` before the update, t: the step number from 1); a step whose new d is not
    finite is skipped (see the module docstring)."""

    def update_fn(
        updates: optax.Updates, state: Any, params: optax.Params | None = None, **extra: Any
    ) -> tuple[optax.Updates, Any]:
        t = state.count + 1
        dlr = state.estim_lr * learning_rate * ((1 - b2**t) ** 0.5) / (1 - b1**t)
        dlr = jnp.asarray(dlr, state.estim_lr.dtype)
        new_updates, new_state = inner.update(updates, state, params)

        def decayed(decay: bool, u: Any, p: Any) -> Any:
            if not decay:
                return u
            return jax.tree.map(lambda ui, pi: ui - weight_decay * dlr * pi, u, p)

        new_updates = jax.tree.map(decayed, mask(params), new_updates, params)
        finite = jnp.isfinite(new_state.estim_lr)
        new_updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        return new_updates, jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)

    return optax.GradientTransformation(inner.init, update_fn)


def prodigy(
    learning_rate: Any,
    b1: Any,
    b2: Any,
    d0: Any,
    d_coef: Any,
    weight_decay: Any,
    mask: Mask,
    safeguard_warmup: bool = False,
) -> optax.GradientTransformation:
    """:func:`optax.contrib.prodigy` (``betas=(b1, b2)``, ``estim_lr0=d0``,
    ``estim_lr_coef=d_coef``) with its weight decay on ``mask`` only."""
    inner = optax.contrib.prodigy(
        learning_rate,
        betas=(b1, b2),
        estim_lr0=d0,
        estim_lr_coef=d_coef,
        weight_decay=0.0,
        safeguard_warmup=safeguard_warmup,
    )
    return _decay_scaled_by_step(inner, learning_rate, b1, b2, weight_decay, mask)


def dadapt_adamw(
    learning_rate: Any, b1: Any, b2: Any, d0: Any, weight_decay: Any, mask: Mask
) -> optax.GradientTransformation:
    """:func:`optax.contrib.dadapt_adamw` (``betas=(b1, b2)``, ``estim_lr0=d0``) with its
    weight decay on ``mask`` only."""
    inner = optax.contrib.dadapt_adamw(
        learning_rate, betas=(b1, b2), estim_lr0=d0, weight_decay=0.0
    )
    return _decay_scaled_by_step(inner, learning_rate, b1, b2, weight_decay, mask)


def schedule_free_adamw(
    learning_rate: Any,
    b1: Any,
    b2: Any,
    weight_decay: Any,
    mask: Mask,
    eps: Any = 1e-8,
    weight_lr_power: Any = 2.0,
) -> optax.GradientTransformation:
    """:func:`optax.contrib.schedule_free_adamw` with its weight decay on ``mask`` only:
    :func:`optax.contrib.schedule_free` (interpolation ``b1``) around Adam without momentum
    (RMS of decay ``b2``, bias-corrected), masked decoupled decay and ``learning_rate``.
    Evaluate at :func:`optax.contrib.schedule_free_eval_params`."""
    base = optax.chain(
        optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
    return optax.contrib.schedule_free(
        base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power
    )

"""Seconds per training step of a config on this machine (sweep plans calibrate with it)."""

from __future__ import annotations

import time

import jax

from srt_jax.config import RunConfig
from srt_jax.train.build import build_run


def time_steps(config: RunConfig, n_steps: int) -> float:
    """Seconds per training step of ``config`` on this machine (compilation excluded).

    Builds the run's data, model and step (nothing is written), runs two warm-up steps and
    then ``n_steps`` real steps, and returns their mean wall time.
    """
    parts = build_run(config, progress=False)
    parts.step.compile(config.train.batch_size, config.data.max_len, parts.sampler.packed_rows)
    state = parts.step.init_state()
    tokens = 0
    start = 0.0
    for k in range(n_steps + 2):
        if k == 2:
            jax.block_until_ready(state)
            start = time.perf_counter()
        batch = parts.sampler.as_trained(parts.sampler.batch(k))
        state, _ = parts.step(state, parts.step.put_batch(batch), k, tokens)
        tokens += batch.n_targets
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / max(n_steps, 1)

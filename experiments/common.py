"""What every experiment script shares: summaries over seeds and a record of the machine."""

from __future__ import annotations

import platform
import statistics

import jax


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def machine() -> dict[str, str]:
    """The JAX version, backend and host an experiment ran on (for its results JSON)."""
    return {"jax": jax.__version__, "backend": jax.default_backend(), "host": platform.node()}

"""Command groups of the ``srt-jax`` CLI, one module each (see srt_jax/cli.py)."""

from srt_jax.commands import (
    advise,
    data,
    doctor,
    fit,
    quickstart,
    recommend,
    runs,
    sweep,
    train,
)

COMMAND_GROUPS = (
    quickstart.register,
    data.register,
    train.register,
    recommend.register,
    runs.register,
    sweep.register,
    fit.register,
    advise.register,
    doctor.register,
)

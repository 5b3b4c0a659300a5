"""Command groups of the ``srt-jax`` CLI, one module each (see srt_jax/cli.py)."""

from srt_jax.commands import data, fit, train

COMMAND_GROUPS = (data.register, train.register, fit.register)

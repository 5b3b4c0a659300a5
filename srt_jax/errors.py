"""Errors that the CLI reports as one clear line and a non-zero exit.

Every error a user can cause (a bad file, a bad config key, a bad row) is raised as a
subclass of :class:`SrtJaxError` whose message names what was wrong and where; the CLI
prints it without a traceback and exits with status 2.
"""


class SrtJaxError(Exception):
    """Base class of user-facing errors (bad input, bad config, bad state)."""


class ConfigError(SrtJaxError):
    """A config file, key or value is wrong; ``key`` is the dotted key when one is to blame."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DataError(SrtJaxError):
    """An input file, row, column or sequence store is missing or malformed."""


class TrainingError(SrtJaxError):
    """A run failed (non-finite loss, incompatible checkpoint, ...)."""

"""Errors that the CLI reports as one clear line and a non-zero exit.

Every error a user can cause (a bad file, a bad config key, a bad row) is raised as a
subclass of :class:`SrtJaxError` whose message names what was wrong and where; the CLI
prints it without a traceback and exits with the error's ``exit_status``: 1 for a run that
trained and failed (:class:`RunFailedError`), 2 for everything else (bad input, bad config,
bad state; argparse's usage errors exit 2 too). 0 is success, 130 an interrupt.
"""

from typing import ClassVar


class SrtJaxError(Exception):
    """Base class of user-facing errors (bad input, bad config, bad state)."""

    exit_status: ClassVar[int] = 2


class ConfigError(SrtJaxError):
    """A config file, key or value is wrong; ``key`` is the dotted key when one is to blame."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DataError(SrtJaxError):
    """An input file, row, column or sequence store is missing or malformed."""


class TrainingError(SrtJaxError):
    """A run failed (non-finite loss, incompatible checkpoint, ...)."""


class CheckpointUnreadableError(TrainingError):
    """A checkpoint's files cannot be read (truncated, corrupted): a resume falls back to the
    previous checkpoint."""


class RunFailedError(TrainingError):
    """A run trained and failed (a non-finite loss or gradient; runs of a sweep that failed):
    exit status 1, where bad input is 2."""

    exit_status: ClassVar[int] = 1


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message (at most ``limit`` characters), or its type's
    name when the message is empty: how a library's multi-line error is quoted in ours."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__

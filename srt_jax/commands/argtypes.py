"""argparse ``type=`` converters shared by the command groups; errors say what was expected."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    """A number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def gpu_share(text: str) -> float:
    """GPUs per task as Ray accepts them: 0, a share in (0, 1), or a whole number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value == 0 or 0 < value < 1 or (value >= 1 and value.is_integer())):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 0, a share between 0 and 1, or a whole number of GPUs"
        )
    return value


def positive_float_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers > 0."""
    return tuple(positive_float(part) for part in text.split(",") if part.strip())


def int_list(text: str) -> list[int]:
    """Comma-separated integers."""
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text}") from None


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
    return value

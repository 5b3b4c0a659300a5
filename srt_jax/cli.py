"""The ``srt-jax`` command: parses arguments and delegates to the library.

Each command group lives in ``srt_jax/commands/<group>.py`` and exposes
``register(subparsers)``, which adds its parsers with a ``handler`` default. User errors
(:class:`srt_jax.errors.SrtJaxError`) print one line and exit with the error's status: 1 a
run that failed, 2 bad input or usage (0 done, 130 interrupted).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence

from srt_jax import __version__
from srt_jax.commands import COMMAND_GROUPS
from srt_jax.commands.output import add_output_options
from srt_jax.errors import SrtJaxError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser of ``srt-jax``."""
    parser = argparse.ArgumentParser(
        prog="srt-jax",
        description="Scaling-law experiments on sequential recommenders (JAX/Flax NNX).",
    )
    parser.add_argument("--version", action="version", version=f"srt-jax {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMAND_GROUPS:
        register(subparsers)
    for command in commands_of(parser):
        add_output_options(command)
    return parser


def iter_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """``(command path, parser, help)`` of ``parser`` and every subparser below it, depth
    first in the order they were added. ``help`` is the one-line help the command has in its
    parent's list; None for the top-level parser and for an internal subcommand, one added
    without ``help=`` (``--help`` does not list it)."""
    yield path, parser, None
    yield from _iter_subparsers(parser, path)


def _iter_subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:  # an alias of a subcommand already walked
                continue
            seen.add(id(sub))
            yield (*path, name), sub, helps.get(name)
            yield from _iter_subparsers(sub, (*path, name))


def commands_of(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of every command below ``parser`` that has no subcommands of its own."""
    return [
        sub
        for path, sub, _ in iter_parsers(parser)
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``srt-jax`` with ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.handler(args)
    except SrtJaxError as err:
        print(f"srt-jax: error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("srt-jax: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return 0
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())

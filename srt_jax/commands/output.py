"""What every command prints, and the two options that shape it on every command.

- ``--quiet``: no progress bars and no notes along the way; the final summary still prints.
- ``--json``: the final summary as one JSON object on stdout and nothing else there; notes
  go to stderr (progress bars always do).

A handler prints notes with :func:`note` and ends with :func:`finish` (its summary as a
dict, and the same as text), so its final output is printed once, in either form.
:func:`add_output_options` is applied to every command by :func:`srt_jax.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

QUIET_HELP = "no progress bars or notes; only the final summary"
JSON_HELP = "print the final summary as one JSON object on stdout (notes go to stderr)"


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--quiet`` and ``--json`` to a command's parser, unless it defines its own (a
    command that streams results, ``recommend``, prints JSON lines)."""
    for option, help_text in (("--quiet", QUIET_HELP), ("--json", JSON_HELP)):
        if option not in parser._option_string_actions:
            parser.add_argument(option, action="store_true", help=help_text)


def note(args: argparse.Namespace, text: str) -> None:
    """A line about the work under way: on stdout, on stderr with ``--json``, not at all with
    ``--quiet``."""
    if not args.quiet:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def finish(args: argparse.Namespace, summary: dict[str, Any], text: str) -> None:
    """Print the command's final summary once: ``summary`` as JSON with ``--json``, else
    ``text``."""
    print(json.dumps(summary, indent=2, default=str) if args.json else text)

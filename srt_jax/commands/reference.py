"""The CLI reference page, generated from the argparse parsers of ``srt-jax``.

:func:`cli_reference_markdown` walks the parser tree of :func:`srt_jax.cli.build_parser`
and writes, for every command and nested subcommand, a heading, its description, its usage
line and a table of every positional argument and option with its help text. The
documentation site inserts it into ``docs/reference/cli.md`` at build time
(``docs/hooks/cli_reference.py``), so the page cannot drift from the parsers;
``tests/test_docs_site.py`` checks it names every subcommand and option string.

Help texts are formatted at a fixed width (:data:`USAGE_WIDTH`), so the output does not
depend on the terminal the site is built in.
"""

from __future__ import annotations

import argparse
import html
import re

from srt_jax.cli import build_parser, iter_parsers

USAGE_WIDTH = 88
"""Columns of the usage lines (argparse otherwise reads the terminal's width)."""

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_MARKDOWN_SPECIALS = re.compile(r"([\\*_\[\]|])")


def cli_reference_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown of every command of ``parser`` (default: the ``srt-jax`` parser)."""
    parser = parser or build_parser()
    sections = [
        _section(parser.prog, path, sub, help_text) for path, sub, help_text in iter_parsers(parser)
    ]
    return "\n\n".join(sections) + "\n"


def _section(
    prog: str, path: tuple[str, ...], parser: argparse.ArgumentParser, help_text: str | None
) -> str:
    level = "#" * min(len(path) + 2, 4)
    lines = [f"{level} `{' '.join((prog, *path))}`", ""]
    if path and help_text is None:
        lines += ["*Internal*: not listed by `--help`; started by other commands.", ""]
    text = parser.description or help_text
    if text:
        lines += [_markdown_text(text), ""]
    lines += _usage_block(parser)
    lines += _arguments(parser)
    return "\n".join(lines).rstrip()


def _usage_block(parser: argparse.ArgumentParser) -> list[str]:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    usage = formatter.format_help().strip()
    return ["```text", usage, "```", ""]


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    """One table per argument group (positional arguments, options, titled groups)."""
    lines: list[str] = []
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not _is_subcommands(a)]
        subcommands = [a for a in group._group_actions if _is_subcommands(a)]
        for action in subcommands:
            lines += _subcommand_table(action)
        if not actions:
            continue
        lines += [f"**{_markdown_text(group.title or 'arguments')}**", ""]
        if group.description:
            lines += [_markdown_text(group.description), ""]
        lines += ["| argument | value | description |", "| --- | --- | --- |"]
        for action in actions:
            lines.append(_argument_row(action, formatter))
        lines.append("")
    return lines


def _is_subcommands(action: argparse.Action) -> bool:
    return isinstance(action, argparse._SubParsersAction)


def _subcommand_table(action: argparse._SubParsersAction) -> list[str]:
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    title = f"**{_markdown_text(action.metavar or action.dest)}**"
    lines = [f"{title} (required)" if action.required else title, ""]
    lines += ["| command | description |", "| --- | --- |"]
    for name in action.choices:
        help_text = helps.get(name)
        shown = _markdown_text(help_text) if help_text else "*internal* (not listed by `--help`)"
        lines.append(f"| `{name}` | {shown} |")
    lines.append("")
    return lines


def _argument_row(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if action.option_strings:
        names = ", ".join(f"`{s}`" for s in action.option_strings)
    else:
        names = f"`{action.metavar or action.dest}`"
    value = _value_of(action)
    if action.help == argparse.SUPPRESS:
        description = "*internal* (hidden from `--help`)"
    else:
        description = _markdown_text(formatter._expand_help(action)) if action.help else ""
    notes = []
    if action.required and action.option_strings:
        notes.append("required")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in description:
        notes.append("repeatable")
    if notes:
        description = f"{description} ({', '.join(notes)})".strip()
    return f"| {names} | {value} | {description} |"


def _value_of(action: argparse.Action) -> str:
    """What an argument takes: its choices, its metavar (how many, for a positional), or
    nothing for a flag."""
    if action.nargs == 0:
        return ""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return " \\| ".join(f"`{c}`" for c in action.choices)
    count = {"+": "one or more", "*": "any number", "?": "optional"}.get(str(action.nargs), "")
    if not action.option_strings:  # a positional: its name is already in the first column
        return count
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return f"`{metavar}` ({count})" if count else f"`{metavar}`"


def _markdown_text(text: str) -> str:
    """Plain help text as Markdown: whitespace collapsed, HTML and Markdown specials escaped
    outside `code spans`."""
    text = " ".join(text.split())
    parts = _CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(parts[i], quote=False))
    return "".join(parts)

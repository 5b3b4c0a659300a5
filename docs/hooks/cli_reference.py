"""MkDocs hook: the CLI reference page is generated from the argparse parsers.

``docs/reference/cli.md`` holds :data:`MARKER`; at build time it is replaced by
:func:`srt_jax.commands.reference.cli_reference_markdown`, every command and option of
``srt-jax`` with its help text, so the page never drifts from the code.
"""

from __future__ import annotations

from mkdocs.exceptions import PluginError

from srt_jax.commands.reference import cli_reference_markdown

PAGE = "reference/cli.md"
MARKER = "<!-- srt-jax: cli-reference -->"


def on_page_markdown(markdown, page, config, files):
    """Replace the marker of the CLI reference page with the generated reference."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} lost its marker {MARKER!r}: the CLI reference has no place")
    return markdown.replace(MARKER, cli_reference_markdown())

"""MkDocs hook: pages assembled from files outside ``docs/``.

- The *Experiments* section of the nav lists every ``docs/experiments/*.md``: the pages
  named in ``mkdocs.yml`` first, in their order, then any other page of that folder
  (sorted, titled by its first heading), so a new experiment's page is never left out.
- ``docs/benchmarks.md`` includes ``benchmarks/README.md`` (the benchmarks' latest
  figures, kept beside the scripts) at :data:`BENCHMARKS_MARKER`, with its relative links
  into ``docs/`` rewritten to resolve from the page; a link out of ``docs/`` is left as it
  is, so a strict build reports it.
- Docstrings cross-reference in Sphinx's style (``:class:`Batch` ``); in the API pages the
  role prefix is dropped, leaving the name as code.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

EXPERIMENTS_SECTION = "Experiments"
EXPERIMENTS_DIR = "experiments"
BENCHMARKS_PAGE = "benchmarks.md"
BENCHMARKS_SOURCE = "benchmarks/README.md"
BENCHMARKS_MARKER = "<!-- srt-jax: include benchmarks/README.md -->"
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj):(?=<code>)")
_LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")


def on_config(config):
    """Append the experiment pages missing from the nav's Experiments section."""
    section = _nav_section(config["nav"] or [], EXPERIMENTS_SECTION)
    if section is None:
        raise PluginError(f"mkdocs.yml: the nav has no {EXPERIMENTS_SECTION!r} section")
    listed = {_nav_path(entry) for entry in section}
    docs_dir = Path(config["docs_dir"])
    for path in sorted((docs_dir / EXPERIMENTS_DIR).glob("*.md")):
        uri = path.relative_to(docs_dir).as_posix()
        if uri not in listed:
            section.append(uri)
    return config


def on_page_markdown(markdown, page, config, files):
    """Include benchmarks/README.md into the benchmarks page."""
    if page.file.src_uri != BENCHMARKS_PAGE:
        return markdown
    if BENCHMARKS_MARKER not in markdown:
        raise PluginError(f"{BENCHMARKS_PAGE} lost its marker {BENCHMARKS_MARKER!r}")
    root = Path(config["config_file_path"]).parent
    docs_dir = Path(config["docs_dir"]).resolve().relative_to(root.resolve()).as_posix()
    text = (root / BENCHMARKS_SOURCE).read_text(encoding="utf-8")
    text = _rebase_links(text, BENCHMARKS_SOURCE, page.file.src_uri, docs_dir)
    return markdown.replace(BENCHMARKS_MARKER, text)


def on_page_content(html, page, config, files):
    """Drop the Sphinx role prefixes that docstrings carry before their code spans."""
    return _SPHINX_ROLE.sub("", html)


def _nav_section(nav: list, title: str) -> list | None:
    for entry in nav:
        if isinstance(entry, dict) and title in entry and isinstance(entry[title], list):
            return entry[title]
    return None


def _nav_path(entry) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        value = next(iter(entry.values()))
        return value if isinstance(value, str) else None
    return None


def _rebase_links(text: str, source: str, page: str, docs_dir: str) -> str:
    """Relative links of ``source`` (a repository path) that point into ``docs_dir``,
    rewritten relative to ``page`` (a path inside ``docs_dir``)."""
    source_dir = posixpath.dirname(source)
    page_dir = posixpath.dirname(page)

    def rebase(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        in_repo = posixpath.normpath(posixpath.join(source_dir, target))
        if not in_repo.startswith(docs_dir + "/"):
            return match.group(0)
        in_docs = in_repo[len(docs_dir) + 1 :]
        rebased = posixpath.relpath(in_docs, page_dir or ".")
        return f"{match.group(1)}{rebased}{match.group(3)}"

    return _LINK.sub(rebase, text)

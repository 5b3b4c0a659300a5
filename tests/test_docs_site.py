"""The documentation site: the CLI reference matches the parsers, and the site builds with
warnings as errors (``mkdocs build --strict``: broken links, pages missing from the nav and
API references that do not resolve fail it)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from srt_jax.cli import build_parser
from srt_jax.commands.reference import cli_reference_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE_PAGES = ("prepare-data", "train", "sweep", "fit", "reproduce", "scale-out")
HEADING = re.compile(r"^#{2,4} `(srt-jax(?: [\w-]+)*)`$", flags=re.MULTILINE)


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser)`` of every parser of the tree, found independently of the
    generator: through each parser's subparsers action and its ``choices``."""
    yield path, parser
    subparsers = parser._subparsers
    if subparsers is None:
        return
    for action in subparsers._group_actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def sections(markdown: str) -> dict[str, str]:
    """Heading text (``srt-jax data prepare``) -> the text of its section."""
    matches = list(HEADING.finditer(markdown))
    out = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(markdown)
        out[match.group(1)] = markdown[match.end() : end]
    return out


def missing_from_reference(parser: argparse.ArgumentParser, markdown: str) -> list[str]:
    """Every command, subcommand, option string and positional of ``parser`` that the
    reference ``markdown`` does not name in the section of its command ([] when complete)."""
    found = sections(markdown)
    missing = []
    for path, sub in walk(parser):
        name = " ".join((parser.prog, *path))
        if name not in found:
            missing.append(f"section {name!r}")
            continue
        rows = [line for line in found[name].splitlines() if line.startswith("| ")]
        first_cells = [row.split(" | ")[0] for row in rows]
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                names = [f"`{choice}`" for choice in action.choices]
            elif action.option_strings:
                names = [f"`{option}`" for option in action.option_strings]
            else:
                names = [f"`{action.metavar or action.dest}`"]
            for shown in names:
                if not any(shown in cell for cell in first_cells):
                    missing.append(f"{name}: {shown}")
    return missing


def test_the_cli_reference_names_every_command_and_option():
    parser = build_parser()
    markdown = cli_reference_markdown(parser)
    assert missing_from_reference(parser, markdown) == []
    # and names nothing else: one section per parser
    expected = {" ".join((parser.prog, *path)) for path, _ in walk(parser)}
    assert set(sections(markdown)) == expected
    assert len(HEADING.findall(markdown)) == len(expected)


def test_the_comparison_finds_what_the_page_leaves_out():
    parser = build_parser()
    markdown = cli_reference_markdown(parser)
    without_option = "\n".join(
        line for line in markdown.splitlines() if not line.startswith("| `--mlflow-where`")
    )
    assert missing_from_reference(parser, without_option) == ["srt-jax fit: `--mlflow-where`"]
    without_command = markdown.replace("#### `srt-jax sweep export`", "#### sweep export")
    assert "section 'srt-jax sweep export'" in missing_from_reference(parser, without_command)


def test_the_cli_reference_follows_the_parsers():
    """A new option or subcommand appears on the page without anyone writing it there."""
    parser = build_parser()
    groups = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    groups.choices["train"].add_argument("--brand-new-option", help="added by the test")
    extra = groups.add_parser("brand-new-command", help="added by the test")
    extra.add_argument("thing", help="a positional")
    markdown = cli_reference_markdown(parser)
    assert "| `--brand-new-option` | `BRAND_NEW_OPTION` | added by the test |" in markdown
    assert "### `srt-jax brand-new-command`" in markdown
    assert missing_from_reference(parser, markdown) == []


def test_the_cli_reference_does_not_depend_on_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = cli_reference_markdown()
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_reference_markdown() == narrow


def test_the_cli_reference_page_is_generated_not_written():
    hook = load_hook("cli_reference")
    page = (DOCS / hook.PAGE).read_text()
    assert page.count(hook.MARKER) == 1
    assert "--heartbeat-timeout" not in page  # options come from the parsers only


def test_the_benchmarks_page_rebases_links_into_docs():
    pages = load_hook("pages")
    text = (
        "see [ssm](../docs/experiments/ssm_vs_attention.md#speed), "
        "[a script](bench_train.py) and [web](https://example.org/x)"
    )
    assert pages._rebase_links(text, "benchmarks/README.md", "benchmarks.md", "docs") == (
        "see [ssm](experiments/ssm_vs_attention.md#speed), "
        "[a script](bench_train.py) and [web](https://example.org/x)"
    )


def test_the_user_guide_has_a_page_per_journey():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in GUIDE_PAGES:
        assert (DOCS / "guide" / f"{page}.md").is_file()
        assert f"guide/{page}.md" in nav


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "WARNING" not in result.stderr, result.stderr[-5000:]

    cli = (site / "reference" / "cli" / "index.html").read_text()
    for path, _ in walk(build_parser()):
        if path:
            assert f'id="srt-jax-{"-".join(path)}"' in cli, path
    assert "<code>--heartbeat-timeout</code>" in cli
    for page in sorted((DOCS / "experiments").glob("*.md")):
        assert (site / "experiments" / page.stem / "index.html").is_file(), page.name
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "bench_train.py" in benchmarks
    assert (
        'id="srt_jax.config.schema.RunConfig"'
        in (site / "reference" / "api" / "config" / "index.html").read_text()
    )


def load_hook(name: str):
    """A module of docs/hooks/ (MkDocs loads them by path; so does the test)."""
    spec = importlib.util.spec_from_file_location(f"hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["index.md", *(f"guide/{p}.md" for p in GUIDE_PAGES)])
def test_the_guide_shows_only_commands_that_parse(page):
    """Every ``srt-jax ...`` line in a code block of the guide parses with the real parser."""
    parser = build_parser()
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if "srt-jax " in line:
                commands.append(line[line.index("srt-jax ") :].split("&&")[0].split())
    for argv in commands:
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exit_:
            pytest.fail(f"{page}: {' '.join(argv)} does not parse (exit {exit_.code})")

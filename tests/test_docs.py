"""The repository documents itself: docs exist and are linked, shape letters are in the legend."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "srt_jax"
CONVENTIONS = ROOT / "docs" / "conventions.md"

RESERVED = set("ISRW")  # kept for the Mamba backbone (see docs/conventions.md)
_SHAPE = r"(?:[A-Z]|\d+|1K)"
SUFFIX = re.compile(rf"^[a-z][a-z0-9_]*?_({_SHAPE}(?:x{_SHAPE})*)$")


def legend_letters() -> list[str]:
    """The letters of the shape-letter table of docs/conventions.md, in table order."""
    return re.findall(r"^\| `([A-Z])` \|", CONVENTIONS.read_text(), flags=re.MULTILINE)


def shape_letters(path: Path) -> dict[str, set[str]]:
    """Shape letter -> names using it, over the identifiers of one module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    used: dict[str, set[str]] = {}
    for name in names:
        match = SUFFIX.match(name)
        if match:
            for letter in re.findall(r"[A-Z]", match.group(1)):
                used.setdefault(letter, set()).add(name)
    return used


def test_readme_links_the_architecture_and_the_conventions():
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/architecture.md", "docs/conventions.md"):
        assert (ROOT / doc).is_file()
        assert f"]({doc})" in readme, f"README.md does not link {doc}"


def test_nothing_points_to_the_design_document_outside_the_repository():
    texts = [ROOT / "README.md", *sorted(PACKAGE_DIR.rglob("*.py"))]
    stale = [str(p.relative_to(ROOT)) for p in texts if "DESIGN.md" in p.read_text()]
    assert not stale, f"these still point to DESIGN.md: {stale}"


def test_the_legend_gives_each_letter_one_meaning():
    letters = legend_letters()
    assert len(letters) >= 20
    assert len(letters) == len(set(letters)), f"letters listed twice: {letters}"
    assert set(letters) >= RESERVED


def test_every_shape_letter_in_the_package_is_in_the_legend():
    legend = set(legend_letters())
    unknown = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for letter, names in shape_letters(path).items():
            if letter not in legend:
                unknown.setdefault(letter, set()).update(f"{path.name}:{n}" for n in names)
    assert not unknown, f"shape letters missing from docs/conventions.md: {unknown}"


def test_reserved_letters_are_used_only_by_models():
    """I, S, R and W are kept for the Mamba backbone (srt_jax/models/)."""
    misused = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.parent.name == "models":
            continue
        for letter, names in shape_letters(path).items():
            if letter in RESERVED:
                misused += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(names)]
    assert not misused, f"reserved shape letters used outside srt_jax/models/: {misused}"


def test_the_suffix_pattern_reads_shapes_and_ignores_constants():
    assert SUFFIX.match("x_BxLxD").group(1) == "BxLxD"
    assert SUFFIX.match("logits_Nx1K").group(1) == "Nx1K"
    assert SUFFIX.match("qkv_3xBxHxLxE").group(1) == "3xBxHxLxE"
    assert SUFFIX.match("above_unseen_UxT").group(1) == "UxT"
    assert SUFFIX.match("MEAN_GAP_S") is None
    assert SUFFIX.match("keep_256").group(1) == "256"

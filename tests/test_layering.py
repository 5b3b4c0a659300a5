"""Layering: no module of srt_jax imports from a layer above its own.

The layers follow the data flow of docs/architecture.md, lowest first::

    utilities (srt_jax, errors, progress) < config < data < models < train < serve < sweep
    < commands

A module may import its own layer and the layers below it. ``scaling`` (the fitting
library) stands beside the training stack: it imports only utilities and itself (nothing
of config, data, models, train, sweep or commands), and only ``sweep`` and ``commands``
import it. Every ``srt_jax.*`` import counts, wherever it sits in the file (module level,
inside a function, under ``TYPE_CHECKING``), in all its forms: ``import srt_jax.x``,
``from srt_jax.x import y``, ``from srt_jax import x`` and relative imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "srt_jax"

ORDER = ("utilities", "config", "data", "models", "train", "serve", "sweep", "commands")
"""The training stack, lowest layer first."""

MAY_IMPORT: dict[str, frozenset[str]] = {
    **{layer: frozenset(ORDER[: i + 1]) for i, layer in enumerate(ORDER)},
    "scaling": frozenset({"utilities", "scaling"}),
}
for _layer in ("sweep", "commands"):
    MAY_IMPORT[_layer] |= {"scaling"}

UTILITIES = ("srt_jax", "srt_jax.errors", "srt_jax.progress")
SUBPACKAGES = ("config", "data", "models", "train", "serve", "sweep", "scaling", "commands")


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name under ``srt_jax`` (None: not assigned to one).

    ``srt_jax.config`` and everything under it (should it become a package) are the
    config layer; ``srt_jax.cli`` is part of ``commands``.
    """
    if module in UTILITIES:
        return "utilities"
    if module == "srt_jax.cli" or module.startswith("srt_jax.cli."):
        return "commands"
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "srt_jax" and parts[1] in SUBPACKAGES:
        return parts[1]
    return None


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """``srt_jax/train/loop.py`` -> ``srt_jax.train.loop``; a package's ``__init__.py`` is
    the package itself."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str, package_dir: Path) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = package_dir / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def srt_jax_imports(
    source: str, module: str, *, is_package: bool = False, package_dir: Path = PACKAGE_DIR
) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every ``srt_jax`` import in ``source``.

    ``module`` is the dotted name of the module the source belongs to (it resolves relative
    imports; ``is_package`` when the source is a package's ``__init__.py``). In ``from M
    import n`` the import is ``M.n`` when that is a module of the package, else ``M``.
    """
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _in_package(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not _in_package(base):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if _is_module(candidate, package_dir) else base
                found.append((node.lineno, target))
    return found


def _in_package(name: str) -> bool:
    return name == "srt_jax" or name.startswith("srt_jax.")


def layering_violations(
    source: str,
    module: str,
    *,
    is_package: bool = False,
    where: str = "",
    package_dir: Path = PACKAGE_DIR,
) -> list[str]:
    """One line per import of ``source`` that its layer may not make (or that names a
    module outside every layer)."""
    own = layer_of(module)
    where = where or module
    if own is None:
        return [f"{where}: module {module} belongs to no layer (add it to tests/test_layering.py)"]
    problems = []
    for line, target in srt_jax_imports(
        source, module, is_package=is_package, package_dir=package_dir
    ):
        theirs = layer_of(target)
        if theirs is None:
            problems.append(f"{where}:{line}: {module} imports {target}, which is in no layer")
        elif theirs not in MAY_IMPORT[own]:
            problems.append(
                f"{where}:{line}: {module} ({own}) imports {target} ({theirs}); "
                f"{own} may import only {', '.join(sorted(MAY_IMPORT[own]))}"
            )
    return problems


def package_modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    unassigned = [m for m in map(module_name, package_modules()) if layer_of(m) is None]
    assert not unassigned, f"modules outside every layer: {unassigned}"


def test_no_module_imports_from_a_layer_above_its_own():
    problems, n_imports = [], 0
    for path in package_modules():
        module, source = module_name(path), path.read_text()
        is_package = path.name == "__init__.py"
        n_imports += len(srt_jax_imports(source, module, is_package=is_package))
        problems += layering_violations(
            source,
            module,
            is_package=is_package,
            where=str(path.relative_to(PACKAGE_DIR.parent)),
        )
    assert n_imports > 100, f"found only {n_imports} srt_jax imports: is the scan broken?"
    assert not problems, "layering violations:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "offender"),
    [
        ("srt_jax.data.sampler", "from srt_jax.train.loop import train\n", "srt_jax.train.loop"),
        ("srt_jax.data.sampler", "import srt_jax.models.transformer\n", "srt_jax.models"),
        ("srt_jax.models.transformer", "from srt_jax.sweep import registry\n", "sweep.registry"),
        ("srt_jax.train.step", "from ..sweep.spec import load_spec\n", "srt_jax.sweep.spec"),
        ("srt_jax.train.step", "from .. import commands\n", "srt_jax.commands"),
        ("srt_jax.errors", "from srt_jax.config import RunConfig\n", "srt_jax.config"),
        ("srt_jax.config", "from srt_jax.data.store import SequenceStore\n", "data.store"),
        ("srt_jax.config.schema", "from srt_jax.models import counting\n", "models.counting"),
        ("srt_jax.scaling.points", "from srt_jax import config\n", "srt_jax.config"),
        ("srt_jax.scaling.loaders", "from srt_jax.train.run_dir import X\n", "train.run_dir"),
        ("srt_jax.scaling.plots", "from srt_jax.data import store\n", "srt_jax.data.store"),
        ("srt_jax.train.loop", "from srt_jax.scaling.laws import ChinchillaLaw\n", "scaling"),
        (
            "srt_jax.sweep.worker",
            "def f():\n    from srt_jax.commands.fit import run_fit\n",
            "srt_jax.commands.fit",
        ),
    ],
)
def test_the_checker_flags_an_upward_import_and_names_it(module, source, offender):
    problems = layering_violations(source, module)
    assert len(problems) == 1, problems
    assert module in problems[0]
    assert offender in problems[0]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("srt_jax.train.loop", "from srt_jax.data.sampler import WindowSampler\n"),
        ("srt_jax.train.step", "from . import losses\nfrom .losses import compute_loss\n"),
        ("srt_jax.sweep.export", "from srt_jax.scaling.loaders import EXPORT_COLUMNS\n"),
        ("srt_jax.scaling.report", "from srt_jax import __version__\n"),
        ("srt_jax.config.schema", "from srt_jax.config import RunConfig\nimport srt_jax.errors\n"),
        ("srt_jax.cli", "from srt_jax import commands\n"),
        ("srt_jax.data.store", "import numpy as np\nfrom collections import abc\n"),
    ],
)
def test_the_checker_accepts_imports_down_the_layers(module, source):
    assert layering_violations(source, module) == []


def test_relative_imports_resolve_against_the_module_package():
    source = "from . import store\nfrom ..train import loop\nfrom .. import errors, __version__\n"
    found = srt_jax_imports(source, "srt_jax.data.sampler")
    assert found == [
        (1, "srt_jax.data.store"),
        (2, "srt_jax.train.loop"),
        (3, "srt_jax.errors"),
        (3, "srt_jax"),
    ]
    in_init = srt_jax_imports("from .store import SequenceStore\n", "srt_jax.data", is_package=True)
    assert in_init == [(1, "srt_jax.data.store")]


def test_config_is_one_layer_as_a_module_or_as_a_package():
    assert layer_of("srt_jax.config") == layer_of("srt_jax.config.schema") == "config"
    assert layer_of("srt_jax.cli") == layer_of("srt_jax.commands.fit") == "commands"
    assert layer_of("srt_jax.errors") == layer_of("srt_jax") == "utilities"
    assert layer_of("srt_jax.newthing") is None

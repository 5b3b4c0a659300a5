"""``srt-jax doctor``: what a bug report needs — versions, JAX's backend and devices, the
CPU threads, the optional extras installed, and the data cache with its contents."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from srt_jax import __version__
from srt_jax.commands.output import finish

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "pyarrow")
"""Required packages whose versions a report shows."""
EXTRAS = ("ray", "tensorflow-datasets", "tensorboardX", "mlflow-skinny")
"""Optional packages: the Ray executor, the TFDS builder and trackers."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` command."""
    doctor = subparsers.add_parser(
        "doctor",
        help="versions, devices, extras and the data cache (for a bug report)",
        description="Print srt-jax's and its libraries' versions, JAX's backend and devices, "
        "the CPU threads available, which optional extras are installed, and the data cache "
        "($SRT_JAX_CACHE, default ~/.cache/srt-jax) with what it holds: what to paste into "
        "a bug report.",
    )
    doctor.set_defaults(handler=run_doctor)


def version_of(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_contents(cache: Path) -> list[dict[str, Any]]:
    """The entries directly under the data cache: name and size in bytes (files below
    summed), sorted by name; empty when the cache does not exist."""
    if not cache.is_dir():
        return []
    entries = []
    for entry in sorted(cache.iterdir()):
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        entries.append({"name": entry.name, "bytes": sum(p.stat().st_size for p in files)})
    return entries


def diagnosis() -> dict[str, Any]:
    """Everything ``srt-jax doctor`` reports, as one JSON-ready dict."""
    import jax

    from srt_jax.data.download import default_cache_dir

    cache = default_cache_dir()
    return {
        "srt_jax": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: version_of(name) for name in PACKAGES},
        "extras": {name: version_of(name) for name in EXTRAS},
        "jax_backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "cpu_threads": len(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cache": {"path": str(cache), "entries": cache_contents(cache)},
    }


def text_of(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`diagnosis`."""

    def listed(versions: dict[str, str | None]) -> str:
        return ", ".join(
            f"{name} {version or '(not installed)'}" for name, version in versions.items()
        )

    cache = report["cache"]
    held = ", ".join(f"{e['name']} ({e['bytes'] / 2**20:.1f} MiB)" for e in cache["entries"])
    return "\n".join(
        [
            f"srt-jax   {report['srt_jax']} on Python {report['python']} ({report['platform']})",
            f"packages  {listed(report['packages'])}",
            f"extras    {listed(report['extras'])}",
            f"jax       backend {report['jax_backend']}; devices {', '.join(report['devices'])}",
            f"cpu       {report['cpu_threads']} threads available; "
            f"XLA_FLAGS {report['xla_flags'] or '(unset)'}",
            f"cache     {cache['path']}: {held or 'empty'}",
        ]
    )


def run_doctor(args: argparse.Namespace) -> int:
    """Handler of ``srt-jax doctor``."""
    report = diagnosis()
    finish(args, report, text_of(report))
    return 0

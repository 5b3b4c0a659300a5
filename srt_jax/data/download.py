"""Fetch public interaction logs into a local cache, verified by SHA-256.

``movielens-100k`` comes from one of two places:

- ``grouplens``: the original ``ml-100k.zip`` from files.grouplens.org (the zip's SHA-256 is
  the one TFDS registers); its ``u.data`` is cached. Read it with ``--format movielens``.
- ``pypi``: the RecBole 1.2.1 wheel on PyPI, which ships MovieLens-100K as
  ``recbole/dataset_example/ml-100k/ml-100k.inter``. The wheel is fetched with
  ``pip download --no-deps`` (so only the package registry is needed), the member is checked
  against its SHA-256 and cached. Read it with ``--format recbole``.

Its item features (title, release year, genres) come from the same wheel's ``ml-100k.item``
(:func:`get_item_features`; RecBole atomic ``.item``, MovieLens movie ids, so they match the
ratings of either source).

``source="auto"`` returns a cached copy if there is one, else tries GroupLens, then PyPI.
Files are written to a temporary name and renamed once verified, so a cached file is always
a verified one. The cache directory is ``$SRT_JAX_CACHE`` or ``~/.cache/srt-jax``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from srt_jax.errors import DataError

SOURCES = ("auto", "grouplens", "pypi")
_DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipDownload:
    """A zip archive at ``url`` with a known SHA-256, and the member to keep from it."""

    url: str
    sha256: str
    member: str
    format: str


@dataclass(frozen=True)
class WheelMember:
    """A file inside the PyPI wheel ``package==version``, with its SHA-256."""

    package: str
    version: str
    member: str
    sha256: str
    format: str


@dataclass(frozen=True)
class ItemFeaturesFile:
    """A dataset's item side table: the wheel member, its reader format and the columns
    (``FeatureColumn.parse`` forms) to tokenise."""

    member: WheelMember
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    """Where to get a dataset: GroupLens-style zip and/or a PyPI wheel member, and its
    item features."""

    name: str
    grouplens: ZipDownload
    pypi: WheelMember
    item_features: ItemFeaturesFile | None = None


DATASETS = {
    "movielens-100k": Dataset(
        name="movielens-100k",
        grouplens=ZipDownload(
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            member="ml-100k/u.data",
            format="movielens",
        ),
        pypi=WheelMember(
            package="recbole",
            version="1.2.1",
            member="recbole/dataset_example/ml-100k/ml-100k.inter",
            sha256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            format="recbole",
        ),
        item_features=ItemFeaturesFile(
            member=WheelMember(
                package="recbole",
                version="1.2.1",
                member="recbole/dataset_example/ml-100k/ml-100k.item",
                sha256="51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
                format="recbole",
            ),
            columns=("movie_title:words", "release_year:whole", "class:multi: "),
        ),
    ),
}


@dataclass(frozen=True)
class Fetched:
    """A cached ratings file and the ``--format`` that reads it."""

    path: Path
    format: str
    cached: bool


def default_cache_dir() -> Path:
    """``$SRT_JAX_CACHE`` if set, else ``~/.cache/srt-jax``."""
    return Path(os.environ.get("SRT_JAX_CACHE") or Path.home() / ".cache" / "srt-jax")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_DOWNLOAD_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def get_dataset(
    name: str,
    cache_dir: str | Path | None = None,
    source: str = "auto",
    *,
    timeout_s: float = 10.0,
    pip_args: Sequence[str] = (),
) -> Fetched:
    """Return the cached ratings file of dataset ``name``, fetching it if needed.

    Args:
      name: a key of ``DATASETS`` (``movielens-100k``).
      cache_dir: cache directory (default :func:`default_cache_dir`).
      source: ``auto``, ``grouplens`` or ``pypi``.
      timeout_s: network timeout of the GroupLens download.
      pip_args: extra ``pip download`` options (an index mirror, or ``--find-links``).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    dataset = DATASETS[name]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / name
    grouplens_file = folder / Path(dataset.grouplens.member).name
    pypi_file = folder / Path(dataset.pypi.member).name
    if source in ("auto", "grouplens") and grouplens_file.is_file():
        return Fetched(grouplens_file, dataset.grouplens.format, cached=True)
    if (
        source in ("auto", "pypi")
        and pypi_file.is_file()
        and sha256_file(pypi_file) == dataset.pypi.sha256
    ):
        return Fetched(pypi_file, dataset.pypi.format, cached=True)
    errors = []
    if source in ("auto", "grouplens"):
        try:
            fetch_zip_member(dataset.grouplens, grouplens_file, timeout_s=timeout_s)
            return Fetched(grouplens_file, dataset.grouplens.format, cached=False)
        except DataError as err:
            if source == "grouplens":
                raise
            errors.append(str(err))
    try:
        fetch_wheel_member(dataset.pypi, pypi_file, pip_args=pip_args)
    except DataError as err:
        raise DataError("; ".join([*errors, str(err)])) from None
    return Fetched(pypi_file, dataset.pypi.format, cached=False)


def get_item_features(
    name: str, cache_dir: str | Path | None = None, *, pip_args: Sequence[str] = ()
) -> Fetched:
    """Return the cached item side table of dataset ``name``, fetching it if needed
    (``pip download`` of its wheel, the member checked against its SHA-256)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    spec = DATASETS[name].item_features
    if spec is None:
        raise DataError(f"dataset {name!r} has no item features")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = folder / name / Path(spec.member.member).name
    if dest.is_file() and sha256_file(dest) == spec.member.sha256:
        return Fetched(dest, spec.member.format, cached=True)
    fetch_wheel_member(spec.member, dest, pip_args=pip_args)
    return Fetched(dest, spec.member.format, cached=False)


def fetch_zip_member(spec: ZipDownload, dest: Path, *, timeout_s: float = 10.0) -> Path:
    """Download ``spec.url``, verify its SHA-256, extract ``spec.member`` to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            with (
                urllib.request.urlopen(spec.url, timeout=timeout_s) as response,
                open(archive, "wb") as out,
            ):
                shutil.copyfileobj(response, out, _DOWNLOAD_CHUNK)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DataError(f"cannot download {spec.url}: {err}") from None
        _verify(archive, spec.sha256, spec.url)
        _extract(archive, spec.member, dest, sha256=None)
    return dest


def fetch_wheel_member(spec: WheelMember, dest: Path, *, pip_args: Sequence[str] = ()) -> Path:
    """``pip download`` the wheel of ``spec``, extract ``spec.member`` (verified) to ``dest``.

    ``pip_args`` are extra pip options (tests pass ``--no-index --find-links DIR``).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    requirement = f"{spec.package}=={spec.version}"
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
            tmp,
            *pip_args,
            requirement,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob(f"{spec.package}-{spec.version}-*.whl"))
        if done.returncode != 0 or not wheels:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise DataError(
                f"pip download {requirement} failed (exit {done.returncode}): "
                f"{detail[-1] if detail else 'no wheel downloaded'}"
            )
        _extract(wheels[0], spec.member, dest, sha256=spec.sha256)
    return dest


def _verify(path: Path, sha256: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != sha256:
        raise DataError(f"checksum mismatch for {what}: SHA-256 {actual}, expected {sha256}")


def _extract(archive: Path, member: str, dest: Path, sha256: str | None) -> None:
    """Copy ``member`` of zip ``archive`` to ``dest`` (atomically), checking ``sha256``."""
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        with (
            zipfile.ZipFile(archive) as zipped,
            zipped.open(member) as src,
            open(partial, "wb") as out,
        ):
            shutil.copyfileobj(src, out, _DOWNLOAD_CHUNK)
    except KeyError:
        partial.unlink(missing_ok=True)
        raise DataError(f"{archive.name} has no member {member}") from None
    except zipfile.BadZipFile as err:
        partial.unlink(missing_ok=True)
        raise DataError(f"{archive.name} is not a valid zip archive: {err}") from None
    try:
        if sha256 is not None:
            _verify(partial, sha256, f"{member} in {archive.name}")
    except DataError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(dest)

"""The sequence store: every user's time-ordered item history as memory-mapped ragged arrays.

A store is a directory holding

- ``items.npy``       int32 [n_interactions]: item indices, users concatenated, each user's
                      history in time order. 0 is padding and never stored; items are
                      1..n_items.
- ``timestamps.npy``  int64 [n_interactions]: the interaction times (source units, usually s).
- ``offsets.npy``     int64 [n_users + 1]: user u's history is ``items[offsets[u]:offsets[u+1]]``.
- ``item_ids.npy``    [n_items + 1]: original id of each item index (entry 0 is a padding
                      sentinel: -1 or ""), so ``item_ids[items]`` maps back.
- ``user_ids.npy``    [n_users]: original id of each user.
- ``ratings.npy``     float32 [n_interactions], optional: explicit feedback where the source
                      had it.
- ``meta.json``       counts, source, filters, checksum, format version.
- ``feature_*``       optional: the items' attribute tokens (:mod:`srt_jax.data.item_features`),
                      described by ``meta.json``'s ``item_features``.

Format version 2 added the item features; version 1 stores (which never have them) still open.

Stores are written atomically (a temporary sibling directory renamed into place) and
opened with ``mmap_mode="r"``: nothing here loads ``items`` whole into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srt_jax.data.item_features import ItemFeatures
from srt_jax.errors import DataError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_FILES = (
    "items.npy",
    "timestamps.npy",
    "offsets.npy",
    "item_ids.npy",
    "user_ids.npy",
    "meta.json",
)
_CHECKSUM_CHUNK = 1 << 24


@dataclass
class StoreArrays:
    """Writable arrays of a store being built (memory-mapped files in a temporary dir).

    Fill ``items``, ``timestamps``, ``offsets`` (and ``ratings`` if present) in place, and
    set ``item_ids`` / ``user_ids`` before the ``create_store`` block ends; optionally set
    ``item_features`` and its ``meta.json`` record ``item_features_meta``.
    """

    items: np.memmap
    timestamps: np.memmap
    offsets: np.memmap
    ratings: np.memmap | None
    item_ids: np.ndarray | None = None
    user_ids: np.ndarray | None = None
    item_features: ItemFeatures | None = None
    item_features_meta: dict[str, Any] = field(default_factory=dict)


class SequenceStore:
    """Read-only view of a sequence store directory.

    Attributes:
      path: the store directory.
      meta: the parsed ``meta.json``.
      items: int32 [n_interactions] memmap.
      timestamps: int64 [n_interactions] memmap.
      offsets: int64 [n_users + 1] array (small; loaded).
      ratings: float32 [n_interactions] memmap or None.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(
                f"sequence store not found: {self.path} (make one with "
                f"`srt-jax data prepare` or `srt-jax data synth`)"
            )
        missing = [name for name in REQUIRED_FILES if not (self.path / name).is_file()]
        if missing:
            raise DataError(f"{self.path} is not a sequence store: missing {', '.join(missing)}")
        try:
            self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{self.path / 'meta.json'}: not valid JSON: {err}") from None
        version = self.meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise DataError(
                f"{self.path}: store format version {version!r} is not supported "
                f"(this srt-jax reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
                "prepare it again"
            )
        self.items = self._load("items.npy", np.int32)
        self.timestamps = self._load("timestamps.npy", np.int64)
        self.offsets = np.asarray(self._load("offsets.npy", np.int64))
        ratings = self.path / "ratings.npy"
        self.ratings = self._load("ratings.npy", np.float32) if ratings.is_file() else None
        self._item_features: ItemFeatures | None = None
        self._check_shapes()

    def _load(self, name: str, dtype: type) -> np.ndarray:
        try:
            array = np.load(self.path / name, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise DataError(f"{self.path / name}: cannot read as .npy: {err}") from None
        if array.dtype != dtype or array.ndim != 1:
            raise DataError(
                f"{self.path / name}: expected a 1-D {np.dtype(dtype).name} array, "
                f"got {array.ndim}-D {array.dtype}"
            )
        return array

    def _check_shapes(self) -> None:
        n = len(self.items)
        off = self.offsets
        if len(off) < 1 or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 0):
            raise DataError(
                f"{self.path / 'offsets.npy'}: offsets must start at 0, never "
                f"decrease and end at len(items) = {n}"
            )
        if len(self.timestamps) != n or (self.ratings is not None and len(self.ratings) != n):
            raise DataError(f"{self.path}: items, timestamps and ratings differ in length")
        for key, value in (("n_users", self.n_users), ("n_interactions", n)):
            if self.meta.get(key) != value:
                raise DataError(
                    f"{self.path / 'meta.json'}: {key} = {self.meta.get(key)} but "
                    f"the arrays hold {value}"
                )

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        """Number of real items; valid item indices are 1..n_items."""
        return int(self.meta["n_items"])

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n_users]: history length of each user."""
        return np.diff(self.offsets)

    def history(self, user: int) -> np.ndarray:
        """int32 [len]: user ``user``'s item indices in time order (a memmap view)."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def item_ids(self) -> np.ndarray:
        """[n_items + 1] original item ids (entry 0 is the padding sentinel)."""
        return np.load(self.path / "item_ids.npy", mmap_mode="r")

    def user_ids(self) -> np.ndarray:
        """[n_users] original user ids."""
        return np.load(self.path / "user_ids.npy", mmap_mode="r")

    @property
    def has_item_features(self) -> bool:
        """Whether the store holds item features (``--item-features`` at prepare time)."""
        return "item_features" in self.meta

    def item_features(self) -> ItemFeatures | None:
        """The items' feature tokens (loaded and checked on first call), or None."""
        if not self.has_item_features:
            return None
        if self._item_features is None:
            self._item_features = ItemFeatures.load(self.path, self.n_items)
        return self._item_features

    def checksum(self) -> str:
        """SHA-256 of items and offsets, as recorded in meta.json at write time."""
        return array_checksum(self.items, self.offsets)


def array_checksum(items: np.ndarray, offsets: np.ndarray) -> str:
    """SHA-256 hex digest of the bytes of ``items`` then ``offsets``, read in chunks."""
    digest = hashlib.sha256()
    for array in (items, offsets):
        for start in range(0, len(array), _CHECKSUM_CHUNK):
            digest.update(np.ascontiguousarray(array[start : start + _CHECKSUM_CHUNK]).tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def create_store(
    path: str | Path,
    n_users: int,
    n_interactions: int,
    n_items: int,
    meta: Mapping[str, Any],
    *,
    with_ratings: bool = False,
    overwrite: bool = False,
) -> Iterator[StoreArrays]:
    """Build a store in a temporary sibling directory; rename it into place on success.

    The caller fills the yielded :class:`StoreArrays`. If the block raises, nothing is left
    behind at ``path`` (and an existing store there is untouched).

    Args:
      path: final store directory.
      n_users, n_interactions, n_items: sizes; items must lie in 1..n_items.
      meta: extra metadata (source, filters, ...) merged into meta.json.
      with_ratings: also allocate ``ratings.npy``.
      overwrite: replace an existing store at ``path``; otherwise that is an error.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:

        def alloc(name: str, dtype: type, size: int) -> np.memmap:
            return np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dtype, shape=(size,))

        arrays = StoreArrays(
            items=alloc("items.npy", np.int32, n_interactions),
            timestamps=alloc("timestamps.npy", np.int64, n_interactions),
            offsets=alloc("offsets.npy", np.int64, n_users + 1),
            ratings=alloc("ratings.npy", np.float32, n_interactions) if with_ratings else None,
        )
        yield arrays
        _finish(tmp, arrays, n_users, n_interactions, n_items, meta)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish(
    tmp: Path,
    arrays: StoreArrays,
    n_users: int,
    n_interactions: int,
    n_items: int,
    meta: Mapping[str, Any],
) -> None:
    if arrays.item_ids is None or arrays.user_ids is None:
        raise ValueError("create_store: set item_ids and user_ids before the block ends")
    if len(arrays.item_ids) != n_items + 1 or len(arrays.user_ids) != n_users:
        raise ValueError(
            f"create_store: item_ids must have n_items + 1 = {n_items + 1} entries "
            f"and user_ids n_users = {n_users}"
        )
    for array in (arrays.items, arrays.timestamps, arrays.offsets, arrays.ratings):
        if array is not None:
            array.flush()
    np.save(tmp / "item_ids.npy", np.asarray(arrays.item_ids))
    np.save(tmp / "user_ids.npy", np.asarray(arrays.user_ids))
    features = {}
    if arrays.item_features is not None:
        arrays.item_features.check("create_store", n_items)
        arrays.item_features.save(tmp)
        features = {
            "item_features": {
                **arrays.item_features_meta,
                "vocab_size": arrays.item_features.vocab_size,
                "n_feature_tokens": len(arrays.item_features.tokens),
            }
        }
    record = {
        "format_version": FORMAT_VERSION,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_interactions,
        **meta,
        **features,
        "checksum": array_checksum(arrays.items, arrays.offsets),
    }
    (tmp / "meta.json").write_text(json.dumps(record, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is moved aside first, then deleted."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_store(
    path: str | Path,
    items: np.ndarray,
    timestamps: np.ndarray,
    offsets: np.ndarray,
    item_ids: np.ndarray,
    user_ids: np.ndarray,
    meta: Mapping[str, Any],
    *,
    ratings: np.ndarray | None = None,
    item_features: ItemFeatures | None = None,
    item_features_meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> SequenceStore:
    """Write in-memory arrays as a store (atomically) and open it.

    Args:
      items: int [n_interactions], values in 1..n_items, users concatenated in time order.
      timestamps: int [n_interactions].
      offsets: int [n_users + 1], starting at 0 and ending at n_interactions.
      item_ids: [n_items + 1] original ids, entry 0 the padding sentinel.
      user_ids: [n_users] original ids.
      meta: source, filters and other facts recorded in meta.json.
      ratings: optional float [n_interactions].
      item_features: optional feature tokens of the items, with ``item_features_meta``, the
        facts recorded about them in ``meta.json`` (source, counts).
    """
    n_items = len(item_ids) - 1
    if len(items) and (int(np.min(items)) < 1 or int(np.max(items)) > n_items):
        raise ValueError(f"write_store: items must lie in 1..{n_items}")
    with create_store(
        path,
        len(offsets) - 1,
        len(items),
        n_items,
        meta,
        with_ratings=ratings is not None,
        overwrite=overwrite,
    ) as arrays:
        arrays.items[:] = items
        arrays.timestamps[:] = timestamps
        arrays.offsets[:] = offsets
        if ratings is not None:
            arrays.ratings[:] = ratings
        arrays.item_ids = np.asarray(item_ids)
        arrays.user_ids = np.asarray(user_ids)
        arrays.item_features = item_features
        arrays.item_features_meta = dict(item_features_meta or {})
    return SequenceStore(path)

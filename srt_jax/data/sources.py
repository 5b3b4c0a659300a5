"""Resolve ``data.dataset`` into an opened sequence store, preparing built-ins once.

``data.dataset`` is a built-in dataset name (``movielens-100k``: fetched with
:func:`srt_jax.data.download.get_dataset` and prepared without filters, with its item
features from :func:`srt_jax.data.download.get_item_features`; a cached store prepared
before item features existed is prepared again, once), ``synthetic`` (made
by :func:`srt_jax.data.synthetic.synthesize_store` from ``data.synthetic``), or the path of a
store made by ``srt-jax data prepare`` / ``data synth``. Built-ins are prepared into
``<cache>/stores/`` under a file lock, so concurrent sweep workers prepare each one once.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srt_jax.config import DataConfig, config_hash
from srt_jax.data.download import DATASETS, default_cache_dir, get_dataset, get_item_features
from srt_jax.data.ingest import FeatureInput, prepare_store
from srt_jax.data.readers import FeatureColumn
from srt_jax.data.store import SequenceStore
from srt_jax.data.synthetic import synthesize_store
from srt_jax.errors import DataError

BUILTINS = (*DATASETS, "synthetic")


def store_path(data_cfg: DataConfig) -> Path:
    """Directory of the store ``data_cfg`` names (it may not exist yet for built-ins)."""
    if data_cfg.dataset not in BUILTINS:
        return Path(data_cfg.dataset)
    cache = Path(data_cfg.cache_dir) if data_cfg.cache_dir else default_cache_dir()
    if data_cfg.dataset == "synthetic":
        return cache / "stores" / f"synthetic-{config_hash(data_cfg.synthetic)}"
    return cache / "stores" / data_cfg.dataset


def open_dataset(data_cfg: DataConfig, *, progress: bool = True) -> SequenceStore:
    """The store of ``data_cfg.dataset``, fetching and preparing a built-in on first use."""
    path = store_path(data_cfg)
    if data_cfg.dataset not in BUILTINS:
        if not path.exists():
            raise DataError(
                f"data.dataset = {data_cfg.dataset!r} is neither a built-in dataset "
                f"({', '.join(BUILTINS)}) nor an existing store directory"
            )
        return SequenceStore(path)
    with file_lock(path):
        if data_cfg.dataset == "synthetic":
            if not path.exists():
                synth = data_cfg.synthetic
                synthesize_store(
                    path,
                    users=synth.users,
                    items=synth.items,
                    mean_length=synth.mean_length,
                    seed=synth.seed,
                    progress=progress,
                )
        elif not path.exists() or _lacks_item_features(data_cfg.dataset, path):
            _prepare_builtin(data_cfg, path, progress=progress)
    return SequenceStore(path)


def _lacks_item_features(dataset: str, path: Path) -> bool:
    """Whether the cached store of built-in ``dataset`` was prepared without the item
    features the dataset has."""
    return DATASETS[dataset].item_features is not None and not SequenceStore(path).has_item_features


def _prepare_builtin(data_cfg: DataConfig, path: Path, *, progress: bool) -> None:
    """Prepare built-in dataset ``data_cfg.dataset`` (with its item features) at ``path``."""
    fetched = get_dataset(data_cfg.dataset, data_cfg.cache_dir)
    features = DATASETS[data_cfg.dataset].item_features
    feature_input = None
    if features is not None:
        table = get_item_features(data_cfg.dataset, data_cfg.cache_dir)
        columns = tuple(FeatureColumn.parse(column) for column in features.columns)
        feature_input = FeatureInput(table.path, table.format, columns)
    prepare_store(
        [fetched.path],
        fetched.format,
        path,
        item_features=feature_input,
        overwrite=path.exists(),
        progress=progress,
    )


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (held across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

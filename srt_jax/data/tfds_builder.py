"""A TFDS builder that exposes a sequence store as a TFDS dataset (array_record, no TensorFlow).

``export_store`` writes dataset ``srt_store`` (version 1.0.0, split ``train``) under a TFDS
data directory, one example per user in user order:

- ``user``: int64, the user's index in the store;
- ``user_id``: text, the user's original id;
- ``items``: int32 [length], item indices 1..n_items in time order;
- ``timestamps``: int64 [length].

The files are ArrayRecord, so ``tfds.data_source`` / ``builder_from_directory(...)
.as_data_source()`` give random access (what grain consumes) without TensorFlow, and
``srt-jax data prepare DIR --format tfds`` reads them back into a store. Ratings are not
exported. The store's meta.json travels as the dataset's metadata (``metadata.json``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from srt_jax.data.store import SequenceStore
from srt_jax.errors import DataError

DATASET_NAME = "srt_store"


class SrtStore(tfds.core.GeneratorBasedBuilder):
    """One example per user of an srt-jax sequence store (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "One example per user."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. (tfds 4.9.10 finds it through the ``importlib_resources`` backport,
        which it declares only for Python < 3.9, so builders in packages fail without it.)"""
        return epath.Path(__file__)

    def __init__(self, *, store: str | Path | None = None, **kwargs: Any) -> None:
        """``store`` is needed to build; reading a built dataset needs only ``data_dir``."""
        self._store = None if store is None else SequenceStore(store)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        metadata = tfds.core.MetadataDict()
        if self._store is not None:
            metadata["store_meta"] = json.loads(json.dumps(self._store.meta))
        return tfds.core.DatasetInfo(
            builder=self,
            description="User histories of an srt-jax sequence store, one example per user.",
            features=tfds.features.FeaturesDict(
                {
                    "user": np.int64,
                    "user_id": tfds.features.Text(),
                    "items": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.int64),
                }
            ),
            metadata=metadata,
            disable_shuffling=True,  # example i is user i
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        if self._store is None:
            raise DataError("SrtStore needs store=PATH to build a dataset")
        return {"train": self._generate_examples(self._store)}

    def _generate_examples(self, store: SequenceStore) -> Iterator[tuple[int, dict[str, Any]]]:
        user_ids = store.user_ids()
        for user in range(store.n_users):
            start, stop = store.offsets[user], store.offsets[user + 1]
            yield (
                user,
                {
                    "user": user,
                    "user_id": str(user_ids[user]),
                    "items": np.asarray(store.items[start:stop]),
                    "timestamps": np.asarray(store.timestamps[start:stop]),
                },
            )


def export_store(store: str | Path, data_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Build the ``srt_store`` TFDS dataset of ``store`` under ``data_dir``.

    Returns:
      the dataset directory (``data_dir/srt_store/1.0.0``), readable with
      :func:`open_exported` or ``tfds.builder_from_directory``.
    """
    builder = SrtStore(store=store, data_dir=str(data_dir), file_format="array_record")
    target = Path(builder.data_dir)
    if target.exists():
        if not overwrite:
            raise DataError(f"{target} already exists (pass --overwrite to replace it)")
        shutil.rmtree(target)
        builder = SrtStore(store=store, data_dir=str(data_dir), file_format="array_record")
    with tempfile.TemporaryDirectory(prefix="srt-jax-tfds-") as downloads:
        builder.download_and_prepare(download_dir=downloads)
    return target


def open_exported(dataset_dir: str | Path, split: str = "train") -> Sequence[dict[str, Any]]:
    """Random-access data source over an exported dataset: ``source[u]`` is user u's dict."""
    try:
        builder = tfds.builder_from_directory(str(dataset_dir))
    except FileNotFoundError as err:
        raise DataError(f"{dataset_dir} is not a TFDS dataset directory: {err}") from None
    return builder.as_data_source(split=split)

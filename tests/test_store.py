"""Sequence store: atomic writes, memory-mapped reads, validation of damaged stores."""

import json

import numpy as np
import pytest

from srt_jax.data.store import SequenceStore, create_store, write_store
from srt_jax.errors import DataError


def _tiny(tmp_path, name="store", **kwargs):
    return write_store(
        tmp_path / name,
        items=np.array([1, 2, 3, 2, 3], np.int32),
        timestamps=np.array([10, 11, 12, 5, 6], np.int64),
        offsets=np.array([0, 3, 5], np.int64),
        item_ids=np.array([-1, 100, 200, 300]),
        user_ids=np.array([7, 9]),
        meta={"source": "test"},
        **kwargs,
    )


def test_write_and_open(tmp_path):
    store = _tiny(tmp_path, ratings=np.ones(5, np.float32))
    assert (store.n_users, store.n_items, store.n_interactions) == (2, 3, 5)
    assert isinstance(store.items, np.memmap)
    np.testing.assert_array_equal(store.history(1), [2, 3])
    np.testing.assert_array_equal(store.lengths, [3, 2])
    np.testing.assert_array_equal(store.item_ids()[store.history(0)], [100, 200, 300])
    assert store.meta["checksum"] == store.checksum()
    assert store.meta["source"] == "test" and store.ratings is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_store_needs_overwrite(tmp_path):
    _tiny(tmp_path)
    with pytest.raises(DataError, match="already exists"):
        _tiny(tmp_path)
    store = _tiny(tmp_path, overwrite=True)
    assert store.n_users == 2


def test_failed_build_leaves_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError),
        create_store(tmp_path / "s", 1, 2, 2, {}) as arrays,
    ):
        arrays.items[:] = [1, 2]
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_out_of_range_items_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"1\.\.3"):
        write_store(
            tmp_path / "s",
            np.array([0, 1], np.int32),
            np.zeros(2, np.int64),
            np.array([0, 2]),
            np.array([-1, 1, 2, 3]),
            np.array([0]),
            {},
        )
    assert list(tmp_path.iterdir()) == []


def test_damaged_stores_are_named(tmp_path):
    with pytest.raises(DataError, match="not found"):
        SequenceStore(tmp_path / "missing")
    store = _tiny(tmp_path)
    (store.path / "user_ids.npy").unlink()
    with pytest.raises(DataError, match=r"missing user_ids\.npy"):
        SequenceStore(store.path)
    store = _tiny(tmp_path, "v")
    meta = json.loads((store.path / "meta.json").read_text())
    meta["format_version"] = 99
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version"):
        SequenceStore(store.path)
    store = _tiny(tmp_path, "o")
    np.save(store.path / "offsets.npy", np.array([0, 3, 4], np.int64))
    with pytest.raises(DataError, match="offsets"):
        SequenceStore(store.path)

"""prepare_store: id encoding, sorting and tie-break, filters, meta and failure atomicity."""

import json

import numpy as np
import pyarrow as pa
import pytest

from srt_jax.data import ingest
from srt_jax.data.ingest import (
    Filters,
    IdEncoder,
    duplicate_rows,
    k_core,
    prepare_store,
    user_time_key,
)
from srt_jax.data.readers import ReadOptions
from srt_jax.data.store import SequenceStore
from srt_jax.errors import DataError

CSV_COLUMNS = ReadOptions(user_col="user", item_col="item", time_col="time", rating_col="rating")


def write_csv(path, rows):
    """rows: (user, item, time[, rating]) tuples; writes a csv with a header."""
    with_rating = len(rows[0]) == 4
    header = "user,item,time" + (",rating" if with_rating else "")
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def histories(store):
    """{original user id: [(original item id, time), ...]} of a store."""
    user_ids, item_ids = store.user_ids(), store.item_ids()
    return {
        user_ids[u].item(): [
            (item_ids[i].item(), int(t))
            for i, t in zip(
                store.history(u),
                store.timestamps[store.offsets[u] : store.offsets[u + 1]],
                strict=True,
            )
        ]
        for u in range(store.n_users)
    }


def prepare_csv(tmp_path, rows, name="store", **kwargs):
    path = write_csv(tmp_path / f"{name}.csv", rows)
    kwargs.setdefault(
        "read_options",
        CSV_COLUMNS
        if len(rows[0]) == 4
        else ReadOptions(user_col="user", item_col="item", time_col="time"),
    )
    return prepare_store(path, "csv", tmp_path / name, progress=False, **kwargs)


def test_id_encoder_numeric_ids_stay_int64_in_numeric_order():
    encoder = IdEncoder()
    encoder.add(pa.array(["10", "9", "10"]))
    encoder.add(pa.array(["100", "9"]))
    codes, ids = encoder.finish()
    assert ids.dtype == np.int64
    assert ids.tolist() == [9, 10, 100]
    assert ids[codes].tolist() == [10, 9, 10, 100, 9]


def test_id_encoder_text_ids_keep_leading_zeros():
    encoder = IdEncoder()
    encoder.add(pa.array(["007", "7", "B0x"]))
    encoder.add(pa.array([b"7".decode(), "abc"]))
    codes, ids = encoder.finish()
    assert ids.dtype.kind == "U"
    assert ids.tolist() == ["007", "7", "B0x", "abc"]
    assert ids[codes].tolist() == ["007", "7", "B0x", "7", "abc"]


def test_id_encoder_mixed_integer_and_text_chunks():
    encoder = IdEncoder()
    encoder.add(pa.array([3, 1], pa.int32()))
    encoder.add(pa.array(["1", "x"]))
    codes, ids = encoder.finish()
    assert ids.tolist() == ["1", "3", "x"]
    assert ids[codes].tolist() == ["3", "1", "1", "x"]


def test_histories_are_time_ordered_and_ties_keep_file_order(tmp_path):
    rows = [
        ("b", "i3", 5),
        ("a", "i1", 20),
        ("a", "i9", 10),
        ("a", "i2", 10),
        ("a", "i7", 10),
        ("a", "i0", 5),
    ]
    result = prepare_csv(tmp_path, rows)
    assert histories(result.store) == {
        "a": [("i0", 5), ("i9", 10), ("i2", 10), ("i7", 10), ("i1", 20)],
        "b": [("i3", 5)],
    }
    assert result.store.meta["tie_break"].startswith("input order")


def test_ties_across_files_follow_the_order_of_the_inputs(tmp_path):
    first = write_csv(tmp_path / "1.csv", [("u", "late-file-first", 5)])
    second = write_csv(tmp_path / "2.csv", [("u", "z", 1), ("u", "a", 5)])
    options = ReadOptions(user_col="user", item_col="item", time_col="time")
    store = prepare_store(
        [first, second], "csv", tmp_path / "s", read_options=options, progress=False
    ).store
    assert histories(store)["u"] == [("z", 1), ("late-file-first", 5), ("a", 5)]
    assert len(store.meta["source"]["files"]) == 2


@pytest.mark.parametrize("scale", [1, 2**40])
def test_user_time_key_sorts_like_user_then_time(scale):
    # scale 1: a time span near 2**63 forces ranks; 2**40: plain offsets fit
    users = np.array([1, 0, 1, 0, 1, 2])
    times = np.array([2**62, -(2**62), -5, 7, -5, 0]) // scale
    order = np.argsort(user_time_key(users, times), kind="stable")
    assert order.tolist() == np.lexsort((times, users)).tolist() == [1, 3, 2, 4, 0, 5]


def test_no_filters_keep_everything_and_numbering_follows_ids(tmp_path):
    rows = [(3, 30, 1, 1.0), (1, 20, 2, 2.0), (1, 10, 1, 5.0), (2, 10, 3, 4.0)]
    result = prepare_csv(tmp_path, rows)
    store = result.store
    assert (store.n_users, store.n_items, store.n_interactions) == (3, 3, 4)
    assert store.user_ids().tolist() == [1, 2, 3]
    assert store.item_ids().tolist() == [-1, 10, 20, 30]
    assert store.items.tolist() == [1, 2, 1, 3]
    assert store.ratings.tolist() == [5.0, 2.0, 4.0, 1.0]
    assert result.removed == {}
    meta = store.meta
    assert meta["filters"]["order"] == ["min_rating", "duplicates", "k_core", "max_users"]
    assert meta["source"]["format"] == "csv"
    assert meta["source"]["rows_read"] == 4
    assert meta["bad_rows"]["count"] == 0
    assert meta["checksum"] == store.checksum()


def test_k_core_reaches_the_fixed_point_by_hand():
    # users A=0, B=1, C=2, D=3; items 1..4. With thresholds 2/2:
    # pass 1 drops D (1 row) and item 4 (1 row): C is left with 1 row and item 3 with 1 row;
    # pass 2 drops C and item 3; pass 3 finds A and B with items 1 and 2, all at 2.
    users = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    items = np.array([1, 2, 3, 1, 2, 1, 4, 3])
    keep = np.ones(8, bool)
    passes = k_core(users, items, keep, min_user=2, min_item=2)
    assert passes == 2
    assert keep.tolist() == [True, True, False, True, True, False, False, False]


def test_k_core_through_prepare_records_passes(tmp_path):
    rows = [
        ("A", 1, 1),
        ("A", 2, 2),
        ("A", 3, 3),
        ("B", 1, 1),
        ("B", 2, 2),
        ("C", 1, 1),
        ("C", 4, 2),
        ("D", 3, 1),
    ]
    result = prepare_csv(
        tmp_path, rows, filters=Filters(min_user_interactions=2, min_item_interactions=2)
    )
    store = result.store
    assert histories(store) == {"A": [(1, 1), (2, 2)], "B": [(1, 1), (2, 2)]}
    assert store.meta["filters"]["k_core_passes"] == 2
    assert result.removed == {"k_core": 4}


def test_duplicate_policies():
    # rows sorted by (user, time, input order): user 0 has (5, t1) twice, (6, t1), (5, t2)
    users = np.array([0, 0, 0, 0, 1])
    items = np.array([5, 6, 5, 5, 5])
    times = np.array([1, 1, 1, 2, 1])
    assert duplicate_rows(users, items, times, "keep").tolist() == [False] * 5
    assert duplicate_rows(users, items, times, "first").tolist() == [
        False,
        False,
        True,
        False,
        False,
    ]
    assert duplicate_rows(users, items, times, "drop").tolist() == [True, False, True, False, False]


def test_duplicates_first_keeps_the_earliest_copy_in_file_order(tmp_path):
    rows = [("u", "x", 1, 1.0), ("u", "y", 1, 2.0), ("u", "x", 1, 5.0), ("v", "x", 1, 3.0)]
    first = prepare_csv(tmp_path, rows, "first", filters=Filters(duplicates="first"))
    assert first.store.ratings.tolist() == [1.0, 2.0, 3.0]
    dropped = prepare_csv(tmp_path, rows, "drop", filters=Filters(duplicates="drop"))
    assert histories(dropped.store) == {"u": [("y", 1)], "v": [("x", 1)]}
    assert dropped.removed == {"duplicates": 2}


def test_min_rating(tmp_path):
    rows = [("u", "x", 1, 1.0), ("u", "y", 2, 4.0), ("v", "x", 1, 3.5)]
    result = prepare_csv(tmp_path, rows, filters=Filters(min_rating=3.5))
    assert result.store.ratings.tolist() == [4.0, 3.5]
    assert result.removed == {"min_rating": 1}


def test_min_rating_without_ratings_is_an_error(tmp_path):
    with pytest.raises(DataError, match="needs an input with ratings"):
        prepare_csv(tmp_path, [("u", "x", 1)], filters=Filters(min_rating=3))
    assert not (tmp_path / "store").exists()


def test_max_users_sample_is_deterministic_and_nested(tmp_path):
    rows = [(f"u{u:02d}", f"i{(u * 7 + k) % 13}", k) for u in range(40) for k in range(3)]
    path = write_csv(tmp_path / "log.csv", rows)
    options = ReadOptions(user_col="user", item_col="item", time_col="time")

    def sample(name, n, seed):
        store = prepare_store(
            path,
            "csv",
            tmp_path / name,
            read_options=options,
            filters=Filters(max_users=n, seed=seed),
            progress=False,
        ).store
        assert np.all(store.lengths == 3)  # sampled users keep their whole history
        return set(store.user_ids().tolist())

    small, again, large = sample("a", 10, 3), sample("b", 10, 3), sample("c", 25, 3)
    assert len(small) == 10 and small == again
    assert small < large and len(large) == 25
    assert sample("d", 10, 4) != small
    assert len(sample("e", 1000, 3)) == 40


def test_filters_are_validated():
    with pytest.raises(DataError, match="duplicates policy 'last'"):
        Filters(duplicates="last")
    with pytest.raises(DataError, match="max_users must be >= 1"):
        Filters(max_users=0)
    with pytest.raises(DataError, match="min_user_interactions must be >= 0"):
        Filters(min_user_interactions=-1)


def test_bad_rows_are_recorded_in_meta(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\t100\n1\t11\t4\n2\t10\t3\tlater\n")
    store = prepare_store(
        path, "movielens", tmp_path / "s", skip_bad_rows=True, progress=False
    ).store
    bad = store.meta["bad_rows"]
    assert bad["count"] == 2
    assert bad["by_reason"] == {"wrong field count": 1, "missing or non-numeric time": 1}
    assert bad["examples"][0].endswith("u.data:2: wrong field count: '1\\t11\\t4'")
    assert store.meta["time_unit"] == "s"
    assert json.loads((tmp_path / "s" / "meta.json").read_text()) == store.meta


def no_leftovers(folder, name):
    return [p.name for p in folder.iterdir() if p.name.startswith(f".{name}")] == []


def test_a_bad_row_is_an_error_by_default_and_writes_nothing(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\t100\n1\t11\t4\n")
    with pytest.raises(DataError, match=r"u.data:2: wrong field count.*--skip-bad-rows"):
        prepare_store(path, "movielens", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    assert no_leftovers(tmp_path, "s")


def test_a_prepare_that_fails_while_writing_leaves_nothing(tmp_path, monkeypatch):
    rows = [(u, u % 3, u) for u in range(50)]
    path = write_csv(tmp_path / "log.csv", rows)
    options = ReadOptions(user_col="user", item_col="item", time_col="time")
    old = prepare_store(path, "csv", tmp_path / "s", read_options=options, progress=False)
    old_checksum = old.store.checksum()

    class FailingBar:
        """A progress bar that fails the store write half way (as a full disk would)."""

        def __init__(self, total, desc, *args, **kwargs):
            self.desc = desc

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            if self.desc == "write store":
                raise OSError("disk full")

    monkeypatch.setattr(ingest, "progress_bar", FailingBar)
    with pytest.raises(OSError, match="disk full"):
        prepare_store(
            path, "csv", tmp_path / "s", read_options=options, overwrite=True, progress=False
        )
    assert SequenceStore(tmp_path / "s").checksum() == old_checksum  # old store untouched
    assert no_leftovers(tmp_path, "s")
    with pytest.raises(OSError, match="disk full"):
        prepare_store(path, "csv", tmp_path / "t", read_options=options, progress=False)
    assert not (tmp_path / "t").exists()
    assert no_leftovers(tmp_path, "t")


def test_existing_output_needs_overwrite_and_is_checked_before_reading(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(DataError, match="already exists"):
        prepare_store(tmp_path / "missing.csv", "movielens", tmp_path / "s", progress=False)


def test_nothing_left_after_filters_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no interactions to store"):
        prepare_csv(tmp_path, [("u", "x", 1)], filters=Filters(min_user_interactions=5))
    assert not (tmp_path / "store").exists()

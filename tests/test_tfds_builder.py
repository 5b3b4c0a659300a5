"""TFDS without TensorFlow: export a store as array_record, read it back, read interaction-level
TFDS datasets built locally (never downloaded)."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from srt_jax.data.ingest import prepare_store
from srt_jax.data.readers import ReadOptions
from srt_jax.data.store import write_store
from srt_jax.data.tfds_builder import export_store, open_exported
from srt_jax.errors import DataError


@pytest.fixture
def store(tmp_path):
    # users "u1" (3 items), "u2" (1 item), "u3" (2 items); items 1..4 with text ids
    return write_store(
        tmp_path / "store",
        items=np.array([2, 1, 4, 3, 1, 2], np.int32),
        timestamps=np.array([5, 6, 6, 1, 2, 9], np.int64),
        offsets=np.array([0, 3, 4, 6], np.int64),
        item_ids=np.array(["", "a", "b", "c", "d"]),
        user_ids=np.array(["u1", "u2", "u3"]),
        meta={"time_unit": "s"},
    )


def test_export_gives_one_example_per_user_in_user_order(store, tmp_path):
    dataset_dir = export_store(store.path, tmp_path / "tfds")
    assert dataset_dir == tmp_path / "tfds" / "srt_store" / "1.0.0"
    assert any(p.name.startswith("srt_store-train.array_record") for p in dataset_dir.iterdir())
    source = open_exported(dataset_dir)
    assert len(source) == store.n_users
    for user in range(store.n_users):
        example = source[user]
        assert example["user"] == user
        assert example["user_id"].decode() == store.user_ids()[user]
        np.testing.assert_array_equal(example["items"], store.history(user))
        span = slice(store.offsets[user], store.offsets[user + 1])
        np.testing.assert_array_equal(example["timestamps"], store.timestamps[span])
    assert "tensorflow" not in sys.modules


def test_exported_dataset_prepares_back_into_the_same_store(store, tmp_path):
    dataset_dir = export_store(store.path, tmp_path / "tfds")
    by_dir = prepare_store(dataset_dir, "tfds", tmp_path / "back", progress=False).store
    options = ReadOptions(tfds_data_dir=str(tmp_path / "tfds"))
    by_name = prepare_store(
        "srt_store", "tfds", tmp_path / "back2", read_options=options, progress=False
    ).store
    for back in (by_dir, by_name):
        np.testing.assert_array_equal(back.items, store.items)
        np.testing.assert_array_equal(back.offsets, store.offsets)
        np.testing.assert_array_equal(back.timestamps, store.timestamps)
        assert back.user_ids().tolist() == store.user_ids().tolist()
        assert back.meta["time_unit"] == "s"


def test_export_refuses_to_overwrite_unless_asked(store, tmp_path):
    export_store(store.path, tmp_path / "tfds")
    with pytest.raises(DataError, match="already exists"):
        export_store(store.path, tmp_path / "tfds")
    assert len(open_exported(export_store(store.path, tmp_path / "tfds", overwrite=True))) == 3


class SrtJaxTestRatings(tfds.core.GeneratorBasedBuilder):
    """An interaction-level dataset shaped like TFDS movielens/*-ratings, built locally."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "user_id": tfds.features.Text(),
                    "movie_id": tfds.features.Text(),
                    "timestamp": np.int64,
                    "user_rating": np.float32,
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rows = [
            ("7", "50", 100, 4.0),
            ("7", "51", 90, 5.0),
            ("", "50", 80, 1.0),
            ("8", "50", 70, 3.0),
        ]
        for key, (user, movie, time, rating) in enumerate(rows):
            yield (
                key,
                {"user_id": user, "movie_id": movie, "timestamp": time, "user_rating": rating},
            )


def test_interaction_level_tfds_dataset_by_name(tmp_path):
    SrtJaxTestRatings(
        data_dir=str(tmp_path / "tfds"), file_format="array_record"
    ).download_and_prepare(download_dir=str(tmp_path / "downloads"))
    options = ReadOptions(tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataError, match=r"example 3: missing or empty user id"):
        prepare_store(
            "srt_jax_test_ratings", "tfds", tmp_path / "s", read_options=options, progress=False
        )
    result = prepare_store(
        "srt_jax_test_ratings",
        "tfds",
        tmp_path / "s",
        read_options=options,
        skip_bad_rows=True,
        progress=False,
    )
    store = result.store
    assert store.user_ids().tolist() == [7, 8]
    assert store.item_ids().tolist() == [-1, 50, 51]
    assert store.items.tolist() == [2, 1, 1]  # user 7 by time: 51 (t 90), 50 (t 100)
    assert store.ratings.tolist() == [5.0, 4.0, 3.0]
    assert result.bad_rows.count == 1
    example = result.bad_rows.examples[0]
    assert (example.kind, example.line, example.reason) == (
        "example",
        3,
        "missing or empty user id",
    )


def test_an_unknown_tfds_dataset_is_named(tmp_path):
    options = ReadOptions(tfds_data_dir=str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="TFDS dataset 'no_such_dataset' not found"):
        prepare_store(
            "no_such_dataset", "tfds", tmp_path / "s", read_options=options, progress=False
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ReadOptions(user_col="uid"), "feature 'uid' not found"),
        (ReadOptions(tfds_split="test"), "split 'test'"),
    ],
)
def test_tfds_errors_name_the_feature_or_split(tmp_path, store, options, message):
    dataset_dir = export_store(store.path, tmp_path / "tfds")
    with pytest.raises(DataError, match=message):
        prepare_store(dataset_dir, "tfds", tmp_path / "s", read_options=options, progress=False)
    assert not (tmp_path / "s").exists()


def sequence_dataset(tmp_path, timestamps_of_second, user_type=np.int64):
    """Three users' histories; the second one's timestamps are ``timestamps_of_second``."""
    from fuzz_tfds import FuzzTfds

    def example(user, items, timestamps):
        return {
            "user": user,
            "items": np.array(items, np.int64),
            "timestamps": np.array(timestamps, np.int64),
        }

    features = {
        "user": user_type,
        "items": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.int64),
    }
    examples = [
        example(1, [5, 6], [1, 2]),
        example(2, [5, 7, 8], timestamps_of_second),
        example(3, [6], [4]),
    ]
    builder = FuzzTfds(
        features=features,
        examples=examples,
        data_dir=str(tmp_path / "tfds"),
        file_format="array_record",
    )
    builder.download_and_prepare(download_dir=str(tmp_path / "downloads"))
    return builder.data_dir


def test_an_example_whose_features_differ_in_length_is_a_bad_row(tmp_path):
    dataset = sequence_dataset(tmp_path, [1, 2])  # 3 items, 2 timestamps
    with pytest.raises(DataError, match=r"example 2: 1-D features of different lengths"):
        prepare_store(dataset, "tfds", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    result = prepare_store(dataset, "tfds", tmp_path / "s", skip_bad_rows=True, progress=False)
    assert result.store.user_ids().tolist() == [1, 3]
    assert result.store.items.tolist() == [1, 2, 2]  # items 5, 6 and 6
    assert result.bad_rows.by_reason == {"1-D features of different lengths": 1}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("dataset_info.json", r"cannot read dataset_info.json or features.json \(damaged\?\)"),
        (
            "fuzz_tfds-train.array_record-00000-of-00001",
            "example 1 has no user, items, timestamps: its file is damaged",
        ),
    ],
)
def test_a_damaged_or_missing_file_is_named(tmp_path, damage, message):
    dataset = sequence_dataset(tmp_path, [1, 2, 3])
    target = tmp_path / "tfds" / "fuzz_tfds" / "1.0.0" / damage
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    with pytest.raises(DataError, match=f"TFDS dataset '{dataset}': {message}"):
        prepare_store(dataset, "tfds", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_a_float_id_feature_is_an_error_naming_the_dataset(tmp_path):
    dataset = sequence_dataset(tmp_path, [1, 2, 3], user_type=np.float32)
    with pytest.raises(
        DataError, match=f"TFDS dataset '{dataset}': user id column has type double"
    ):
        prepare_store(dataset, "tfds", tmp_path / "s", progress=False)

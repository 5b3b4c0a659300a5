"""TFDS inputs: a prepared TFDS dataset (by name, or its directory) in a random-access file
format (array_record), read without TensorFlow. Features are either one interaction per
example (scalars, like ``movielens/100k-ratings``) or one user per example (1-D items and
timestamps, like the datasets ``srt-jax data export-tfds`` writes)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from srt_jax.data.readers.base import (
    REASONS,
    UNEQUAL_LENGTHS,
    BadRow,
    BadRows,
    Chunk,
    Columns,
    ReadOptions,
    Source,
)
from srt_jax.data.readers.checks import check_counted
from srt_jax.errors import DataError, SrtJaxError, first_line

TFDS_BATCH = 4096

_TFDS_DEFAULTS = {
    "user": ("user_id", "user"),
    "item": ("movie_id", "item_id", "items", "item"),
    "time": ("timestamp", "timestamps"),
    "rating": ("user_rating", "rating", "ratings"),
}


class TfdsSource(Source):
    """A prepared TFDS dataset read through ``tfds`` data sources (no TensorFlow needed).

    ``name_or_dir`` is a dataset directory (holding ``dataset_info.json``) or a name such as
    ``movielens/100k-ratings`` looked up in ``options.tfds_data_dir``. The dataset must be
    prepared in a random-access format (array_record); nothing is downloaded.
    """

    unit = "examples"

    def __init__(self, name_or_dir: str, options: ReadOptions) -> None:
        import tensorflow_datasets as tfds  # slow import: only when a TFDS input is read

        self.path = name_or_dir
        try:
            if Path(name_or_dir).is_dir():
                with _damaged(name_or_dir, "dataset_info.json or features.json"):
                    builder = tfds.builder_from_directory(name_or_dir)
            else:
                builder = tfds.builder(name_or_dir, data_dir=options.tfds_data_dir)
        except (tfds.core.registered.DatasetNotFoundError, FileNotFoundError, ValueError) as err:
            raise DataError(
                f"TFDS dataset {name_or_dir!r} not found (data dir "
                f"{options.tfds_data_dir or 'default'}): "
                f"{first_line(err)}"
            ) from None
        if not builder.is_prepared():
            raise DataError(
                f"TFDS dataset {name_or_dir!r} is not prepared in "
                f"{builder.data_dir}; srt-jax never downloads TFDS data: build it "
                f"first (tfds build --file_format=array_record)"
            )
        try:
            self._source = builder.as_data_source(split=options.tfds_split)
        except (NotImplementedError, ValueError, KeyError) as err:
            raise DataError(
                f"TFDS dataset {name_or_dir!r}, split {options.tfds_split!r}: "
                f"cannot open for random access without TensorFlow "
                f"(file format {builder.info.file_format}; rebuild it with "
                f"--file_format=array_record): {first_line(err)}"
            ) from None
        except Exception as err:  # a missing or damaged shard, as its reader reports it
            raise DataError(
                f"TFDS dataset {name_or_dir!r}: cannot read split {options.tfds_split!r} "
                f"(damaged?): {first_line(err)}"
            ) from None
        features = list(builder.info.features.keys())
        self.time_unit = (builder.info.metadata or {}).get("store_meta", {}).get("time_unit")
        self.columns = Columns(
            self._feature(features, options.user_col, "user"),
            self._feature(features, options.item_col, "item"),
            self._feature(features, options.time_col, "time"),
            self._feature(features, options.rating_col, "rating", required=False),
        )
        self.layout = f"tfds {builder.info.full_name} split {options.tfds_split}"
        self.has_ratings = self.columns.rating is not None
        self.size = len(self._source)

    def _feature(
        self, features: list[str], given: str | None, role: str, required: bool = True
    ) -> str | None:
        """The feature named ``given``, else the first default name for ``role`` present."""
        if given is not None and given not in features:
            raise DataError(
                f"TFDS dataset {self.path!r}: feature {given!r} not found; the "
                f"features are {', '.join(features)}"
            )
        name = given or next((name for name in _TFDS_DEFAULTS[role] if name in features), None)
        if name is None and required:
            raise DataError(
                f"TFDS dataset {self.path!r}: no {role} feature among "
                f"{', '.join(features)}; name it with --{role}-col"
            )
        return name

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        for start in range(0, len(self._source), TFDS_BATCH):
            keys = list(range(start, min(start + TFDS_BATCH, len(self._source))))
            with _damaged(self.path, f"examples {keys[0] + 1}-{keys[-1] + 1}"):
                examples = self._source.__getitems__(keys)
            examples = self._checked_examples(examples, start, bad)
            table, example_of_row = _tfds_table(examples, self.columns)
            examples_1based = start + example_of_row + 1
            try:
                chunk = check_counted(
                    table, self.path, self.columns, bad, examples_1based, "example"
                )
            except DataError as err:  # a feature of a type no id or time can have
                raise DataError(f"TFDS dataset {self.path!r}: {err}") from None
            yield chunk, len(keys)

    def _checked_examples(
        self, examples: Sequence[dict[str, Any]], start: int, bad: BadRows
    ) -> list[dict[str, Any] | None]:
        """``examples`` (numbered from ``start + 1``) with None for each whose 1-D item, time
        and rating features have different lengths, each counted in ``bad``.

        Raises:
          DataError: an example lacks a feature, which TFDS never writes: ArrayRecord
            decodes a record of a damaged file as an example without features.
        """
        names = self.columns.names
        kept: list[dict[str, Any] | None] = []
        unequal = []
        for number, example in enumerate(examples, start + 1):
            missing = [name for name in names if example.get(name) is None]
            if missing:
                raise DataError(
                    f"TFDS dataset {self.path!r}: example {number} has no "
                    f"{', '.join(missing)}: its file is damaged"
                )
            sizes = {name: np.size(example[name]) for name in names if name != self.columns.user}
            if np.ndim(example[self.columns.item]) == 1 and len(set(sizes.values())) > 1:
                reason = REASONS[UNEQUAL_LENGTHS]
                unequal.append(BadRow(self.path, number, reason, str(sizes), "example"))
                kept.append(None)
            else:
                kept.append(example)
        bad.add_counts(np.full(len(unequal), UNEQUAL_LENGTHS, np.int8))
        if bad.wants_examples:
            bad.add_examples(unequal)
        return kept


@contextmanager
def _damaged(path: str, what: str) -> Iterator[None]:
    """Any error but srt-jax's own while reading ``what`` of the TFDS dataset at ``path``
    (TFDS, protobuf and ArrayRecord raise their own kinds for damaged files) becomes a
    DataError naming both."""
    try:
        yield
    except SrtJaxError:
        raise
    except Exception as err:
        raise DataError(
            f"TFDS dataset {path!r}: cannot read {what} (damaged?): {first_line(err)}"
        ) from None


def _tfds_table(
    examples: Sequence[dict[str, Any] | None], columns: Columns
) -> tuple[pa.Table, np.ndarray]:
    """Columns of a batch of decoded examples (None: left out), and the batch index of each
    row.

    Scalar features give one row per example; when the item feature is 1-D, each example is
    one user's history (items, timestamps and ratings 1-D of equal length, the user scalar)
    and gives one row per item.
    """
    present = np.flatnonzero([example is not None for example in examples])
    examples = [example for example in examples if example is not None]
    lengths = np.array([np.size(example[columns.item]) for example in examples], np.int64)
    sequence = bool(examples) and np.ndim(examples[0][columns.item]) == 1
    example_of_row = (
        np.repeat(np.arange(len(examples)), lengths) if sequence else np.arange(len(examples))
    )

    def values(name: str, per_row: bool) -> pa.Array:
        raw = [example[name] for example in examples]
        if per_row and sequence:
            flat = np.concatenate(raw) if raw else np.array([])
        else:
            flat = np.asarray(raw)[example_of_row] if sequence else np.asarray(raw)
        if flat.dtype.kind in "SO":
            return pa.array(
                [None if v is None else bytes(v).decode("utf-8", "replace") for v in flat],
                pa.string(),
            )
        return pa.array(flat)

    table = pa.table(
        {
            columns.user: values(columns.user, per_row=False),
            columns.item: values(columns.item, per_row=True),
            columns.time: values(columns.time, per_row=True),
            **({columns.rating: values(columns.rating, per_row=True)} if columns.rating else {}),
        }
    )
    return table, present[example_of_row]

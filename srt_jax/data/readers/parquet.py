"""Parquet inputs: any table with named user, item and time (and rating) columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from srt_jax.data.readers.base import BadRows, Chunk, Columns, Source
from srt_jax.data.readers.checks import check_counted
from srt_jax.errors import DataError, first_line


class ParquetSource(Source):
    """A Parquet file read batch by batch; bad rows are located by 1-based row number."""

    unit = "rows"

    def __init__(self, path: Path, columns: Columns) -> None:
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file: {first_line(err)}") from None
        names = self._file.schema_arrow.names
        missing = [name for name in columns.names if name not in names]
        if missing:
            raise DataError(
                f"{path}: column {missing[0]!r} not found; the columns are {', '.join(names)}"
            )
        self.path, self.columns = str(path), columns
        self.layout, self.time_unit = "parquet", None
        self.has_ratings = columns.rating is not None
        self.size = self._file.metadata.num_rows

    def chunks(self, bad: BadRows) -> Iterator[tuple[Chunk, int]]:
        """Batches of rows checked like any reader's; a damaged page or a column of an
        unusable type is a DataError naming the file."""
        start = 0
        batches = self._file.iter_batches(batch_size=1 << 20, columns=self.columns.names)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as err:
                raise DataError(
                    f"{self.path}: not a readable Parquet file: {first_line(err)}"
                ) from None
            rows = np.arange(start + 1, start + batch.num_rows + 1)
            table = pa.Table.from_batches([batch])
            try:
                chunk = check_counted(table, self.path, self.columns, bad, rows, "row")
            except DataError as err:
                raise DataError(f"{self.path}: {err}") from None
            yield chunk, len(rows)
            start += len(rows)

"""Ingestion throughput and memory: prepare a large generated CSV into a sequence store.

Writes a CSV of ``--rows`` interactions (``user,item,rating,timestamp``; users uniform, item
popularity skewed), runs ``prepare_store`` on it, and prints rows/s, the peak resident memory
of the process (``resource.getrusage``) and, as a reference measured in the same process on
the same file, the rate at which pyarrow's streaming CSV reader alone parses it (all columns,
no further work). Timings on a shared machine are noisy; the ratio is the figure to compare.

    python benchmarks/bench_ingest.py --rows 10000000
    python benchmarks/bench_ingest.py --rows 100000000 --dir /big/disk   # must stay < 24 GiB

Files are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from srt_jax.data.ingest import prepare_store
from srt_jax.data.readers import ReadOptions
from srt_jax.progress import progress_bar

GENERATE_CHUNK = 2_000_000


def generate_csv(
    path: Path, rows: int, users: int, items: int, text_ids: bool, seed: int = 0
) -> None:
    """Write ``rows`` random interactions to ``path`` in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    schema = pa.schema(
        [
            ("user", pa.string() if text_ids else pa.int64()),
            ("item", pa.string() if text_ids else pa.int64()),
            ("rating", pa.float32()),
            ("timestamp", pa.int64()),
        ]
    )
    with (
        pa_csv.CSVWriter(path, schema) as writer,
        progress_bar(rows, "generate csv", "rows") as bar,
    ):
        for start in range(0, rows, GENERATE_CHUNK):
            n = min(GENERATE_CHUNK, rows - start)
            user = rng.integers(1, users + 1, n)
            item = (items * rng.random(n) ** 3).astype(np.int64) + 1  # popular low ids
            columns = [user, item]
            if text_ids:
                columns = [
                    pa.compute.binary_join_element_wise(prefix, pa.array(c).cast(pa.string()), "")
                    for prefix, c in (("u", user), ("i", item))
                ]
            writer.write_table(
                pa.table(
                    {
                        "user": columns[0],
                        "item": columns[1],
                        "rating": rng.integers(1, 6, n).astype(np.float32),
                        "timestamp": rng.integers(1_000_000_000, 1_700_000_000, n),
                    },
                    schema=schema,
                )
            )
            bar.update(n)


def pyarrow_read_rate(path: Path) -> float:
    """Rows/s of pyarrow's streaming CSV reader over ``path`` (the reference)."""
    started = time.perf_counter()
    rows = sum(batch.num_rows for batch in pa_csv.open_csv(path))
    return rows / (time.perf_counter() - started)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, help="default rows / 100")
    parser.add_argument("--items", type=int, help="default rows / 500")
    parser.add_argument("--text-ids", action="store_true", help="ids like u123 / i45")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the store")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    users = args.users or max(1, args.rows // 100)
    items = args.items or max(1, args.rows // 500)
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path, store_path = work / "log.csv", work / "store"
    try:
        generate_csv(csv_path, args.rows, users, items, args.text_ids)
        rss_before = peak_rss_gib()
        options = ReadOptions(
            user_col="user", item_col="item", time_col="timestamp", rating_col="rating"
        )
        started = time.perf_counter()
        result = prepare_store(csv_path, "csv", store_path, read_options=options, overwrite=True)
        seconds = time.perf_counter() - started
        peak = peak_rss_gib()
        reference = pyarrow_read_rate(csv_path)
        figures = {
            "rows": args.rows,
            "users": result.store.n_users,
            "items": result.store.n_items,
            "text_ids": args.text_ids,
            "csv_gib": csv_path.stat().st_size / 2**30,
            "prepare_s": seconds,
            "prepare_rows_per_s": args.rows / seconds,
            "pyarrow_read_rows_per_s": reference,
            "ratio_to_pyarrow_read": args.rows / seconds / reference,
            "peak_rss_gib": peak,
            "peak_rss_before_prepare_gib": rss_before,
        }
    finally:
        if not args.keep:
            csv_path.unlink(missing_ok=True)
            shutil.rmtree(store_path, ignore_errors=True)
            if not args.dir:
                shutil.rmtree(work, ignore_errors=True)
    print(
        f"prepared {figures['rows']:,} rows ({figures['csv_gib']:.2f} GiB csv; "
        f"{figures['users']:,} users, {figures['items']:,} items) in "
        f"{figures['prepare_s']:.1f} s: {figures['prepare_rows_per_s'] / 1e6:.2f} M rows/s"
    )
    print(
        f"pyarrow streaming csv read alone: {reference / 1e6:.2f} M rows/s -> prepare runs at "
        f"{figures['ratio_to_pyarrow_read']:.2f}x the raw parse rate"
    )
    print(f"peak RSS {peak:.2f} GiB ({peak * 2**30 / args.rows:.0f} bytes/row)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

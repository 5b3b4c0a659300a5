"""Fuzzing ``data prepare``'s readers: what an input is made of, and the one property every
outcome must have.

An input is a file of one format built from near-valid content (real-looking rows of the
format) damaged by random mutations — bytes flipped, inserted or deleted, NULs, a BOM,
mixed line endings, wrong delimiters, huge lines, truncation, gzip (truncated or corrupted
too) — or arbitrary bytes. :func:`check_outcome` prepares a store from it and accepts
exactly two outcomes: a valid store that opens and whose counts agree, or a
:class:`~srt_jax.errors.SrtJaxError` whose message is one line naming the file, with
nothing left at the store's path or beside it. Any other exception is a failure.

Used by ``tests/test_fuzz_readers.py`` (a few hundred inputs in CI) and
``benchmarks/fuzz_readers.py`` (10,000 and more, with counts).
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from srt_jax.data.ingest import prepare_store
from srt_jax.data.readers import ReadOptions
from srt_jax.data.store import SequenceStore
from srt_jax.errors import SrtJaxError

TEXT_FORMATS = ("movielens", "recbole", "amazon", "csv")
"""The formats read from text files."""
FORMATS = (*TEXT_FORMATS, "parquet")
"""The formats fuzzed as files (TFDS datasets, directories: tests/fuzz_tfds.py)."""
CSV_OPTIONS = ReadOptions(user_col="user", item_col="item", time_col="ts")


def valid_lines(fmt: str, rng: random.Random, n: int) -> list[bytes]:
    """``n`` well-formed lines of ``fmt`` (a header first where the format has one)."""
    rows = [
        (rng.randint(1, 30), rng.randint(1, 50), rng.randint(1, 5), rng.randint(0, 10**9))
        for _ in range(n)
    ]
    if fmt == "movielens":
        return [f"{u}\t{i}\t{r}\t{t}".encode() for u, i, r, t in rows]
    if fmt == "recbole":
        head = b"user_id:token\titem_id:token\trating:float\ttimestamp:float"
        return [head, *(f"{u}\t{i}\t{r}\t{t}".encode() for u, i, r, t in rows)]
    if fmt == "amazon":
        return [
            json.dumps(
                {"reviewerID": f"U{u}", "asin": f"A{i}", "overall": r, "unixReviewTime": t}
            ).encode()
            for u, i, r, t in rows
        ]
    return [b"user,item,ts", *(f"{u},{i},{t}".encode() for u, i, _, t in rows)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one to four random damages."""
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(
            ["flip", "insert", "delete", "nul", "bom", "crlf", "delimiter", "huge", "truncate"]
        )
        at = rng.randint(0, len(data))
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ rng.randint(1, 255)]) + data[at + 1 :]
        elif kind == "insert":
            data = (
                data[:at] + bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 8))) + data[at:]
            )
        elif kind == "delete":
            data = data[:at] + data[at + rng.randint(1, 16) :]
        elif kind == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "crlf":
            data = data.replace(b"\n", rng.choice([b"\r\n", b"\r", b"\n\n"]), rng.randint(1, 5))
        elif kind == "delimiter":
            old, new = rng.choice([(b"\t", b","), (b",", b";"), (b"\t", b" "), (b":", b"::")])
            data = data.replace(old, new, rng.randint(1, 50))
        elif kind == "huge":
            data = data[:at] + b"9" * rng.randint(10_000, 200_000) + data[at:]
        elif kind == "truncate":
            data = data[:at]
    return data


def parquet_table(rng: random.Random) -> bytes:
    """A Parquet file with ``user``, ``item``, ``ts`` columns of a random variant: integers,
    strings, floats (some not finite), nulls, a missing column, a nested column."""
    n = rng.randint(0, 40)
    users = [rng.randint(1, 30) for _ in range(n)]
    items = [rng.randint(1, 50) for _ in range(n)]
    times = [rng.randint(0, 10**9) for _ in range(n)]
    variant = rng.choice(["ints", "strings", "floats", "nulls", "missing", "nested", "huge"])
    columns: dict[str, pa.Array] = {
        "user": pa.array(users, pa.int64()),
        "item": pa.array(items, pa.int64()),
        "ts": pa.array(times, pa.int64()),
    }
    if variant == "strings":
        columns[rng.choice(list(columns))] = pa.array(
            [rng.choice(["7", "x", ""]) for _ in range(n)]
        )
    elif variant == "floats":
        values = [rng.choice([1.5, float("nan"), float("inf"), -3.0, 1e300]) for _ in range(n)]
        columns[rng.choice(list(columns))] = pa.array(values, pa.float64())
    elif variant == "nulls":
        key = rng.choice(list(columns))
        columns[key] = pa.array([None if rng.random() < 0.3 else 1 for _ in range(n)], pa.int64())
    elif variant == "missing":
        del columns[rng.choice(list(columns))]
    elif variant == "nested":
        columns[rng.choice(list(columns))] = pa.array([[1, 2]] * n, pa.list_(pa.int64()))
    elif variant == "huge":
        columns["ts"] = pa.array([2**62 + rng.randint(0, 9) for _ in range(n)], pa.int64())
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def make_input(fmt: str, seed: int) -> tuple[bytes, bool]:
    """``(file content, gzipped)`` of fuzz input ``seed`` of ``fmt``."""
    rng = random.Random(seed)
    if fmt == "parquet":
        if rng.random() < 0.1:
            return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 400))), False
        data = parquet_table(rng)
        return (mutate(data, rng) if rng.random() < 0.5 else data), False
    if rng.random() < 0.1:
        data = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 400)))
    else:
        data = b"\n".join(valid_lines(fmt, rng, rng.randint(0, 40))) + rng.choice([b"", b"\n"])
        if rng.random() < 0.9:
            data = mutate(data, rng)
    gzipped = rng.random() < 0.2
    if gzipped:
        data = gzip.compress(data)
        if rng.random() < 0.5:
            data = mutate(data, rng)  # a truncated or corrupted archive
    return data, gzipped


def check_outcome(
    fmt: str, data: bytes, gzipped: bool, work: Path, *, skip_bad_rows: bool = False
) -> str:
    """Prepare a store from ``data`` in ``work`` (by default a bad row is an error; with
    ``skip_bad_rows``, the lenient mode): :func:`check_prepared` of the file written."""
    work.mkdir(parents=True, exist_ok=True)
    name = {
        "movielens": "u.data",
        "recbole": "log.inter",
        "amazon": "reviews.json",
        "parquet": "log.parquet",
    }
    path = work / (name.get(fmt, "log.csv") + (".gz" if gzipped else ""))
    path.write_bytes(data)
    options = CSV_OPTIONS if fmt in ("csv", "parquet") else None
    return check_prepared(path, fmt, work, options, skip_bad_rows=skip_bad_rows)


def check_prepared(
    path: Path,
    fmt: str,
    work: Path,
    options: ReadOptions | None,
    *,
    skip_bad_rows: bool = False,
) -> str:
    """Prepare ``work/store`` from the input at ``path``; ``"store"`` or ``"error"``, the only
    two outcomes allowed (an AssertionError says what else happened; other exceptions pass
    up)."""
    out = work / "store"
    before = set(work.iterdir())
    try:
        result = prepare_store(
            path, fmt, out, read_options=options, skip_bad_rows=skip_bad_rows, progress=False
        )
    except SrtJaxError as err:
        message = str(err)
        assert "\n" not in message.strip(), f"a message of several lines: {message!r}"
        assert str(path) in message or path.name in message, f"the file is not named: {message!r}"
        assert set(work.iterdir()) == before, f"left behind: {set(work.iterdir()) - before}"
        return "error"
    store = SequenceStore(out)
    assert store.n_interactions == result.store.n_interactions > 0
    assert store.n_users >= 1 and store.n_items >= 1
    return "store"

"""Readers: every format on small fixture files, bad-row accounting and error messages."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srt_jax.data.readers import BadRow, BadRows, ReadOptions, check_columns, open_source
from srt_jax.errors import DataError


def read_rows(path, fmt, options=None):
    """All good rows as (user, item, time, rating) tuples, and the BadRows."""
    source = open_source(path, fmt, options)
    bad = BadRows()
    rows = []
    for chunk, _ in source.chunks(bad):
        ratings = chunk.ratings.tolist() if chunk.ratings is not None else [None] * len(chunk)
        rows += zip(
            chunk.users.to_pylist(),
            chunk.items.to_pylist(),
            chunk.timestamps.tolist(),
            ratings,
            strict=True,
        )
    return source, rows, bad


EXPECTED = [("1", "10", 100, 5.0), ("1", "11", 90, 4.0), ("2", "10", 80, 3.0)]


@pytest.mark.parametrize(
    ("name", "text", "layout"),
    [
        ("u.data", "1\t10\t5\t100\n1\t11\t4\t90\n2\t10\t3\t80\n", "u.data"),
        ("ratings.dat", "1::10::5::100\n1::11::4::90\n2::10::3::80\n", "ratings.dat"),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,10,5.0,100\n1,11,4.0,90\n2,10,3.0,80\n",
            "header",
        ),
        ("ratings_nohead.csv", "1,10,5,100\n1,11,4,90\n2,10,3,80\n", "ratings.csv"),
    ],
)
def test_movielens_layouts_are_detected(tmp_path, name, text, layout):
    path = tmp_path / name
    path.write_text(text)
    source, rows, bad = read_rows(path, "movielens")
    assert layout in source.layout
    assert rows == EXPECTED
    assert bad.count == 0
    assert source.time_unit == "s"


def test_movielens_rejects_an_unknown_layout(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("just some words\n")
    with pytest.raises(DataError, match="not a MovieLens ratings file"):
        open_source(path, "movielens")
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"a RecBole atomic file .* --format recbole"):
        open_source(path, "movielens")


def test_recbole_atomic_file_with_float_times_and_renamed_columns(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\textra:token_seq\n"
        "1\t10\t5\t100.0\ta b\n1\t11\t4\t9e1\tc\n2\t10\t3\t80.7\t\n"
    )
    _, rows, bad = read_rows(path, "recbole")
    assert rows == EXPECTED  # 80.7 floors to 80
    assert bad.count == 0

    renamed = tmp_path / "y.inter"
    renamed.write_text("uid:token\tiid:token\tts:float\n1\t10\t100\n")
    options = ReadOptions(user_col="uid", item_col="iid", time_col="ts")
    source, rows, _ = read_rows(renamed, "recbole", options)
    assert rows == [("1", "10", 100, None)]
    assert not source.has_ratings


def test_recbole_missing_column_names_it(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=r"column 'timestamp' not found; the columns are"):
        open_source(path, "recbole")


def test_a_column_that_differs_by_invisible_characters_is_shown_by_repr(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("User\u200b,item,ts\n1,2,3\n", encoding="utf-8")
    options = ReadOptions(user_col="user", item_col="item", time_col="ts")
    with pytest.raises(DataError) as caught:
        open_source(path, "csv", options)
    message = str(caught.value)
    assert "column 'user' not found; the columns are 'User\\u200b', 'item', 'ts'" in message
    assert "read as UTF-8, split at ','" in message
    assert "'User\\u200b' is 'user' but for invisible characters or case" in message


def test_amazon_2018_ratings_csv(tmp_path):
    path = tmp_path / "Books.csv"
    path.write_text("0001,AU1,5.0,100\n0002,AU1,4.0,90\n0001,AU2,3.0,80\n")
    source, rows, _ = read_rows(path, "amazon")
    assert rows == [("AU1", "0001", 100, 5.0), ("AU1", "0002", 90, 4.0), ("AU2", "0001", 80, 3.0)]
    assert source.time_unit == "s"


def test_amazon_2023_ratings_csv_is_in_milliseconds(tmp_path):
    path = tmp_path / "Books.csv"
    path.write_text("user_id,parent_asin,rating,timestamp\nU1,B1,5.0,1600000000123\n")
    source, rows, _ = read_rows(path, "amazon")
    assert rows == [("U1", "B1", 1600000000123, 5.0)]
    assert source.time_unit == "ms"


def write_jsonl(path, records, *, compress):
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in records)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize("compress", [False, True])
def test_amazon_2014_json_lines_plain_and_gzipped(tmp_path, compress):
    path = tmp_path / ("reviews.json.gz" if compress else "reviews.json")
    write_jsonl(
        path,
        [
            {
                "reviewerID": "A1",
                "asin": "B1",
                "unixReviewTime": 100,
                "overall": 5.0,
                "reviewText": "long text\twith tabs, commas",
            },
            {"reviewerID": "A1", "asin": "B2", "unixReviewTime": 90, "overall": 4.0},
        ],
        compress=compress,
    )
    source, rows, bad = read_rows(path, "amazon")
    assert rows == [("A1", "B1", 100, 5.0), ("A1", "B2", 90, 4.0)]
    assert bad.count == 0
    assert "2014/2018" in source.layout


def test_amazon_2023_json_lines_gzipped_with_bad_rows(tmp_path):
    path = tmp_path / "Books.jsonl.gz"
    write_jsonl(
        path,
        [
            {"user_id": "U1", "parent_asin": "P1", "timestamp": 1600000000123, "rating": 5.0},
            "{not json",
            "",
            {"user_id": "U2", "parent_asin": "P1", "timestamp": "soon", "rating": 3.0},
            {"user_id": "", "parent_asin": "P2", "timestamp": 5, "rating": 3.0},
            {"user_id": "U3", "parent_asin": "P2", "timestamp": 7.9, "rating": 2},
        ],
        compress=True,
    )
    source, rows, bad = read_rows(path, "amazon")
    assert source.time_unit == "ms"
    assert rows == [("U1", "P1", 1600000000123, 5.0), ("U3", "P2", 7, 2.0)]
    assert bad.count == 3
    assert bad.by_reason == {
        "malformed JSON": 1,
        "missing or non-numeric time": 1,
        "missing or empty user id": 1,
    }
    assert [(row.line, row.reason) for row in bad.examples] == [
        (2, "malformed JSON"),
        (4, "missing or non-numeric time"),
        (5, "missing or empty user id"),
    ]
    assert bad.examples[0].file == str(path)


def test_amazon_json_missing_rating_is_a_bad_row(tmp_path):
    path = tmp_path / "r.json"
    write_jsonl(
        path,
        [
            {"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1, "overall": 5.0},
            {"reviewerID": "A2", "asin": "B1", "unixReviewTime": 2},
        ],
        compress=False,
    )
    _, rows, bad = read_rows(path, "amazon")
    assert len(rows) == 1
    assert bad.by_reason == {"missing or non-numeric rating": 1}
    assert bad.examples[0].line == 2


def test_bad_rows_are_counted_with_line_numbers_across_blocks(tmp_path):
    lines = [f"{u}\t{u + 100}\t3\t{1000 + u}" for u in range(200)]
    bad_lines = {
        17: "5\t6\t3",
        64: "7\t8\t3\tnoon",
        65: "\t8\t3\t1",
        150: "9\t\t3\t1",
        199: "1\t2\tfive\t3",
    }
    for number, text in bad_lines.items():
        lines[number - 1] = text
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    options = ReadOptions(block_bytes=97)  # many blocks; each must start at the right line
    _, rows, bad = read_rows(path, "movielens", options)
    assert len(rows) == 200 - len(bad_lines)
    assert bad.count == len(bad_lines)
    assert [row.line for row in bad.examples] == sorted(bad_lines)
    assert [row.reason for row in bad.examples] == [
        "wrong field count",
        "missing or non-numeric time",
        "missing or empty user id",
        "missing or empty item id",
        "missing or non-numeric rating",
    ]
    assert bad.examples[0].text == "5\t6\t3"
    assert str(bad.examples[0]) == f"{path}:17: wrong field count: '5\\t6\\t3'"


def test_bad_rows_keep_only_the_first_examples(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t1\t3\n" for u in range(12)) + "1\t2\t3\t4\n")
    _, rows, bad = read_rows(path, "movielens")
    assert rows == [("1", "2", 4, 3.0)]
    assert bad.count == 12
    assert [row.line for row in bad.examples] == [1, 2, 3, 4, 5]


def test_windows_line_ends_and_no_final_newline(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t10\t5\t100\r\n1\t11\t4\t90\r\n2\t9\t3\tx\r\n2\t10\t3\t80")
    _, rows, bad = read_rows(path, "movielens")
    assert rows == EXPECTED
    assert [(row.line, row.text) for row in bad.examples] == [(3, "2\t9\t3\tx")]


def test_invalid_utf8_in_an_id_is_a_bad_row(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t10\t5\t100\n\xff\xfe\t11\t4\t90\n2\t10\t3\t80\n")
    _, rows, bad = read_rows(path, "movielens")
    assert rows == [EXPECTED[0], EXPECTED[2]]
    assert bad.by_reason == {"not UTF-8 text": 1}
    assert bad.examples[0].line == 2
    assert str(bad.examples[0]).endswith(  # the bytes as they are, and the encoding assumed
        "u.data:2: not UTF-8 text: b'\\xff\\xfe\\t11\\t4\\t90' (bytes: the file is read as UTF-8)"
    )


def test_a_bad_row_shows_invisible_characters():
    row = BadRow("log.csv", 3, "missing or non-numeric time", "1,3,4\x00\u200b")
    assert str(row) == "log.csv:3: missing or non-numeric time: '1,3,4\\x00\\u200b'"


def test_generic_csv_with_quotes_separator_and_extra_columns(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text('who\twhat\twhen\tscore\tnote\n"u 1"\tx\t100\t1.5\t"a\tb"\nu2\ty\t200\t2\t\n')
    options = ReadOptions(
        user_col="who", item_col="what", time_col="when", rating_col="score", sep="\\t"
    )
    source, rows, bad = read_rows(path, "csv", options)
    assert rows == [("u 1", "x", 100, 1.5), ("u2", "y", 200, 2.0)]
    assert bad.count == 0
    assert source.time_unit is None


def test_generic_csv_needs_the_column_names(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="needs --user-col, --item-col and --time-col"):
        open_source(path, "csv", ReadOptions(user_col="a"))
    with pytest.raises(DataError, match="column 'zz' not found"):
        open_source(path, "csv", ReadOptions(user_col="a", item_col="b", time_col="zz"))


def test_parquet_with_integer_ids_timestamps_and_nulls(tmp_path):
    path = tmp_path / "log.parquet"
    table = pa.table(
        {
            "u": pa.array([1, 1, None, 2], pa.int32()),
            "i": pa.array(["a", "b", "c", "d"]),
            "t": pa.array([100, 200, 300, None], pa.timestamp("ms")),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    options = ReadOptions(user_col="u", item_col="i", time_col="t")
    _, rows, bad = read_rows(path, "parquet", options)
    assert rows == [(1, "a", 0, None), (1, "b", 0, None)]  # ms timestamps -> whole seconds
    assert bad.by_reason == {"missing or empty user id": 1, "missing or non-numeric time": 1}
    assert [(row.kind, row.line) for row in bad.examples] == [("row", 3), ("row", 4)]


def test_missing_file_and_unknown_format_are_named(tmp_path):
    with pytest.raises(DataError, match=r"input file not found: .*nope\.csv"):
        open_source(tmp_path / "nope.csv", "movielens")
    with pytest.raises(DataError, match="unknown input format 'excel'"):
        open_source(tmp_path / "nope.csv", "excel")
    empty = tmp_path / "empty.data"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        open_source(empty, "movielens")


def test_check_columns_reason_per_row():
    chunk, reasons = check_columns(
        pa.array(["a", "", "c", "d", None]),
        pa.array(["x", "y", "", "w", "v"]),
        pa.array(["1", "2", "3", "4.5e1", "x"]),
        pa.array(["1", "2", "3", "bad", "5"]),
    )
    assert reasons.tolist() == [0, 4, 5, 7, 4]
    assert chunk.users.to_pylist() == ["a"]
    assert chunk.timestamps.dtype == np.int64
    assert chunk.ratings.dtype == np.float32

"""Item side tables: feature columns, tokens, the four formats, bad rows, the shipped Amazon
sample, the real MovieLens-100K ``.item`` file, and any bytes giving a table or a clear error."""

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_inputs import mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srt_jax.data.download import DATASETS, default_cache_dir, get_item_features
from srt_jax.data.readers import (
    FEATURE_FORMATS,
    FeatureColumn,
    ItemTable,
    open_source,
    read_item_table,
)
from srt_jax.data.readers.base import BadRows
from srt_jax.errors import ConfigError, DataError

SAMPLE = Path(__file__).parent / "data" / "amazon"
RECBOLE_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
RECBOLE_ITEMS = [
    RECBOLE_HEADER,
    "1\tToy Story\t1995\tAnimation Children's Comedy",
    "12\tUsual Suspects, The\t1995\tCrime Thriller",
    "99\tNo Class\t1996\t",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def tokens_by_id(table: ItemTable) -> dict[str, list[str]]:
    return dict(zip(table.item_ids, table.tokens, strict=True))


# --- feature columns -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("brand", FeatureColumn("brand")),
        ("brand:whole", FeatureColumn("brand", "whole")),
        ("title:words", FeatureColumn("title", "words")),
        ("genres:multi:|", FeatureColumn("genres", "multi", "|")),
        ("class:multi: ", FeatureColumn("class", "multi", " ")),
        ("tags:multi:\\t", FeatureColumn("tags", "multi", "\t")),
        ("tags:multi:tab", FeatureColumn("tags", "multi", "\t")),
        ("path:multi:/ ", FeatureColumn("path", "multi", "/ ")),
        ("time:multi::", FeatureColumn("time", "multi", ":")),
    ],
)
def test_feature_column_forms(text, expected):
    column = FeatureColumn.parse(text)
    assert column == expected
    assert FeatureColumn.parse(str(column)) == column


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "name is empty"),
        (":words", "name is empty"),
        ("title:letters", "unknown mode 'letters'"),
        ("genres:multi", "needs a separator"),
        ("genres:multi:", "needs a separator"),
        ("title:words:|", "only for mode multi"),
    ],
)
def test_bad_feature_columns_name_the_text_and_the_forms(text, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        FeatureColumn.parse(text)
    assert repr(text) in str(caught.value) and "NAME:multi:SEP" in str(caught.value)
    assert caught.value.key == "--feature-column"
    with pytest.raises(ConfigError):
        FeatureColumn("genres", "multi")


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("brand", "  LEGO ", ["LEGO"]),
        ("year", 1995, ["1995"]),
        ("year", 1995.0, ["1995"]),
        ("price", 2.5, ["2.5"]),
        ("year", float("nan"), []),
        ("brand", None, []),
        ("brand", "   ", []),
        ("title:words", "Usual Suspects, The_2nd", ["usual", "suspects", "the", "2nd"]),
        ("title:words", "Amélie: ÉTÉ été", ["amélie", "été"]),
        ("class:multi: ", "Crime  Thriller Crime", ["Crime", "Thriller"]),
        ("genres:multi:|", " Drama | |Sci-Fi|", ["Drama", "Sci-Fi"]),
        ("genres:multi:|", "", []),
        # lists are flattened, not split, nested ones too (Amazon 2014 categories)
        (
            "categories:multi:|",
            [["Beauty", "Makeup"], ["Beauty", "Face|Eyes"], [], None],
            ["Beauty", "Makeup", "Face|Eyes"],
        ),
        ("tags:multi:,", ["a", float("nan"), 3.0, "a"], ["a", "3"]),
        ("categories:words", [["Toys & Games"], ["Games"]], ["toys", "games"]),
        ("brand", ["Acme", " Acme "], ["Acme"]),
        # a dict (Amazon 2023 details): one "key: value" per entry
        (
            "details:multi:,",
            {"Color": "Red", "Size": None, "Pieces": 500.0},
            ["Color: Red", "Pieces: 500"],
        ),
    ],
)
def test_tokens_per_mode(column, value, expected):
    feature = FeatureColumn.parse(column)
    assert feature.tokens(value) == [f"{feature.name}={piece}" for piece in expected]


# --- recbole ----------------------------------------------------------------------------


def test_recbole_default_columns_follow_the_header_types(tmp_path):
    table = read_item_table(write(tmp_path / "ml.item", RECBOLE_ITEMS), "recbole")
    assert table.columns == (
        FeatureColumn("movie_title", "multi", " "),
        FeatureColumn("release_year"),
        FeatureColumn("class", "multi", " "),
    )
    assert table.layout == (
        "recbole atomic .item (movie_title:multi: , release_year:whole, class:multi: )"
    )
    assert table.item_ids == ["1", "12", "99"]
    assert tokens_by_id(table)["12"] == [
        "movie_title=Usual",
        "movie_title=Suspects,",
        "movie_title=The",
        "release_year=1995",
        "class=Crime",
        "class=Thriller",
    ]
    assert tokens_by_id(table)["99"] == ["movie_title=No", "movie_title=Class", "release_year=1996"]
    assert (table.rows_read, table.merged_rows, table.bad_rows.count) == (3, 0, 0)


def test_recbole_columns_and_item_column_can_be_chosen(tmp_path):
    path = write(tmp_path / "ml.item", RECBOLE_ITEMS)
    columns = [FeatureColumn.parse("movie_title:words"), FeatureColumn.parse("class:multi: ")]
    table = read_item_table(path, "recbole", columns=columns)
    assert tokens_by_id(table)["12"] == [
        "movie_title=usual",
        "movie_title=suspects",
        "movie_title=the",
        "class=Crime",
        "class=Thriller",
    ]
    by_year = read_item_table(path, "recbole", item_col="release_year", columns=columns[1:])
    assert by_year.item_ids == ["1995", "1996"] and by_year.merged_rows == 1
    assert by_year.tokens[0] == [
        "class=Animation",
        "class=Children's",
        "class=Comedy",
        "class=Crime",
        "class=Thriller",
    ]


def test_recbole_unknown_columns_and_bad_headers_are_clear_errors(tmp_path):
    path = write(tmp_path / "ml.item", RECBOLE_ITEMS)
    with pytest.raises(DataError, match=r"feature column 'genre' not found; .*'movie_title'"):
        read_item_table(path, "recbole", columns=[FeatureColumn("genre")])
    with pytest.raises(DataError, match="item column 'movie_id' not found"):
        read_item_table(path, "recbole", item_col="movie_id")
    plain = write(tmp_path / "plain.item", ["item_id\ttitle", "1\tx"])
    nameless = write(tmp_path / "nameless.item", ["item_id:token\t:token_seq", "1\tx"])
    for path in (plain, nameless):
        with pytest.raises(DataError, match=rf"{path.name}: not a RecBole atomic file"):
            read_item_table(path, "recbole")
    empty = write(tmp_path / "empty.item", ["", "  "])
    with pytest.raises(DataError, match=r"empty\.item: the file is empty"):
        read_item_table(empty, "recbole")
    header_only = write(tmp_path / "header.item", [RECBOLE_HEADER])
    with pytest.raises(DataError, match=r"header\.item: no item rows"):
        read_item_table(header_only, "recbole")


def test_bad_rows_are_errors_naming_the_line_or_are_counted(tmp_path):
    lines = [*RECBOLE_ITEMS, "7\tonly two", "\tNo Id\t1990\tDrama", "8\tEight\t1990\tDrama"]
    path = write(tmp_path / "bad.item", lines)
    with pytest.raises(DataError) as caught:
        read_item_table(path, "recbole")
    assert str(caught.value).startswith(f"{path}:5: wrong field count: '7\\tonly two'")
    table = read_item_table(path, "recbole", skip_bad_rows=True)
    assert table.item_ids == ["1", "12", "99", "8"]
    assert table.bad_rows.by_reason == {"wrong field count": 1, "missing or empty item id": 1}
    assert [example.line for example in table.bad_rows.examples] == [5, 6]
    (tmp_path / "bytes.item").write_bytes(
        (RECBOLE_HEADER + "\n5\tCaf\xe9\t1990\tDrama\n").encode("latin-1")
    )
    with pytest.raises(DataError, match=r"bytes.item:2: not UTF-8 text: b'5\\tCaf\\xe9"):
        read_item_table(tmp_path / "bytes.item", "recbole")


def test_repeated_item_rows_are_merged(tmp_path):
    lines = [
        "item,tags",
        "a,red|big",
        "b,small",
        "a,big|round",
        "a,",
    ]
    table = read_item_table(
        write(tmp_path / "t.csv", lines),
        "csv",
        item_col="item",
        columns=[FeatureColumn.parse("tags:multi:|")],
    )
    assert table.item_ids == ["a", "b"]
    assert table.tokens == [["tags=red", "tags=big", "tags=round"], ["tags=small"]]
    assert (table.rows_read, table.merged_rows, len(table)) == (4, 2, 2)


# --- amazon -----------------------------------------------------------------------------

META_2014 = [
    "{'asin': 'B001', 'title': \"Kid's Puzzle, 500 pieces\", 'price': 9.99, 'related': "
    "{'also_bought': ['B002']}, 'salesRank': {'Toys & Games': 12}, 'brand': 'Acme', "
    "'categories': [['Toys & Games', 'Puzzles'], ['Toys & Games']]}",
    "{'asin': 'B002', 'title': 'Race Car', 'categories': [['Toys & Games', 'Vehicles']]}",
]
META_2018 = [
    {
        "asin": "0001",
        "title": "Blue Mug",
        "brand": "Potter",
        "category": ["Home", "Kitchen", "Mugs"],
        "main_cat": "Amazon Home",
        "price": "$5.00",
    },
    {"asin": "0002", "title": "Red Mug", "category": ["Home", "Kitchen"], "main_cat": ""},
]
META_2023 = [
    {
        "parent_asin": "P1",
        "title": "Blue Mug",
        "store": "Potter",
        "main_category": "Home",
        "categories": ["Home", "Mugs"],
        "details": {"Color": "Blue"},
        "price": None,
    },
]


def test_amazon_2014_dict_literal_lines_plain_and_gzipped(tmp_path):
    plain = write(tmp_path / "meta_Toys.json", META_2014)
    table = read_item_table(plain, "amazon")
    assert table.layout == (
        "amazon metadata (python dict literal lines) (title:words, brand:whole, categories:multi:|)"
    )
    assert tokens_by_id(table) == {
        "B001": [
            "title=kid",
            "title=s",
            "title=puzzle",
            "title=500",
            "title=pieces",
            "brand=Acme",
            "categories=Toys & Games",
            "categories=Puzzles",
        ],
        "B002": ["title=race", "title=car", "categories=Toys & Games", "categories=Vehicles"],
    }
    zipped = tmp_path / "meta_Toys.json.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert tokens_by_id(read_item_table(zipped, "amazon")) == tokens_by_id(table)


def test_amazon_2018_and_2023_json_lines(tmp_path):
    table = read_item_table(write(tmp_path / "m18.json", map(json.dumps, META_2018)), "amazon")
    assert [str(column) for column in table.columns] == [
        "title:words",
        "brand:whole",
        "category:multi:|",
        "main_cat:whole",
    ]
    assert table.layout.startswith("amazon metadata (json lines)")
    assert tokens_by_id(table)["0002"] == [
        "title=red",
        "title=mug",
        "category=Home",
        "category=Kitchen",
    ]
    table = read_item_table(write(tmp_path / "m23.json", map(json.dumps, META_2023)), "amazon")
    assert table.item_ids == ["P1"]
    assert table.tokens[0] == [
        "title=blue",
        "title=mug",
        "store=Potter",
        "categories=Home",
        "categories=Mugs",
        "main_category=Home",
    ]
    details = read_item_table(
        tmp_path / "m23.json", "amazon", columns=[FeatureColumn.parse("details:multi:;")]
    )
    assert details.tokens == [["details=Color: Blue"]]


def test_amazon_bad_lines(tmp_path):
    lines = [
        json.dumps(META_2018[0]),
        '{"asin": "0003", "title": "cut',
        "[1, 2]",
        json.dumps({"title": "no id"}),
        json.dumps({"asin": "", "title": "empty id"}),
        json.dumps({"asin": "0004", "brand": "bad \ud800 escape"}),
        json.dumps(META_2018[1]),
    ]
    path = write(tmp_path / "meta.json", lines)
    with pytest.raises(DataError) as caught:
        read_item_table(path, "amazon")
    assert str(caught.value).startswith(f'{path}:2: malformed JSON: \'{{"asin": "0003"')
    table = read_item_table(path, "amazon", skip_bad_rows=True)
    assert table.item_ids == ["0001", "0002"]
    assert table.bad_rows.by_reason == {
        "malformed JSON": 2,
        "missing or empty item id": 2,
        "not UTF-8 text": 1,
    }
    assert {(e.line, e.kind) for e in table.bad_rows.examples} == {
        (2, "line"),
        (3, "line"),
        (4, "line"),
        (5, "line"),
        (6, "line"),
    }


def test_the_shipped_amazon_sample(tmp_path):
    meta = read_item_table(SAMPLE / "meta_Toys_sample.json.gz", "amazon")
    assert (len(meta), meta.bad_rows.count, meta.merged_rows) == (16, 0, 0)
    assert [str(column) for column in meta.columns] == [
        "title:words",
        "brand:whole",
        "categories:multi:|",
    ]
    assert sum(not tokens for tokens in meta.tokens) == 0
    reviews = open_source(SAMPLE / "reviews_Toys_sample.json", "amazon")
    bad = BadRows()
    chunks = [chunk for chunk, _ in reviews.chunks(bad)]
    users = {user for chunk in chunks for user in chunk.users.to_pylist()}
    reviewed = {item for chunk in chunks for item in chunk.items.to_pylist()}
    assert (bad.count, sum(map(len, chunks)), len(users), len(reviewed)) == (0, 54, 8, 15)
    assert reviewed - set(meta.item_ids) == {"B0TOYS0015"}
    assert set(meta.item_ids) - reviewed == {"B0TOYS0016", "B0TOYS0017"}


# --- csv and parquet --------------------------------------------------------------------


def test_csv_and_tsv_with_quoted_fields(tmp_path):
    columns = [FeatureColumn.parse("title:words"), FeatureColumn.parse("genres:multi:|")]
    csv_path = write(tmp_path / "items.csv", ["id,title,genres", '5,"Heat, Part 2",Crime|Drama'])
    table = read_item_table(csv_path, "csv", item_col="id", columns=columns)
    assert table.layout == "csv (sep ',', header) (title:words, genres:multi:|)"
    assert table.tokens == [["title=heat", "title=part", "title=2", "genres=Crime", "genres=Drama"]]
    tsv_path = write(tmp_path / "items.tsv", ["id\ttitle\tgenres", "5\tHeat, Part 2\tCrime"])
    assert read_item_table(tsv_path, "csv", item_col="id", columns=columns).tokens == [
        ["title=heat", "title=part", "title=2", "genres=Crime"]
    ]
    with pytest.raises(DataError, match="--features-item-col and --feature-column"):
        read_item_table(csv_path, "csv", item_col="id")
    with pytest.raises(DataError, match=r"feature column 'year' not found; the columns are 'id'"):
        read_item_table(csv_path, "csv", item_col="id", columns=[FeatureColumn("year")])
    write(csv_path, ["id,title,genres", "5,Heat", "6,Up,Kids"])
    with pytest.raises(DataError, match=r"items.csv:2: wrong field count: '5,Heat'"):
        read_item_table(csv_path, "csv", item_col="id", columns=columns)


def test_parquet_lists_floats_and_integer_ids(tmp_path):
    path = tmp_path / "items.parquet"
    table = pa.table(
        {
            "item": pa.array([3, 4, None, 3], pa.int64()),
            "year": pa.array([1995.0, float("nan"), 1990.0, None]),
            "tags": pa.array([["a", "b"], [], ["c"], ["b", "d"]], pa.list_(pa.string())),
        }
    )
    pq.write_table(table, path)
    columns = [FeatureColumn("year"), FeatureColumn.parse("tags:multi:|")]
    with pytest.raises(DataError, match=r"items.parquet: row 3: missing or empty item id"):
        read_item_table(path, "parquet", item_col="item", columns=columns)
    items = read_item_table(path, "parquet", item_col="item", columns=columns, skip_bad_rows=True)
    assert tokens_by_id(items) == {"3": ["year=1995", "tags=a", "tags=b", "tags=d"], "4": []}
    assert (items.rows_read, items.merged_rows, items.bad_rows.count) == (3, 1, 1)
    with pytest.raises(DataError, match=r"feature column 'genre' not found"):
        read_item_table(path, "parquet", item_col="item", columns=[FeatureColumn("genre")])
    with pytest.raises(DataError, match=r"item column 'tags' has type list<"):
        read_item_table(path, "parquet", item_col="tags", columns=columns)


def test_missing_files_and_unknown_formats(tmp_path):
    with pytest.raises(DataError, match=f"input file not found: {tmp_path / 'nope.item'}"):
        read_item_table(tmp_path / "nope.item", "recbole")
    with pytest.raises(DataError, match="unknown item table format 'tfds'"):
        read_item_table(tmp_path, "tfds")


# --- the real MovieLens-100K item file ----------------------------------------------------

CACHED_ITEM_FILE = default_cache_dir() / "movielens-100k" / "ml-100k.item"


@pytest.mark.skipif(not CACHED_ITEM_FILE.is_file(), reason="ml-100k.item not in the data cache")
def test_the_real_movielens_100k_item_file():
    path = get_item_features("movielens-100k").path  # verified against its SHA-256
    table = read_item_table(path, "recbole")
    assert (len(table), table.rows_read, table.bad_rows.count) == (1682, 1682, 0)
    assert tokens_by_id(table)["12"][-3:] == ["release_year=1995", "class=Crime", "class=Thriller"]
    spec = DATASETS["movielens-100k"].item_features
    columns = [FeatureColumn.parse(text) for text in spec.columns]
    chosen = read_item_table(path, spec.member.format, columns=columns)
    assert tokens_by_id(chosen)["12"][:3] == [
        "movie_title=usual",
        "movie_title=suspects",
        "movie_title=the",
    ]
    assert all(chosen.tokens)


# --- any bytes: a table or a clear error ------------------------------------------------

NAMES = {"recbole": "items.item", "amazon": "meta.json", "csv": "items.csv"}
TEXT_FORMATS = tuple(NAMES)


def valid_lines(fmt: str, rng: random.Random) -> list[bytes]:
    """A few well-formed lines of ``fmt`` (a header first where the format has one)."""
    rows = [(rng.randint(1, 20), rng.choice(["Red Car", "Plush, Bear", "Ätsch"])) for _ in range(9)]
    if fmt == "recbole":
        return [RECBOLE_HEADER.encode(), *(f"{i}\t{t}\t1995\tA B".encode() for i, t in rows)]
    if fmt == "amazon":
        return [repr({"asin": f"B{i}", "title": t, "categories": [[t]]}).encode() for i, t in rows]
    return [b"id,title,genres", *(f'{i},"{t}",A|B'.encode() for i, t in rows)]


def check_outcome(fmt: str, data: bytes, gzipped: bool, folder: Path, skip: bool) -> str:
    """Read ``data`` as ``fmt``: a consistent table or a one-line error naming the file."""
    path = folder / (NAMES[fmt] + (".gz" if gzipped else ""))
    path.write_bytes(data)
    columns = [FeatureColumn.parse("title:words"), FeatureColumn.parse("genres:multi:|")]
    options = {"item_col": "id", "columns": columns} if fmt == "csv" else {}
    try:
        table = read_item_table(path, fmt, skip_bad_rows=skip, **options)
    except (DataError, ConfigError) as err:
        message = str(err)
        assert "\n" not in message.strip() and path.name in message, message
        return "error"
    assert len(set(table.item_ids)) == len(table.item_ids) == len(table.tokens) > 0
    assert table.rows_read - table.merged_rows == len(table)
    assert all(isinstance(token, str) for tokens in table.tokens for token in tokens)
    json.dumps(table.tokens, ensure_ascii=False).encode()  # every token is valid text
    return "table"


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_damaged_item_tables_give_a_table_or_a_clear_error(fmt, tmp_path):
    outcomes = set()
    for seed in range(40):
        rng = random.Random(seed)
        data = b"\n".join(valid_lines(fmt, rng))
        data = mutate(data, rng) if seed % 4 else data
        gzipped = seed % 5 == 0
        if gzipped:
            data = gzip.compress(data)
            data = data[: rng.randint(0, len(data))] if seed % 10 == 0 else data
        folder = tmp_path / str(seed)
        folder.mkdir()
        outcomes.add(check_outcome(fmt, data, gzipped, folder, skip=seed % 2 == 0))
    assert outcomes == {"table", "error"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(TEXT_FORMATS),
    data=st.binary(max_size=300),
    gzipped=st.booleans(),
    cut=st.integers(0, 400),
    skip=st.booleans(),
)
def test_arbitrary_bytes_give_a_table_or_a_clear_error(
    fmt, data, gzipped, cut, skip, tmp_path_factory
):
    if gzipped:
        data = gzip.compress(data)[:cut]  # often a truncated archive
    check_outcome(fmt, data, gzipped, tmp_path_factory.mktemp("bytes"), skip)


def test_every_format_is_covered():
    assert set(FEATURE_FORMATS) == {*TEXT_FORMATS, "parquet"}

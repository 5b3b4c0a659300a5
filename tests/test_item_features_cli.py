"""Item features from the command line: `data prepare --item-features` on RecBole and Amazon
files (SRT's data path on the shipped Amazon sample), `data info`, `data subset` into
domains, and the bad inputs of the issue (no matching ids, malformed metadata lines,
options without a file)."""

import gzip
import json
from pathlib import Path

import pytest

from srt_jax.cli import main
from srt_jax.data.store import SequenceStore

AMAZON = Path(__file__).parent / "data" / "amazon"
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{r}\t{t}\n"
    for t, (u, i, r) in enumerate(
        [(1, 10, 4), (1, 20, 5), (1, 30, 3), (2, 20, 4), (2, 40, 2), (2, 10, 5), (3, 30, 4)]
    )
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Comedy\n"
    "20\tUsual Suspects, The\t1995\tCrime Thriller\n"
    "30\tCasablanca\t1942\tDrama Romance\n"
    "99\tNot In The Log\t2000\tDrama\n"
)


def recbole_files(tmp_path):
    (tmp_path / "log.inter").write_text(INTER)
    (tmp_path / "films.item").write_text(ITEM)
    return tmp_path / "log.inter", tmp_path / "films.item"


def prepare(tmp_path, inter, *more):
    out = tmp_path / "store"
    argv = ["data", "prepare", str(inter), "--format", "recbole", "--out", str(out), *more]
    return main([*argv, "--quiet", "--json"]), out


def test_prepare_with_a_recbole_item_file(tmp_path, capsys):
    inter, item = recbole_files(tmp_path)
    code, out = prepare(
        tmp_path,
        inter,
        "--item-features",
        str(item),
        "--feature-column",
        "movie_title:words",
        "--feature-column",
        "class:multi: ",
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["item_features"] == {
        "vocab_size": 2 + 6 + 6,  # specials, title words, genres
        "items_with_features": 3,
        "items_without_features": 1,  # item 40 has no row
        "rows_unmatched": 1,  # item 99 is not in the log
        "tokens_dropped": 0,
    }
    store = SequenceStore(out)
    features = store.item_features()
    ids = store.item_ids().tolist()
    assert features.item_tokens(ids.index(20)) == [
        "movie_title=usual",
        "movie_title=suspects",
        "movie_title=the",
        "class=Crime",
        "class=Thriller",
    ]
    assert features.item_tokens(ids.index(40)) == ["[no-features]"]
    meta = store.meta["item_features"]
    assert meta["source"]["columns"] == ["movie_title:words", "class:multi: "]
    assert meta["source"]["file"] == str(item.resolve())
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["item_features"]
    assert info["items_without_features"] == 1 and info["rows_unmatched"] == 1


def test_srt_data_path_on_the_amazon_sample(tmp_path, capsys):
    out = tmp_path / "toys"
    argv = [
        "data",
        "prepare",
        str(AMAZON / "reviews_Toys_sample.json"),
        "--format",
        "amazon",
        "--item-features",
        str(AMAZON / "meta_Toys_sample.json.gz"),
        "--out",
        str(out),
    ]
    assert main([*argv, "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 15 and summary["users"] == 8
    assert summary["item_features"]["items_without_features"] == 1  # B0TOYS0015
    assert summary["item_features"]["rows_unmatched"] == 2  # 0016 and 0017, never reviewed
    store = SequenceStore(out)
    tokens = store.item_features().item_tokens(store.item_ids().tolist().index("B0TOYS0001"))
    assert "title=puzzle" in tokens and "brand=Sample Toys" in tokens
    assert any(token.startswith("categories=") for token in tokens)


def test_item_features_that_match_no_item_write_nothing(tmp_path, capsys):
    inter, _ = recbole_files(tmp_path)
    other = tmp_path / "other.item"
    other.write_text("item_id:token\tclass:token_seq\n500\tDrama\n501\tComedy\n")
    code, out = prepare(tmp_path, inter, "--item-features", str(other))
    assert code == 2 and not out.exists()
    assert "no row of the item features matches an item of the log" in capsys.readouterr().err


def test_malformed_metadata_line_is_an_error_or_skipped_and_counted(tmp_path, capsys):
    lines = gzip.decompress((AMAZON / "meta_Toys_sample.json.gz").read_bytes()).splitlines()
    lines.insert(3, b"{'asin': 'B0TOYS0099', 'title': ")  # line 4: cut short
    meta = tmp_path / "meta.json"
    meta.write_bytes(b"\n".join(lines) + b"\n")
    argv = [
        "data",
        "prepare",
        str(AMAZON / "reviews_Toys_sample.json"),
        "--format",
        "amazon",
        "--item-features",
        str(meta),
        "--out",
        str(tmp_path / "s"),
        "--quiet",
    ]
    assert main(argv) == 2
    assert f"{meta}:4: malformed JSON" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main([*argv, "--skip-bad-rows"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad item-feature rows (1 malformed JSON)" in err and ":4:" in err
    meta_record = SequenceStore(tmp_path / "s").meta["item_features"]
    assert meta_record["bad_rows"]["count"] == 1


@pytest.mark.parametrize(
    "more, message",
    [
        (("--feature-column", "title:words"), "--feature-column needs --item-features FILE"),
        (("--item-features", "x.csv", "--features-format", "xml"), "--features-format"),
    ],
)
def test_feature_options_without_a_file_or_format_are_errors(tmp_path, capsys, more, message):
    inter, _ = recbole_files(tmp_path)
    code, out = prepare(tmp_path, inter, *more)
    assert code == 2 and not out.exists()
    assert message in capsys.readouterr().err


def test_subset_splits_a_store_into_domains_by_a_feature_token(tmp_path, capsys):
    inter, item = recbole_files(tmp_path)
    _, out = prepare(tmp_path, inter, "--item-features", str(item))
    capsys.readouterr()
    for flag, name in (("--items-with", "drama"), ("--items-without", "rest")):
        argv = ["data", "subset", str(out), "--out", str(tmp_path / name), flag, "class=Drama"]
        assert main([*argv, "--min-length", "1", "--quiet"]) == 0
    drama, rest = SequenceStore(tmp_path / "drama"), SequenceStore(tmp_path / "rest")
    assert drama.item_ids().tolist()[1:] == [30]
    assert sorted(rest.item_ids().tolist()[1:]) == [10, 20, 40]
    assert drama.n_interactions + rest.n_interactions == 7
    assert drama.item_features().item_tokens(1)[-2:] == ["class=Drama", "class=Romance"]
    assert drama.meta["subset"]["items_with"] == ["class=Drama"]
    # each user's history keeps its order and timestamps
    parent = SequenceStore(out)
    user = parent.user_ids().tolist().index(1)
    kept = [t for t in parent.timestamps[parent.offsets[user] : parent.offsets[user + 1]]]
    rest_user = rest.user_ids().tolist().index(1)
    rest_times = rest.timestamps[rest.offsets[rest_user] : rest.offsets[rest_user + 1]].tolist()
    assert rest_times == [t for t in kept if t != 2]  # the drama (item 30, time 2) left
    argv = ["data", "subset", str(out), "--out", str(tmp_path / "x"), "--items-with", "class=Nope"]
    assert main(argv) == 2 and not (tmp_path / "x").exists()
    assert "no item has the feature token(s) 'class=Nope'" in capsys.readouterr().err

"""The `srt-jax data` commands end to end, in process and as a subprocess."""

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from srt_jax.cli import main
from srt_jax.data.download import DATASETS, Dataset, WheelMember, ZipDownload
from srt_jax.data.store import SequenceStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def u_data(tmp_path):
    """A u.data-layout log: 30 users, up to 40 items, 400 rows (some repeated pairs)."""
    rng = np.random.default_rng(0)
    users = rng.integers(1, 31, 400)
    items = rng.integers(1, 41, 400)
    times = rng.integers(880_000_000, 890_000_000, 400)
    ratings = rng.integers(1, 6, 400)
    path = tmp_path / "u.data"
    path.write_text(
        "".join(
            f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in zip(users, items, ratings, times, strict=True)
        )
    )
    return path, len(set(users.tolist())), len(set(items.tolist()))


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def prepare(source, out, *options, fmt="movielens"):
    """Exit status of ``srt-jax data prepare SOURCE --format FMT --out OUT --quiet OPTIONS``."""
    return main(
        ["data", "prepare", str(source), "--format", fmt, "--out", str(out), "--quiet", *options]
    )


def test_prepare_then_info(u_data, tmp_path, capsys):
    path, n_users, n_items = u_data
    assert prepare(path, tmp_path / "s") == 0
    assert "400 interactions" in capsys.readouterr().out
    stats = run_json(capsys, ["data", "info", str(tmp_path / "s"), "--json"])
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (n_users, n_items, 400)
    assert stats["history_length"]["min"] <= stats["history_length"]["p50"]
    assert stats["history_length"]["mean"] == pytest.approx(400 / n_users)
    assert main(["data", "info", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert f"users          {n_users}" in text and "item gini" in text


def test_prepare_with_filters_records_them(u_data, tmp_path):
    path, _, _ = u_data
    options = [
        "--min-rating",
        "3",
        "--duplicates",
        "first",
        "--min-user-interactions",
        "5",
        "--min-item-interactions",
        "3",
        "--max-users",
        "10",
        "--seed",
        "1",
    ]
    assert prepare(path, tmp_path / "s", *options) == 0
    opened = SequenceStore(tmp_path / "s")
    filters = opened.meta["filters"]
    assert (filters["min_rating"], filters["duplicates"], filters["max_users"]) == (3, "first", 10)
    assert opened.n_users == 10
    assert np.all(opened.ratings[:] >= 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "movielens", "MISSING"], "input file not found"),
        (["--format", "excel", "LOG"], "unknown input format 'excel'"),
        (
            ["--format", "csv", "--user-col", "a", "--item-col", "b", "--time-col", "c", "LOG"],
            "column 'a' not found",
        ),
        (["--format", "movielens", "BAD"], "BAD:2: wrong field count"),
        (["--format", "movielens", "--duplicates", "last", "LOG"], "duplicates policy 'last'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_store(u_data, tmp_path, capsys, argv, message):
    path, _, _ = u_data
    bad = tmp_path / "BAD"
    bad.write_text("1\t2\t3\t4\n1\t2\t3\n")
    names = {"LOG": str(path), "MISSING": str(tmp_path / "MISSING"), "BAD": str(bad)}
    argv = [names.get(arg, arg) for arg in argv]
    assert main(["data", "prepare", *argv, "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("srt-jax: error: ") and err.count("\n") == 1
    assert message.replace("BAD", str(bad)) in err
    assert not (tmp_path / "s").exists()


def test_prepare_refuses_an_existing_store_without_overwrite(u_data, tmp_path, capsys):
    path, _, _ = u_data
    assert prepare(path, tmp_path / "s") == 0
    assert prepare(path, tmp_path / "s") == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert prepare(path, tmp_path / "s", "--overwrite") == 0


def test_info_of_a_missing_store(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope")]) == 2
    assert "sequence store not found" in capsys.readouterr().err


def test_export_tfds_prints_the_dataset_dir(u_data, tmp_path, capsys):
    path, _, _ = u_data
    assert prepare(path, tmp_path / "s") == 0
    capsys.readouterr()
    assert main(["data", "export-tfds", str(tmp_path / "s"), "--out", str(tmp_path / "t")]) == 0
    dataset_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert dataset_dir == tmp_path / "t" / "srt_store" / "1.0.0"
    assert prepare(dataset_dir, tmp_path / "back", fmt="tfds") == 0
    assert SequenceStore(tmp_path / "back").checksum() == SequenceStore(tmp_path / "s").checksum()


def test_get_prints_the_ratings_path_and_reuses_the_cache(tmp_path, capsys, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("ml-100k/u.data", "1\t2\t3\t4\n")
    fake = Dataset(
        name="movielens-100k",
        grouplens=ZipDownload(
            archive.as_uri(),
            hashlib.sha256(archive.read_bytes()).hexdigest(),
            "ml-100k/u.data",
            "movielens",
        ),
        pypi=WheelMember("srtjax_never", "0", "x", "0" * 64, "recbole"),
    )
    monkeypatch.setitem(DATASETS, "movielens-100k", fake)
    argv = ["data", "get", "movielens-100k", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "cache" / "movielens-100k" / "u.data")
    assert "downloaded and verified" in err and "--format movielens" in err
    archive.unlink()  # a second get must not need the source
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("u.data") and "cached" in err


def test_subprocess_cli_end_to_end(u_data, tmp_path):
    path, n_users, n_items = u_data
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "srt_jax.cli", "data", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
        )

    done = cli("prepare", str(path), "--format", "movielens", "--out", "s")
    assert done.returncode == 0, done.stderr
    info = cli("info", "s", "--json")
    assert info.returncode == 0, info.stderr
    stats = json.loads(info.stdout)
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (n_users, n_items, 400)
    failed = cli("prepare", "nope.csv", "--format", "movielens", "--out", "t")
    assert failed.returncode == 2
    assert "input file not found: nope.csv" in failed.stderr

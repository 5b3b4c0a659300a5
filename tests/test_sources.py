"""Resolving data.dataset: built-in synthetic and MovieLens stores, explicit store paths."""

import subprocess
import sys

import pytest

from srt_jax.config import DataConfig, SynthConfig
from srt_jax.data.sources import open_dataset, store_path
from srt_jax.errors import DataError


def test_synthetic_is_prepared_once_into_the_cache(tmp_path):
    cfg = DataConfig(
        dataset="synthetic",
        cache_dir=str(tmp_path),
        synthetic=SynthConfig(users=50, items=40, mean_length=12, seed=3),
    )
    store = open_dataset(cfg, progress=False)
    assert store.n_users == 50 and store.n_items == 40
    assert store.path == store_path(cfg)
    mtime = (store.path / "meta.json").stat().st_mtime_ns
    assert open_dataset(cfg, progress=False).meta["checksum"] == store.meta["checksum"]
    assert (store.path / "meta.json").stat().st_mtime_ns == mtime
    other = DataConfig(
        dataset="synthetic",
        cache_dir=str(tmp_path),
        synthetic=SynthConfig(users=50, items=40, mean_length=12, seed=4),
    )
    assert store_path(other) != store.path


def test_explicit_store_path_and_missing_path(tmp_path):
    made = open_dataset(
        DataConfig(
            dataset="synthetic",
            cache_dir=str(tmp_path),
            synthetic=SynthConfig(users=20, items=10, mean_length=8),
        ),
        progress=False,
    )
    again = open_dataset(DataConfig(dataset=str(made.path)))
    assert again.n_interactions == made.n_interactions
    with pytest.raises(DataError, match="neither a built-in"):
        open_dataset(DataConfig(dataset=str(tmp_path / "nope")))


def _synth(out, *options):
    command = [sys.executable, "-m", "srt_jax.cli", "data", "synth", "--out", str(out)]
    command += ["--users", "30", "--items", "20", "--mean-length", "10", "--quiet", *options]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_synth_cli_writes_store_with_oracle_loss(tmp_path):
    result = _synth(tmp_path / "syn", "--topics", "4")
    assert result.returncode == 0, result.stderr
    assert "oracle loss" in result.stdout
    bad = _synth(tmp_path / "b", "--topics", "0")
    assert bad.returncode == 2 and "topics" in bad.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_movielens_builtin_is_fetched_and_prepared(tmp_path):
    store = open_dataset(
        DataConfig(dataset="movielens-100k", cache_dir=str(tmp_path)), progress=False
    )
    assert (store.n_users, store.n_items, store.n_interactions) == (943, 1682, 100_000)

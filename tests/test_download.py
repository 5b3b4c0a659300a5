"""`data get`: zip and wheel extraction, checksums, cache reuse (offline, on fake archives)."""

import dataclasses
import hashlib
import zipfile

import pytest

from srt_jax.data import download
from srt_jax.data.download import (
    DATASETS,
    Dataset,
    WheelMember,
    ZipDownload,
    default_cache_dir,
    fetch_wheel_member,
    fetch_zip_member,
    get_dataset,
)
from srt_jax.data.ingest import prepare_store
from srt_jax.errors import DataError

RATINGS = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"
U_DATA = b"1\t2\t3\t4\n5\t6\t7\t8\n"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fake_grouplens_zip(folder):
    path = folder / "ml-100k.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", U_DATA)
        archive.writestr("ml-100k/README", b"fake")
    return path


def fake_wheel(folder, package="srtjax_fake_data", version="0.1.0"):
    """A minimal valid wheel shipping ``data/ratings.inter``, in ``folder``."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{package}-{version}-py3-none-any.whl"
    info = f"{package}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{package}/data/ratings.inter", RATINGS)
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return path


def zip_spec(path, sha=None):
    return ZipDownload(
        url=path.as_uri(),
        sha256=sha or sha256(path.read_bytes()),
        member="ml-100k/u.data",
        format="movielens",
    )


def wheel_spec(sha=None):
    return WheelMember(
        package="srtjax_fake_data",
        version="0.1.0",
        member="srtjax_fake_data/data/ratings.inter",
        sha256=sha or sha256(RATINGS),
        format="recbole",
    )


def offline(find_links):
    return ["--no-index", "--find-links", str(find_links)]


def test_zip_download_is_verified_and_extracted(tmp_path):
    archive = fake_grouplens_zip(tmp_path)
    dest = tmp_path / "cache" / "u.data"
    assert fetch_zip_member(zip_spec(archive), dest) == dest
    assert dest.read_bytes() == U_DATA
    assert [p.name for p in dest.parent.iterdir()] == ["u.data"]


def test_zip_checksum_mismatch_leaves_nothing(tmp_path):
    archive = fake_grouplens_zip(tmp_path)
    dest = tmp_path / "cache" / "u.data"
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_zip_member(zip_spec(archive, sha="0" * 64), dest)
    assert list(dest.parent.iterdir()) == []


def test_zip_without_the_member_and_unreachable_url(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("x", b"y")
    with pytest.raises(DataError, match=r"has no member ml-100k/u\.data"):
        fetch_zip_member(zip_spec(archive), tmp_path / "c" / "u.data")
    gone = dataclasses.replace(zip_spec(archive), url=(tmp_path / "gone.zip").as_uri())
    with pytest.raises(DataError, match="cannot download"):
        fetch_zip_member(gone, tmp_path / "c" / "u.data")


def test_wheel_member_via_pip_download(tmp_path):
    fake_wheel(tmp_path / "index")
    dest = tmp_path / "cache" / "ratings.inter"
    fetch_wheel_member(wheel_spec(), dest, pip_args=offline(tmp_path / "index"))
    assert dest.read_bytes() == RATINGS
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_wheel_member(
            wheel_spec(sha="1" * 64),
            tmp_path / "c2" / "r.inter",
            pip_args=offline(tmp_path / "index"),
        )
    assert list((tmp_path / "c2").iterdir()) == []
    with pytest.raises(DataError, match=r"pip download srtjax_fake_data==0\.1\.0 failed"):
        fetch_wheel_member(
            wheel_spec(), tmp_path / "c3" / "r.inter", pip_args=offline(tmp_path / "empty-index")
        )


def test_get_dataset_falls_back_to_pypi_and_then_uses_the_cache(tmp_path, monkeypatch):
    fake_wheel(tmp_path / "index")
    fake = Dataset(
        name="movielens-100k",
        grouplens=ZipDownload(
            (tmp_path / "unreachable.zip").as_uri(), "0" * 64, "ml-100k/u.data", "movielens"
        ),
        pypi=wheel_spec(),
    )
    monkeypatch.setitem(DATASETS, "movielens-100k", fake)
    cache = tmp_path / "cache"
    first = get_dataset("movielens-100k", cache, pip_args=offline(tmp_path / "index"))
    assert first.path == cache / "movielens-100k" / "ratings.inter"
    assert (first.format, first.cached) == ("recbole", False)

    def no_network(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(download, "fetch_wheel_member", no_network)
    monkeypatch.setattr(download, "fetch_zip_member", no_network)
    second = get_dataset("movielens-100k", cache)
    assert (second.path, second.cached) == (first.path, True)


def test_get_dataset_prefers_grouplens_when_reachable(tmp_path, monkeypatch):
    archive = fake_grouplens_zip(tmp_path)
    fake = Dataset(name="movielens-100k", grouplens=zip_spec(archive), pypi=wheel_spec())
    monkeypatch.setitem(DATASETS, "movielens-100k", fake)
    fetched = get_dataset("movielens-100k", tmp_path / "cache")
    assert fetched.path.name == "u.data" and fetched.format == "movielens"
    store = prepare_store(fetched.path, fetched.format, tmp_path / "s", progress=False).store
    assert store.n_interactions == 2


def test_get_dataset_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown dataset 'movielens-1b'"):
        get_dataset("movielens-1b", tmp_path)
    with pytest.raises(DataError, match="unknown source 'ftp'"):
        get_dataset("movielens-100k", tmp_path, source="ftp")
    fake = Dataset(
        name="movielens-100k",
        grouplens=ZipDownload((tmp_path / "x.zip").as_uri(), "0" * 64, "m", "movielens"),
        pypi=wheel_spec(),
    )
    monkeypatch.setitem(DATASETS, "movielens-100k", fake)
    with pytest.raises(DataError, match="cannot download"):
        get_dataset("movielens-100k", tmp_path, source="grouplens")


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SRT_JAX_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SRT_JAX_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "srt-jax")


@pytest.mark.slow
def test_real_movielens_100k_from_pypi(tmp_path):
    """Downloads the 2 MB RecBole wheel from PyPI (the only network this project uses)."""
    fetched = get_dataset("movielens-100k", tmp_path, source="pypi")
    assert fetched.path.name == "ml-100k.inter"
    store = prepare_store(fetched.path, "recbole", tmp_path / "ml100k", progress=False).store
    assert (store.n_users, store.n_items, store.n_interactions) == (943, 1682, 100_000)

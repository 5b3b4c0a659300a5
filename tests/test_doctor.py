"""``srt-jax doctor``: versions, devices, extras and the data cache, as text and JSON."""

import json

from srt_jax.cli import main


def test_doctor_reports_versions_devices_and_the_cache(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    (cache / "movielens-100k").mkdir(parents=True)
    (cache / "movielens-100k" / "u.data").write_bytes(b"x" * 3000)
    (cache / "notes.txt").write_bytes(b"y" * 10)
    monkeypatch.setenv("SRT_JAX_CACHE", str(cache))

    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["jax_backend"] == "cpu" and report["devices"]
    assert report["packages"]["jax"] and report["cpu_threads"] >= 1
    assert set(report["extras"]) == {"ray", "tensorflow-datasets", "tensorboardX", "mlflow-skinny"}
    assert report["cache"] == {
        "path": str(cache),
        "entries": [{"name": "movielens-100k", "bytes": 3000}, {"name": "notes.txt", "bytes": 10}],
    }

    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "backend cpu" in text and f"{cache}: movielens-100k (0.0 MiB), notes.txt" in text


def test_doctor_with_no_cache_says_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRT_JAX_CACHE", str(tmp_path / "absent"))
    assert main(["doctor"]) == 0
    assert f"{tmp_path / 'absent'}: empty" in capsys.readouterr().out

"""Trackers (``train.trackers``): a sweep logged to MLflow and TensorBoard, the MLflow store
read back by the scaling importer with the sweep export's points; the scalars' names and
values; a failing tracker warns once and never fails the run; tracking keys never change a
run's id; a resumed session continues its MLflow run."""

import json
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from test_loop import tiny_config
from test_sweep_spec import tiny_data, write_spec

from srt_jax.cli import main
from srt_jax.config import config_hash
from srt_jax.errors import ConfigError
from srt_jax.scaling.loaders import load_points
from srt_jax.scaling.mlflow_sqlite import SRT_JAX_NAMES, names_for
from srt_jax.sweep.export import export_sweep
from srt_jax.train import tracking
from srt_jax.train.loop import train
from srt_jax.train.run_dir import RunDirectory
from srt_jax.train.tracking.mlflow_tracker import MlflowTracker, sqlite_path
from srt_jax.train.tracking.records import ScalarStream, metric_name
from srt_jax.train.tracking.tensorboard_tracker import TensorBoardTracker


def event_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the TensorBoard event files of ``log_dir``
    (TFRecord framing: length, its CRC, the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory):
    """A 6-run sweep (2 workers) logged to MLflow and TensorBoard."""
    tmp = tmp_path_factory.mktemp("tracked")
    spec = {
        "name": "tracked",
        "config": {
            "data": tiny_data(tmp / "cache"),
            "model": {"n_layers": 1, "n_heads": 1},
            "train": {
                "batch_size": 8,
                "tokens": 1500,
                "epochs": None,
                "log_every": 20,
                "trackers": ["tensorboard", "mlflow"],
            },
            "eval": {"batch_users": 32},
        },
        "grid": {"model.d_model": [8, 16, 24], "train.tokens": [1500, 3000]},
    }
    root = tmp / "root"
    path = write_spec(tmp / "tracked.yaml", spec)
    assert main(["sweep", "run", str(path), "--root", str(root), "--workers", "2", "--quiet"]) == 0
    return root


@pytest.mark.slow
def test_a_sweep_logged_to_mlflow_reads_back_as_the_export(tracked_sweep, tmp_path, capsys):
    root = tracked_sweep
    store = root / "mlflow.db"
    assert names_for(store) == SRT_JAX_NAMES
    exported = load_points(export_sweep(root)[0].parent)
    imported = load_points(store)
    assert len(exported.run_id) == len(imported.run_id) == 6

    def rows(points):
        return sorted(
            zip(
                points.n_total,
                points.n_non_embedding,
                points.tokens,
                points.compute,
                points.loss,
                points.metrics["ndcg@10"],
                points.metrics["hr@10"],
                strict=True,
            )
        )

    np.testing.assert_allclose(rows(imported), rows(exported), rtol=1e-12)
    connection = sqlite3.connect(store)
    experiments = {name for (name,) in connection.execute("select name from experiments")}
    statuses = [status for (status,) in connection.execute("select status from runs")]
    assert "srt-jax sweep tracked" in experiments
    assert statuses == ["FINISHED"] * 6
    fits = {}
    for name, source in (("mlflow", store), ("export", root / "export")):
        out = tmp_path / name
        assert main(["fit", str(source), "--out", str(out), "--bootstrap", "0", "--quiet"]) == 0
        fits[name] = json.loads((out / "fit.json").read_text())
    # the same points give the same optimum (these 6 tiny runs do not identify the exponents,
    # so the parameters at that optimum may differ with the points' order)
    objectives = [fits[name]["objective"]["value"] for name in ("mlflow", "export")]
    assert objectives[0] == pytest.approx(objectives[1], rel=1e-6)
    used = [
        sorted((p["N"], p["D"], p["C"], p["loss"]) for p in fits[name]["points_used"]["runs"])
        for name in ("mlflow", "export")
    ]
    assert used[0] == used[1]
    srt_names = ["fit", str(store), "--out", str(tmp_path / "srt"), "--mlflow-preset", "srt"]
    assert main([*srt_names, "--quiet"]) == 2  # the SRT sweep's names are not in this store
    assert "no finished run with a 'valid/eval_loss' metric" in capsys.readouterr().err


@pytest.mark.slow
def test_every_run_has_tensorboard_scalars_and_mlflow_artifacts(tracked_sweep):
    root = tracked_sweep
    run_dirs = sorted(p for p in (root / "runs").iterdir() if p.is_dir())
    assert len(run_dirs) == 6
    for run_dir in run_dirs:
        records = RunDirectory(run_dir).read_metrics()
        scalars = event_scalars(run_dir / "tensorboard")
        train_lines = [r for r in records if r["kind"] == "train"]
        assert sorted(scalars["train/loss"]) == [r["step"] for r in train_lines]
        for r in train_lines:
            assert scalars["train/loss"][r["step"]] == pytest.approx(r["loss"], rel=1e-6)
        last_eval = [r for r in records if r["kind"] == "eval"][-1]
        ndcg = scalars["eval/ndcg_at_10"][last_eval["step"]]
        assert ndcg == pytest.approx(last_eval["metrics"]["ndcg@10"], rel=1e-6)
        summary = RunDirectory(run_dir).read_summary()
        assert scalars["test/loss"][summary["steps"]] == pytest.approx(summary["eval"]["loss"])
        state = json.loads((run_dir / "tracking.json").read_text())
        artifacts = root / "mlartifacts"
        files = {p.name for p in artifacts.glob(f"{state['mlflow_run']}/artifacts/*")}
        assert files == {"curves.png", "config.yaml", "summary.json"}


def test_scalar_names_and_values():
    stream = ScalarStream(batch_size=8)
    train_line = {"kind": "train", "step": 5, "tokens": 400, "loss": 3.0, "wall_s": 2.0}
    step, values = stream.scalars(train_line)
    assert step == 5 and values["train/loss"] == 3.0 and values["train/batch_size"] == 8
    assert "train/tokens_per_s" not in values  # no earlier line to take a rate from
    step, values = stream.scalars({**train_line, "step": 10, "tokens": 1000, "wall_s": 4.0})
    assert values["train/tokens_per_s"] == pytest.approx(300.0)
    assert stream.scalars({**train_line, "accumulation": 4})[1]["train/batch_size"] == 32
    eval_line = {"kind": "eval", "step": 10, "loss": None, "metrics": {"ndcg@10": 0.25}}
    assert stream.scalars(eval_line) == (10, {"eval/ndcg_at_10": 0.25})
    assert metric_name("hr@10_filtered") == "hr_at_10_filtered"
    assert metric_name("a+b") == "a_b"
    assert sqlite_path("sqlite:////abs/m.db") == Path("/abs/m.db")
    assert sqlite_path("sqlite:///rel/m.db") == Path("rel/m.db")
    assert sqlite_path("http://host:5000") is None


def test_tracking_keys_change_neither_the_run_id_nor_the_run_directory(tmp_path):
    plain = tiny_config(tmp_path)
    tracked = tiny_config(
        tmp_path,
        "train.trackers=[mlflow]",
        "train.tracking_uri=sqlite:////tmp/x.db",
        "train.tracking_experiment=mine",
    )
    assert config_hash(plain) == config_hash(tracked)
    run = RunDirectory(tmp_path / "run")
    run.claim(plain)
    run.check_config(tracked)  # a resumed session may log elsewhere
    with pytest.raises(ConfigError, match=r"train\.tracking_uri"):
        tiny_config(tmp_path, "train.tracking_uri=sqlite:////tmp/x.db")
    with pytest.raises(ConfigError, match=r"train\.trackers"):
        tiny_config(tmp_path, "train.trackers=[mlflow,mlflow]")
    with pytest.raises(ConfigError, match=r"train\.trackers"):
        tiny_config(tmp_path, "train.trackers=[wandb]")


def test_a_tracker_whose_package_is_missing_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(tracking.PACKAGES, "mlflow", "no_such_module_srt_jax")
    config = tiny_config(tmp_path, "train.trackers=[mlflow]")
    with pytest.raises(ConfigError, match=r"pip install 'srt-jax\[mlflow\]'"):
        tracking.check_installed(config)


def test_an_unreachable_server_and_a_failing_tracker_warn_once_and_the_run_finishes(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    unreachable = tiny_config(
        tmp_path, "train.trackers=[mlflow]", "train.tracking_uri=http://127.0.0.1:9"
    )
    summary = train(unreachable, tmp_path / "unreachable", progress=False)
    assert summary["status"] == "done"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "mlflow tracker failed" in warnings[0]

    calls = []

    def broken(self, step, values):
        calls.append(step)
        raise OSError("No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "log_scalars", broken)
    failing = tiny_config(tmp_path, "train.trackers=[tensorboard]")
    assert train(failing, tmp_path / "failing", progress=False)["status"] == "done"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(calls) == 1, "a failed tracker is dropped after its first error"
    assert len(warnings) == 1 and "No space left on device" in warnings[0]


def test_a_resumed_session_continues_its_mlflow_run(tmp_path):
    config = tiny_config(tmp_path, "train.trackers=[mlflow]")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = MlflowTracker(config, run_dir, config_hash(config))
    first.log_scalars(3, {"train/loss": 2.0})
    first.close("interrupted")
    second = MlflowTracker(config, run_dir, config_hash(config))
    assert second.mlflow_run == first.mlflow_run
    run = second.client.get_run(second.mlflow_run)
    assert run.info.status == "RUNNING" and run.data.metrics["train/loss"] == 2.0
    second.close("done")
    assert second.client.get_run(second.mlflow_run).info.status == "FINISHED"

"""A damaged latest checkpoint: the resume warns, deletes it, falls back to the previous one
and ends exactly as an uninterrupted run; with every checkpoint damaged it is a clear
error. A full disk (a file-size limit) fails the run clearly and leaves the earlier
checkpoints readable."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from test_loop import tiny_config

from srt_jax.config import dump_config
from srt_jax.errors import DataError, TrainingError
from srt_jax.train.loop import train
from srt_jax.train.run_dir import RunDirectory


def damage(step_dir: Path) -> None:
    """Truncate every file of a checkpoint's train state to half its size."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])


def steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.keep_checkpoints=3")
    reference = train(config, tmp_path / "reference", progress=False)
    run_dir = tmp_path / "damaged"
    train(config, run_dir, progress=False)
    saved = steps(run_dir)
    assert len(saved) >= 2
    (run_dir / "summary.json").unlink()  # as if killed after the last save
    damage(run_dir / "checkpoints" / str(saved[-1]))
    capsys.readouterr()
    resumed = train(config, run_dir, progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert f"checkpoints/{saved[-1]}: unreadable" in warnings[0]
    assert f"falling back to step {saved[-2]}" in warnings[0]
    assert resumed["status"] == "done"
    assert resumed["eval"] == reference["eval"]
    lines = RunDirectory(run_dir).read_metrics()
    expected = RunDirectory(tmp_path / "reference").read_metrics()
    strip = ("wall_s", "loop_s", "eval_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in lines] == [
        {k: v for k, v in r.items() if k not in strip} for r in expected
    ]

    (run_dir / "summary.json").unlink()
    for step in steps(run_dir):
        damage(run_dir / "checkpoints" / str(step))
    with pytest.raises(TrainingError, match="no readable checkpoint is left"):
        train(config, run_dir, progress=False)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_clearly_and_keeps_earlier_checkpoints(tmp_path):
    """RLIMIT_FSIZE makes a write past the limit fail with EFBIG, as a full disk fails one
    with ENOSPC. The limit lets every checkpoint file through but not the whole metrics log
    (measured on an unlimited run of the same config): the run fails with a one-line error
    and exit status 1, its checkpoints stay readable, and the same command without the
    limit resumes and ends as the unlimited run."""
    overrides = ["train.log_every=1", "train.tokens=30000", "train.checkpoint_every=50"]
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(tiny_config(tmp_path / "cache", *overrides)))
    command = [sys.executable, "-m", "srt_jax.cli", "train", str(config), "--quiet", "--out"]
    env = {  # the reference run compiles; the limited and resumed runs read its executables
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "limited"
    subprocess.run([*command, str(reference_dir)], check=True, capture_output=True, env=env)
    largest_checkpoint_file = max(
        p.stat().st_size for p in (reference_dir / "checkpoints").rglob("*") if p.is_file()
    )
    metrics_size = (reference_dir / "metrics.jsonl").stat().st_size
    assert metrics_size > largest_checkpoint_file + 20_000  # the metrics log hits the limit
    limit = (largest_checkpoint_file + metrics_size) // 2

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = subprocess.run(
        [*command, str(run_dir)], capture_output=True, text=True, env=env, preexec_fn=limited
    )
    assert failed.returncode == 1, failed.stderr[-2000:]
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("srt-jax: error: ")
    assert "disk is full" in errors[0] and "metrics.jsonl" in errors[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "disk is full" in summary["error"]
    assert steps(run_dir), "the checkpoints saved before the failure are kept"
    resumed = subprocess.run([*command, str(run_dir)], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = json.loads((reference_dir / "summary.json").read_text())
    assert json.loads((run_dir / "summary.json").read_text())["eval"] == reference["eval"]


def test_a_torn_last_metrics_line_is_left_out_and_a_bad_one_elsewhere_named(tmp_path):
    run = RunDirectory(tmp_path)
    run.metrics_path.write_text('{"kind": "train", "step": 1}\n{"kind": "tra')
    assert run.read_metrics() == [{"kind": "train", "step": 1}]
    run.metrics_path.write_text('{"kind": "tra\n{"kind": "train", "step": 1}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:1: not valid JSON"):
        run.read_metrics()

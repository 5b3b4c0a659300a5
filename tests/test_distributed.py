"""Multi-process runs (``jax.distributed``): two CPU processes on localhost train exactly
what one process with two devices trains (data-parallel, or with the item table split
across the processes), write the run directory once, and resume from their checkpoints
after both are killed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_checkpoint_resume import CONFIG as RESUME_CONFIG
from test_checkpoint_resume import without_timing

from srt_jax.errors import ConfigError
from srt_jax.train.distributed import distributed_settings

REPO = Path(__file__).resolve().parents[1]
CONFIG = {**RESUME_CONFIG, "train": {**RESUME_CONFIG["train"], "tokens": 5_000}}  # ~55 steps


def test_settings_come_from_jax_variables():
    assert distributed_settings({}) is None
    env = {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    assert distributed_settings(env) == ("10.0.0.1:1234", 2, 1)
    for name, value, match in [
        ("JAX_PROCESS_ID", "2", r"JAX_PROCESS_ID=2 is invalid .* 0 \.\. 1"),
        ("JAX_PROCESS_ID", "one", r"JAX_PROCESS_ID='one' is invalid: expected an integer"),
        ("JAX_COORDINATOR_ADDRESS", "nohost", r"JAX_COORDINATOR_ADDRESS='nohost' .* HOST:PORT"),
    ]:
        with pytest.raises(ConfigError, match=match):
            distributed_settings({**env, name: value})
    with pytest.raises(ConfigError, match=r"JAX_PROCESS_ID=None"):
        distributed_settings({k: v for k, v in env.items() if k != "JAX_PROCESS_ID"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices_and_resume(tmp_path):
    config = {**CONFIG, "data": {**CONFIG["data"], "cache_dir": str(tmp_path / "cache")}}
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    base_env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}

    def command(run_dir, *overrides):
        cli = [sys.executable, "-m", "srt_jax.cli", "train", str(config_path)]
        return [*cli, "--out", str(run_dir), "--quiet", *overrides]

    def processes(run_dir, *overrides):
        address = f"localhost:{free_port()}"
        return [
            subprocess.Popen(
                command(run_dir, *overrides),
                env={
                    **base_env,
                    "JAX_COORDINATOR_ADDRESS": address,
                    "JAX_NUM_PROCESSES": "2",
                    "JAX_PROCESS_ID": str(i),
                },
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]

    def finish(procs):
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]

    one = subprocess.run(
        command(tmp_path / "one"),
        env={**base_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    reference = without_timing(tmp_path / "one")

    finish(processes(tmp_path / "two"))
    two = without_timing(tmp_path / "two")
    assert len(two) == len(reference) > 10  # written once: no line twice
    for a, b in zip(two, reference, strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
            else:
                assert a[key] == value, key
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["devices"] == 2

    # the item table split over the two processes' devices (train.item_shards = 2)
    split_overrides = ["--set", "train.item_shards=2", "--set", "train.data_parallel=1"]
    finish(processes(tmp_path / "split", *split_overrides))
    split = without_timing(tmp_path / "split")
    assert [line["loss"] for line in split if "loss" in line] == pytest.approx(
        [line["loss"] for line in reference if "loss" in line], rel=1e-5
    )

    killed = tmp_path / "killed"
    procs = processes(killed)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "20").exists():
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.02)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (
        not (killed / "summary.json").exists()
        or json.loads((killed / "summary.json").read_text())["status"] != "done"
    )
    finish(processes(killed))
    resumed = without_timing(killed)
    assert [line["step"] for line in resumed] == [line["step"] for line in reference]
    assert [line["loss"] for line in resumed if "loss" in line] == pytest.approx(
        [line["loss"] for line in reference if "loss" in line], rel=1e-6
    )

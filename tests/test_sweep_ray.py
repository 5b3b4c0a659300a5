"""`srt-jax sweep run --backend ray` against a local Ray instance that the test starts and stops."""

import subprocess

import pytest
from test_sweep_run import (
    assert_each_run_done_once,
    fake_env,
    starts,
    sweep_command,
    write_fake_spec,
)

from srt_jax.sweep.registry import Registry

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_backend_runs_every_run_once_on_a_local_cluster(tmp_path, monkeypatch):
    """On a local cluster declaring 2 GPUs (Ray assigns them as it would real ones): every run
    once, each task pinned to one GPU it shares with one other task, JAX held to its share;
    asking for more GPUs than the cluster has is an error."""
    spec = write_fake_spec(tmp_path)
    root = tmp_path / "root"
    env = {**fake_env(tmp_path, 0.02), "RAY_AUTH_MODE": "disabled"}  # a driver in another process
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the Ray workers inherit them from the raylet
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        object_store_memory=100_000_000,
        configure_logging=False,
    )
    try:
        address = ray.get_runtime_context().gcs_address
        ray_options = ("--backend", "ray", "--address", address, "--workers", "2")
        too_many = sweep_command(spec, root, *ray_options, "--gpus-per-run", "3")
        refused = subprocess.run(too_many, env=env, capture_output=True, text=True, timeout=300)
        command = sweep_command(spec, root, *ray_options, "--gpus-per-run", "0.5")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        ray.shutdown()
    assert refused.returncode != 0
    assert "--gpus-per-run 3: the Ray cluster has 2 GPUs" in refused.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 done, 0 running, 0 pending, 0 failed" in result.stdout
    runs = assert_each_run_done_once(root)
    assert all("/ray/" in run["worker"] for run in runs)
    assert sorted(run_id for run_id, _ in starts(tmp_path)) == sorted(r["run_id"] for r in runs)
    with Registry(root) as registry:
        assert {e["event"] for e in registry.events()} == {"claim", "done"}
    for line in (tmp_path / "starts.log").read_text().splitlines():
        _, _, _, gpus, fraction = line.split()
        assert gpus in ("0", "1") and fraction == "0.450", line


def test_gpus_per_run_needs_the_ray_backend(tmp_path):
    spec = write_fake_spec(tmp_path)
    command = sweep_command(spec, tmp_path / "root", "--gpus-per-run", "1")
    env = fake_env(tmp_path, 0.02)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--gpus-per-run needs --backend ray" in result.stderr
    assert not (tmp_path / "root").exists()  # refused before any run was registered

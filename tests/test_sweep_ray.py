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
    spec = write_fake_spec(tmp_path)
    root = tmp_path / "root"
    env = {**fake_env(tmp_path, 0.02), "RAY_AUTH_MODE": "disabled"}  # a driver in another process
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the Ray workers inherit them from the raylet
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100_000_000,
        configure_logging=False,
    )
    try:
        address = ray.get_runtime_context().gcs_address
        command = sweep_command(
            spec, root, "--backend", "ray", "--address", address, "--workers", "2"
        )
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        ray.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 done, 0 running, 0 pending, 0 failed" in result.stdout
    runs = assert_each_run_done_once(root)
    assert all("/ray/" in run["worker"] for run in runs)
    assert sorted(run_id for run_id, _ in starts(tmp_path)) == sorted(r["run_id"] for r in runs)
    with Registry(root) as registry:
        assert {e["event"] for e in registry.events()} == {"claim", "done"}

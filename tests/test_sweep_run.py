"""`srt-jax sweep run` with real worker processes: completion, failures, and recovery after
``kill -9`` of the launcher or of one worker (runs resume, none is lost or done twice).

These tests use ``tests/sweep_fake_run.py`` (a fast run function with the run-directory
contract of the real one) so that kills land at known points; test_sweep_train.py runs the
real training entry.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_sweep_spec import tiny_data, write_spec

from srt_jax.cli import main
from srt_jax.scaling.loaders import load_points
from srt_jax.sweep.registry import Registry

TESTS = Path(__file__).resolve().parent


def write_fake_spec(tmp_path: Path, *, tokens=(1500, 2400), learning_rates=(1e-3,)) -> Path:
    spec = {
        "name": "fake",
        "config": {
            "data": tiny_data(tmp_path / "cache"),
            "train": {"epochs": None, "tokens": 1000},
        },
        "grid": {"train.tokens": list(tokens), "train.learning_rate": list(learning_rates)},
        "zip": [{"model.d_model": [8, 16, 24], "model.n_heads": [1, 2, 2]}],
    }
    return write_spec(tmp_path / "fake.yaml", spec)


def fake_env(tmp_path: Path, step_s: float) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "FAKE_RUN_LOG": str(tmp_path / "starts.log"),
        "FAKE_STEP_S": str(step_s),
    }


def sweep_command(spec: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "srt_jax.cli",
        "sweep",
        "run",
        str(spec),
        "--root",
        str(root),
        "--run-fn",
        "sweep_fake_run:train",
        *extra,
    ]


def starts(tmp_path: Path) -> list[tuple[str, int]]:
    lines = (tmp_path / "starts.log").read_text().split("\n")
    return [(line.split()[0], int(line.split()[1])) for line in lines if line]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_each_run_done_once(root: Path) -> list[dict]:
    """Every run done, one 'done' event each, and its metrics steps 1..n without repeats."""
    with Registry(root) as registry:
        runs = registry.runs()
        events = registry.events()
    assert runs and all(run["status"] == "done" for run in runs)
    done = Counter(e["run_id"] for e in events if e["event"] == "done")
    assert done == Counter({run["run_id"]: 1 for run in runs})
    for run in runs:
        lines = (root / run["run_dir"] / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines if '"train"' in line]
        assert steps == list(range(1, len(steps) + 1)), run["run_id"]
        assert steps[-1] * 100 == run["summary"]["train_tokens"] == run["D"]
    return runs


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``srt-jax ARGV`` in this process; return the status, stdout and stderr."""
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_sweep_runs_with_two_workers_then_status_export_and_fit_loader(
    tmp_path, monkeypatch, capsys
):
    spec = write_fake_spec(tmp_path)
    root = tmp_path / "root"
    for name, value in fake_env(tmp_path, 0.01).items():
        monkeypatch.setenv(name, value)
    status, out, err = cli(sweep_command(spec, root, "--workers", "2")[3:], capsys)
    assert status == 0, err
    assert "6 done, 0 running, 0 pending, 0 failed" in out
    runs = assert_each_run_done_once(root)
    assert len(starts(tmp_path)) == 6
    workers = {run["worker"].split("/")[1] for run in runs}
    assert workers == {"w0", "w1"}
    assert (root / "logs" / "worker-0.log").exists()
    # running it again does nothing: every run is done
    status, out, _ = cli(sweep_command(spec, root)[3:], capsys)
    assert status == 0 and "(0 new;" in out
    assert len(starts(tmp_path)) == 6
    status, out, _ = cli(["sweep", "status", "--root", str(root)], capsys)
    assert status == 0 and "6 done" in out and "2x16 h2" in out
    status, out, err = cli(["sweep", "export", "--root", str(root)], capsys)
    assert status == 0, err
    points = load_points(root / "export")
    assert sorted(points.run_id) == sorted(run["run_id"] for run in runs)


def test_a_failing_run_is_recorded_failed_and_retry_failed_queues_it(tmp_path, monkeypatch, capsys):
    spec = write_fake_spec(tmp_path, tokens=(300,), learning_rates=(1e-3, 2.0))
    root = tmp_path / "root"
    for name, value in fake_env(tmp_path, 0.0).items():
        monkeypatch.setenv(name, value)
    status, out, err = cli(sweep_command(spec, root)[3:], capsys)
    assert status == 1
    assert "3 done, 0 running, 0 pending, 3 failed" in out
    assert "retry-failed" in err
    with Registry(root) as registry:
        failed = [r for r in registry.runs() if r["status"] == "failed"]
    assert len(failed) == 3
    assert all(r["error"] == "TrainingError: non-finite loss at step 3" for r in failed)
    assert all(r["config"]["train"]["learning_rate"] == 2.0 for r in failed)
    status, out, _ = cli(["sweep", "status", "--root", str(root)], capsys)
    assert "TrainingError: non-finite loss at step 3" in out
    status, out, _ = cli(["sweep", "retry-failed", "--root", str(root)], capsys)
    assert status == 0 and "3 failed run(s)" in out
    with Registry(root) as registry:
        assert registry.counts() == {"pending": 3, "running": 0, "done": 3, "failed": 0}


@pytest.mark.slow
def test_kill_9_of_the_launcher_then_the_same_command_completes_every_run_once(tmp_path):
    spec = write_fake_spec(tmp_path)
    root = tmp_path / "root"
    env = fake_env(tmp_path, 0.1)
    command = sweep_command(spec, root, "--workers", "2")
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def one_done_and_one_past_a_checkpoint() -> bool:
        if not (root / "registry.sqlite").exists():
            return False
        with Registry(root) as registry:
            runs = registry.runs()
        running = [r for r in runs if r["status"] == "running"]
        return any(r["status"] == "done" for r in runs) and any(
            (root / r["run_dir"] / "checkpoint.json").exists() for r in running
        )

    wait_for(one_done_and_one_past_a_checkpoint, what="a run done and one checkpointed")
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    with Registry(root) as registry:
        wait_for(lambda: registry.counts()["running"] == 0, 10, "orphaned workers to release")
        released = [e for e in registry.events() if e["event"] == "release"]
        assert released and all(e["detail"] == "launcher exited" for e in released)
        assert registry.counts()["done"] < 6
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert_each_run_done_once(root)
    resumed = [(run_id, step) for run_id, step in starts(tmp_path) if step > 0]
    assert resumed, "a killed run should resume from its checkpoint"
    assert len(starts(tmp_path)) == 6 + len(
        {e["run_id"] for e in released}
    )  # each released run started once more, nothing else


@pytest.mark.slow
def test_kill_9_of_a_worker_its_run_is_reclaimed_after_the_heartbeat_expires(tmp_path):
    spec = write_fake_spec(tmp_path, tokens=(2400,))
    root = tmp_path / "root"
    env = fake_env(tmp_path, 0.1)
    command = sweep_command(spec, root, "--workers", "2", "--heartbeat-timeout", "1.5")
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim: dict = {}

    def a_run_past_a_checkpoint() -> bool:
        if not (root / "registry.sqlite").exists():
            return False
        with Registry(root) as registry:
            for run in registry.runs():
                if (
                    run["status"] == "running"
                    and (root / run["run_dir"] / "checkpoint.json").exists()
                ):
                    victim.update(run)
                    return True
        return False

    wait_for(a_run_past_a_checkpoint, what="a checkpointed running run")
    os.kill(int(victim["worker"].split("/")[-1]), signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err
    assert_each_run_done_once(root)
    with Registry(root) as registry:
        events = [e["event"] for e in registry.events(victim["run_id"])]
        final = next(r for r in registry.runs() if r["run_id"] == victim["run_id"])
    assert events == ["claim", "reclaim", "done"]
    assert final["attempts"] == 2 and final["worker"] != victim["worker"]
    assert any(run_id == victim["run_id"] and step > 0 for run_id, step in starts(tmp_path))

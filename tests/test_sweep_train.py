"""A sweep of real training runs (srt_jax.train.loop.train): ``kill -9`` of the launcher
mid-run, the same command again, and every run finishes once, resumed from its checkpoint,
with an uninterrupted metrics log; the export then loads in the scaling loader."""

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_sweep_run import wait_for
from test_sweep_spec import tiny_data, write_spec

from srt_jax.scaling.loaders import load_points
from srt_jax.sweep.export import export_sweep
from srt_jax.sweep.registry import Registry


def real_spec(tmp_path: Path) -> Path:
    spec = {
        "name": "real",
        "config": {
            "data": tiny_data(tmp_path / "cache"),
            "model": {"d_model": 8, "n_layers": 1, "n_heads": 1},
            "train": {
                "batch_size": 8,
                "tokens": 30000,
                "epochs": None,
                "log_every": 20,
                "checkpoint_every": 40,
            },
            "eval": {"batch_users": 32},
        },
        "grid": {"train.seed": [0, 1]},
    }
    return write_spec(tmp_path / "real.yaml", spec)


def checkpointed(run_dir: Path) -> bool:
    """A finished checkpoint (orbax renames ``<step>.orbax-checkpoint-tmp`` to ``<step>``)."""
    checkpoints = run_dir / "checkpoints"
    return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())


@pytest.mark.slow
def test_real_runs_survive_kill_9_of_the_launcher(tmp_path):
    spec, root = real_spec(tmp_path), tmp_path / "root"
    command = [sys.executable, "-m", "srt_jax.cli", "sweep", "run", str(spec)]
    command += ["--root", str(root), "--workers", "2"]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def a_running_run_has_a_checkpoint() -> bool:
        if not (root / "registry.sqlite").exists():
            return False
        with Registry(root) as registry:
            runs = registry.runs()
        return any(r["status"] == "running" and checkpointed(root / r["run_dir"]) for r in runs)

    wait_for(a_running_run_has_a_checkpoint, 120, "a checkpoint of a running run")
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    with Registry(root) as registry:
        wait_for(lambda: registry.counts()["running"] == 0, 20, "the workers to release")
        released = {e["run_id"] for e in registry.events() if e["event"] == "release"}
    assert released
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with Registry(root) as registry:
        runs = registry.runs()
        done = Counter(e["run_id"] for e in registry.events() if e["event"] == "done")
    assert [r["status"] for r in runs] == ["done", "done"]
    assert done == Counter({r["run_id"]: 1 for r in runs})
    for run in runs:
        summary = run["summary"]
        assert summary["status"] == "done" and summary["run_id"] == run["run_id"]
        assert summary["train_tokens"] == run["D"] == 30000
        assert summary["params_total"] == run["N"]
        assert summary["train_flops"] == pytest.approx(run["C"])
        lines = (root / run["run_dir"] / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines if '"kind": "train"' in line]
        assert steps == sorted(set(steps)), "a resumed run must not repeat logged steps"
    points = load_points(export_sweep(root)[0].parent)
    assert sorted(points.run_id) == sorted(r["run_id"] for r in runs)

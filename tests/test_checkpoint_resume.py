"""Resuming a run killed with SIGKILL continues exactly: its metrics.jsonl equals an
uninterrupted run's, loss for loss (tolerance 0), for both backbones, for the optimisers
that carry their own state (schedule-free's averages, prodigy's d, USGM's line search) and
for the adaptive batch (gradient accumulator and controller)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("wall_s", "loop_s", "eval_s")

CONFIG = {
    "data": {
        "dataset": "synthetic",
        "synthetic": {"users": 150, "items": 40, "mean_length": 16},
        "max_len": 8,
    },
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
    "train": {
        "batch_size": 16,
        "epochs": None,
        "tokens": 7_500,  # ~80 steps: killed after the checkpoint of step 20, before the
        "eval_every_tokens": 2_500,  # first of three evaluations (step ~26)
        "log_every": 3,
        "checkpoint_every": 10,
        "keep_checkpoints": 1,
    },
}


def train_command(config_path, run_dir):
    return [sys.executable, "-m", "srt_jax.cli", "train", str(config_path), "--out", str(run_dir)]


def without_timing(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


MODELS = {
    "transformer": CONFIG["model"],
    "mamba": {"backbone": "mamba", "d_model": 16, "n_layers": 1, "mamba": {"d_state": 4}},
}


RUNS = {  # both backbones, the optimisers with their own state, the adaptive batch
    "transformer-adamw": ("transformer", {"optimizer": "adamw"}),
    "mamba-adamw": ("mamba", {"optimizer": "adamw"}),
    # averaged state; evaluated at eval parameters
    "transformer-schedule_free_adamw": ("transformer", {"optimizer": "schedule_free_adamw"}),
    "transformer-prodigy": ("transformer", {"optimizer": "prodigy"}),  # d in the train lines
    "transformer-usgm": ("transformer", {"optimizer": "usgm"}),  # line search: L, evaluations
    # the accumulator (train state) and the controller (loop state)
    "transformer-adaptive_batch": ("transformer", {"adaptive_batch": {"max_accumulation": 8}}),
}


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """One persistent compilation cache for this module's runs (in one test process, one
    run at a time): the three processes of a test compile once, and same-shaped pieces
    (the evaluator of the transformer runs) compile once for every optimiser."""
    return tmp_path_factory.mktemp("jax-cache")


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, name, jax_cache):
    backbone, train_keys = RUNS[name]
    config = {
        **CONFIG,
        "data": {**CONFIG["data"], "cache_dir": str(tmp_path / "cache")},
        "model": MODELS[backbone],
        "train": {**CONFIG["train"], **train_keys},
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
        "JAX_COMPILATION_CACHE_DIR": str(jax_cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }

    def run(run_dir):
        return subprocess.run(
            train_command(config_path, run_dir),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    whole = run(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    resumed_dir = tmp_path / "resumed"
    proc = subprocess.Popen(
        train_command(config_path, resumed_dir),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (resumed_dir / "checkpoints" / "20").exists():  # the second checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = json.loads((resumed_dir / "summary.json").read_text())
    assert summary["status"] == "running"  # killed mid-run
    killed_at = len(without_timing(resumed_dir))

    again = run(resumed_dir)
    assert again.returncode == 0, again.stderr
    expected, got = without_timing(tmp_path / "whole"), without_timing(resumed_dir)
    assert killed_at < len(expected)
    assert got == expected  # every step, token count, loss, lr and eval metric, exactly
    final = json.loads((resumed_dir / "summary.json").read_text())
    assert final["status"] == "done"
    assert final["eval"] == json.loads((tmp_path / "whole" / "summary.json").read_text())["eval"]

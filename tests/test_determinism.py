"""Determinism as a figure: the same config trained twice, in two processes, gives the same
metrics.jsonl (every loss, gradient norm and metric, tolerance 0; timings aside) and
bitwise-identical parameters at its best checkpoint, for both backbones, on the CPU."""

import subprocess

import jax
import numpy as np
import pytest
import yaml
from test_checkpoint_resume import CONFIG, MODELS, train_command, without_timing

from srt_jax.train.run_eval import restore_best


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(MODELS))
def test_the_same_config_trained_twice_is_bitwise_identical(backbone, tmp_path):
    train = {**CONFIG["train"], "tokens": 5_000, "eval_every_tokens": 2_500}
    config = {**CONFIG, "model": MODELS[backbone], "train": train}
    config["data"] = {**config["data"], "cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = [tmp_path / "first", tmp_path / "second"]
    for run_dir in runs:
        done = subprocess.run(train_command(path, run_dir), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    first, second = (without_timing(run_dir) for run_dir in runs)
    assert first == second and len(first) > 5
    restored = [restore_best(run_dir) for run_dir in runs]
    assert restored[0].step == restored[1].step
    leaves = [jax.tree.leaves(r.params) for r in restored]
    assert len(leaves[0]) == len(leaves[1]) > 0
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

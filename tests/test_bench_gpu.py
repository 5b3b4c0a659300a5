"""benchmarks/bench_gpu.py, the one command for the GPU section of benchmarks/README.md,
checked on the CPU (--allow-cpu): it refuses to start without a GPU unless told, and its
quick run times both training variants and tabulates them."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_without_a_gpu_it_refuses_and_says_how_to_get_one(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "no GPU" in done.stderr and "pip install -e '.[gpu]'" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_quick_run_on_the_cpu_tabulates_both_variants(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--allow-cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Benchmarks on cpu")
    assert "gpu_defaults (bfloat16, fused)" in summary
    assert "float32_einsum (float32, einsum)" in summary
    assert "| 1.00x |" in summary  # the float32 row is its own baseline
    assert "Failed" not in summary
    assert not (out / "eval.txt").exists()
    assert "jax" in (out / "environment.txt").read_text()

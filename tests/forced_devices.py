"""Running a script in a fresh Python process that sees several forced CPU devices (XLA's
``--xla_force_host_platform_device_count``, which must be set before JAX starts)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_on_cpu_devices(script: str, *args: str, devices: int = 4) -> object:
    """Run ``python -c script REPO *args`` on ``devices`` CPU devices (the repository and
    ``tests/`` importable); its stdout's last line parsed as JSON (the script must print
    one)."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script, str(REPO), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

"""One command for the GPU section of benchmarks/README.md (issue 15, item 7).

On a machine with an NVIDIA GPU, after ``pip install -e '.[gpu]'`` (JAX with CUDA 12):

    python benchmarks/bench_gpu.py [--out DIR] [--quick]

runs each benchmark below in its own process and keeps its output in DIR (default
``benchmarks/results/gpu-YYYYMMDD-HHMMSS``):

1. ``environment.txt``: JAX's version and devices, and ``nvidia-smi``'s report;
2. ``train_gpu_defaults.*``: the training step (``bench_train.py``) at the small (d64/L50),
   large (d256/4 layers/L200) and gpu (d512/4 layers/L200, 256 windows a step) shapes,
   packed and unpacked, with the GPU defaults: bfloat16 compute and
   ``jax.nn.dot_product_attention`` (cuDNN's flash attention where it applies). Each shape's
   rate is a fraction of a bfloat16 matmul timed in the same process;
3. ``train_float32_einsum.*``: the same shapes in float32 with the written-out attention
   (the CPU path), against a float32 matmul;
4. ``eval.txt``: full-ranking evaluation (``bench_eval.py``) at the small and large shapes;
5. ``scan.txt``: the selective scan's forms (``bench_scan.py``), which decide ``scan: auto``.

Then it writes ``summary.md``: the training figures of both runs as one table, with the
speed-up of the GPU defaults, ready to paste into the README's GPU section. A benchmark that
fails is named in the summary and the command exits non-zero; the others still run.

Without a GPU it refuses to start; ``--allow-cpu`` runs the same commands on the CPU (how
the test checks the script). ``--quick`` times the small shape only, one step in one round
for each training variant, and skips the evaluation and the scan: a check that the script
and ``bench_train.py`` run together, not figures to keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "gpu_defaults": ["model.dtype=bfloat16", "model.attention=fused"],
    "float32_einsum": ["model.dtype=float32", "model.attention=einsum"],
}
"""Training-step variants: name -> config overrides of every timed shape."""


def commands(out: Path, quick: bool) -> dict[str, list[str]]:
    """The benchmarks to run: name -> command line (each writes ``out/NAME.txt``)."""
    shapes = ["small"] if quick else ["small", "large", "gpu"]
    timing = ["--rounds", "1", "--steps", "1"] if quick else ["--rounds", "5", "--steps", "10"]
    python = sys.executable
    runs = {}
    for variant, overrides in VARIANTS.items():
        runs[f"train_{variant}"] = [
            python,
            str(HERE / "bench_train.py"),
            "--shapes",
            *shapes,
            *([] if quick else ["--pack"]),
            *timing,
            *(f"--set={override}" for override in overrides),
            "--json",
            str(out / f"train_{variant}.json"),
        ]
    if not quick:
        runs["eval"] = [python, str(HERE / "bench_eval.py"), "--shapes", "small", "large"]
        runs["eval"] += ["--users", "64", "256"]
        runs["scan"] = [python, str(HERE / "bench_scan.py"), "--shapes", "32x50", "2x4096"]
    return runs


def environment() -> str:
    """JAX's version and devices, and nvidia-smi's report where there is one."""
    probe = "import jax; print('jax', jax.__version__, jax.devices())"
    lines = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout]
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True)
        lines.append(smi.stdout)
    return "\n".join(lines)


def default_backend() -> str:
    """JAX's default backend in a fresh process: ``gpu``, ``cpu`` or ``tpu``."""
    probe = "import jax; print(jax.default_backend())"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return found.stdout.strip()


def summary_table(out: Path) -> list[str]:
    """Markdown rows of both training variants' figures, shape by shape."""
    results = {
        variant: json.loads(path.read_text())
        for variant in VARIANTS
        if (path := out / f"train_{variant}.json").exists()
    }
    if not results:
        return ["(no training figures)"]
    rows = [
        "| shape | layout | variant | tokens/s | GFLOP/s | of the same-dtype matmul | "
        "padding | speed-up over float32 + einsum |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    baseline = {
        (r["name"], r["packed"]): r["tokens_per_s"] for r in results.get("float32_einsum", [])
    }
    for variant, timed in results.items():
        for r in timed:
            shape = r["shape"]
            label = f"{r['name']}: d{shape['d_model']}/{shape['n_layers']}L/L{shape['max_len']}"
            layout = f"packed ({shape['packed_rows']} rows)" if shape["packed_rows"] else "rows"
            base = baseline.get((r["name"], r["packed"]))
            speed_up = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
            rows.append(
                f"| {label}, B{shape['batch_size']} | {layout} | {variant} "
                f"({shape['dtype']}, {shape['attention']}) | {r['tokens_per_s']:,.0f} | "
                f"{r['gflops_per_s']:,.1f} | {r['fraction_of_matmul']:.1%} of "
                f"{r['matmul_gflops_per_s']:,.0f} GFLOP/s | {r['padding_share']:.1%} | "
                f"{speed_up} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="results folder (default: a dated one)")
    parser.add_argument("--quick", action="store_true", help="check that everything runs")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU")
    args = parser.parse_args(argv)
    backend = default_backend()
    if backend != "gpu" and not args.allow_cpu:
        print(
            "bench_gpu.py: JAX sees no GPU here (install JAX with CUDA: pip install -e "
            "'.[gpu]'); --allow-cpu runs the same benchmarks on the CPU",
            file=sys.stderr,
        )
        return 2
    out = args.out or HERE / "results" / time.strftime("gpu-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "environment.txt").write_text(environment())
    failed = []
    runs = commands(out, args.quick)
    for i, (name, command) in enumerate(runs.items(), start=1):
        print(f"[{i}/{len(runs)}] {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        with open(out / f"{name}.txt", "w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - started
        print(f"    {'done' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
        if code:
            failed.append(f"{name} (exit {code}; see {name}.txt)")
    lines = [
        f"# Benchmarks on {backend} ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/bench_gpu.py{' --quick' if args.quick else ''}`; environment in "
        "`environment.txt`, each benchmark's output in its own file.",
        "",
        *summary_table(out),
        "",
        *(f"**Failed:** {name}" for name in failed),
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"summary: {out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

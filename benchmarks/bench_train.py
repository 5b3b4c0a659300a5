"""Training speed, memory and time to quality of the real training step and loop.

Speed: for ``configs/ml100k_sasrec.yaml`` and the same run at d_model 256 / 4 layers /
length 200, times the jitted, donated train step (optimizer included) on the sampler's real
MovieLens-100K batches, dispatched as the loop does, and prints trained target tokens/s and
the achieved FLOP/s — the analytic training FLOPs of ``srt_jax.models.counting`` per trained
target token (and per computed position, padding included) — as a fraction of a large
matmul's FLOP/s in the model's compute dtype (float32 on a CPU, bfloat16 on a GPU by default)
measured in the same process. The machine is shared, so steps and
the matmul are timed in interleaved rounds and each keeps its fastest round. Each shape runs
in its own process, so the peak RSS printed is that shape's. With ``--pack`` each shape is
timed again with ``data.pack`` (the batch's windows packed into fewer rows with segment
ids, :mod:`srt_jax.data.packing`); the share of computed positions that are padding is
printed for both.

Quality and time to quality: trains ``--config`` (default ``configs/ml100k_sasrec.yaml``; the
time-to-quality recipe is ``configs/ml100k_sasrec_fast.yaml``) as it is (validation
every ``--eval-every`` tokens if given) with ``srt_jax.train.loop.train`` for each given seed
and prints the loop seconds — wall time after compilation, evaluations included — until
validation NDCG@10 first reaches 0.050 and how much of it the evaluations took; then the
test NDCG@10 / HR@10 / MRR@10 at the best-validation checkpoint (unfiltered, RecBole's
protocol, and seen-filtered), and their mean over the seeds beside the issue's bar.

    python benchmarks/bench_train.py [--shapes small large] [--pack] [--rounds 5] [--steps 10]
                                     [--set model.dtype=float32 ...] [--json results.json]
                                     [--quality-seeds 0 1 2] [--eval-every TOKENS]
                                     [--config configs/ml100k_sasrec_fast.yaml]

``--set`` overrides config keys of every timed shape (e.g. ``model.attention=einsum``);
``--json`` writes every shape's figures to a file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from srt_jax.config import RunConfig, load_config, replace
from srt_jax.models.layers import compute_dtype, fused_attention
from srt_jax.train.build import build_run
from srt_jax.train.loop import peak_rss_mb, train
from srt_jax.train.run_dir import RunDirectory

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml100k_sasrec.yaml"
SHAPES = {
    "small": [],
    "large": ["model.d_model=256", "model.n_layers=4", "model.n_heads=4", "data.max_len=200"],
    "gpu": [  # a step big enough to occupy a GPU (benchmarks/bench_gpu.py)
        "model.d_model=512",
        "model.n_layers=4",
        "model.n_heads=8",
        "data.max_len=200",
        "train.batch_size=256",
    ],
}
QUALITY_NDCG = 0.050
TEST_BAR = {"ndcg@10": 0.064, "hr@10": 0.136}  # RecBole 1.2.1 SASRec, converged
TEST_KEYS = ("ndcg@10", "hr@10", "mrr@10")


def matmul_rate(dtype: jnp.dtype, n: int = 3072) -> float:
    """FLOP/s of one jitted ``n x n @ n x n`` matmul in ``dtype`` (compiled before timing)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    fn = jax.jit(lambda x: x @ x)
    fn(a).block_until_ready()
    start = time.perf_counter()
    fn(a).block_until_ready()
    return 2.0 * n**3 / (time.perf_counter() - start)


def bench_shape(config: RunConfig, rounds: int, steps: int) -> dict:
    """Fastest-round step speed of ``config`` against the matmul; returns the figures."""
    parts = build_run(config, progress=False)
    train_cfg, max_len = config.train, config.data.max_len
    compile_s = parts.step.compile(train_cfg.batch_size, max_len, parts.sampler.packed_rows)
    state = parts.step.init_state()
    batches = parts.sampler.iter_batches()
    best_step, best_matmul, k, tokens = float("inf"), 0.0, 0, 0
    positions, real_inputs, timed_tokens = 0, 0, 0
    dtype = compute_dtype(config.model.dtype)
    for round_ in range(rounds + 1):  # round 0 warms up
        start, round_tokens, previous = time.perf_counter(), 0, None
        for _ in range(steps):
            batch = next(batches)
            state, metrics = parts.step(state, parts.step.put_batch(batch), k, tokens)
            if previous is not None:  # the loop's one-step-late read
                jax.device_get(previous["loss_finite"])
            previous, k = metrics, k + 1
            tokens += batch.n_targets
            round_tokens += batch.n_targets
            if round_:
                positions += batch.inputs.size
                real_inputs += int(np.count_nonzero(batch.inputs))
                timed_tokens += batch.n_targets
        jax.block_until_ready(state)
        if round_:
            seconds = (time.perf_counter() - start) / round_tokens
            best_step = min(best_step, seconds)
            best_matmul = max(best_matmul, *(matmul_rate(dtype) for _ in range(3)))
    tokens_per_s = 1.0 / best_step
    positions_per_token = positions / timed_tokens
    flop_rate = parts.flops_per_token * tokens_per_s
    return {
        "shape": {
            "d_model": config.model.d_model,
            "n_layers": config.model.n_layers,
            "max_len": max_len,
            "batch_size": train_cfg.batch_size,
            "packed_rows": parts.sampler.packed_rows,
            "dtype": dtype.name,
            "attention": "fused" if fused_attention(config.model.attention) else "einsum",
        },
        "platform": jax.default_backend(),
        "padding_share": 1.0 - real_inputs / positions,
        "compile_s": compile_s,
        "tokens_per_s": tokens_per_s,
        "gflops_per_s": flop_rate / 1e9,
        "matmul_gflops_per_s": best_matmul / 1e9,
        "fraction_of_matmul": flop_rate / best_matmul,
        "fraction_of_matmul_positions": flop_rate * positions_per_token / best_matmul,
        "peak_rss_mb": peak_rss_mb(),
    }


def time_to_quality(config: RunConfig) -> dict:
    """Train ``config`` in a temporary run directory; loop seconds to valid NDCG@10 0.050."""
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(config, run_dir, progress=False)
        evals = [r for r in RunDirectory(run_dir).read_metrics() if r["kind"] == "eval"]
    reached = next(
        (i for i, e in enumerate(evals) if e["metrics"]["ndcg@10"] >= QUALITY_NDCG), None
    )
    result = {
        "seed": config.train.seed,
        "loop_s": None,
        "eval_s": None,
        "epochs": None,
        "best_valid_ndcg@10": max(e["metrics"]["ndcg@10"] for e in evals),
        "compile_s": summary["compile_s"],
        "evaluations": None,
        "test": {k: summary["eval"][k] for k in TEST_KEYS},
        "test_filtered": {k: summary["eval"][f"{k}_filtered"] for k in TEST_KEYS},
        "best_step": summary["eval"]["step"],
        "wall_s": summary["wall_s"],
    }
    if reached is not None:
        result.update(
            loop_s=evals[reached]["loop_s"],
            eval_s=sum(e["eval_s"] for e in evals[: reached + 1]),
            epochs=evals[reached]["tokens"] / summary["protocol"]["split"]["train_targets"],
            evaluations=reached + 1,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", choices=sorted(SHAPES), default=["small", "large"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument(
        "--quality-seeds",
        type=int,
        nargs="*",
        default=[],
        metavar="SEED",
        help="time to quality of these train.seed values (e.g. 0 1 2)",
    )
    parser.add_argument(
        "--eval-every", type=int, help="tokens between evaluations (default: the config's)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG,
        help=f"config of the quality runs (default configs/{CONFIG.name})",
    )
    parser.add_argument(
        "--pack",
        action="store_true",
        help="also time each shape with data.pack (windows packed with segment ids)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of every timed shape (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="write the timed shapes' figures here")
    parser.add_argument("--one", choices=sorted(SHAPES), help=argparse.SUPPRESS)  # a child
    parser.add_argument("--one-packed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        overrides = SHAPES[args.one] + [f"data.pack={args.one_packed}", *args.overrides]
        config = load_config(CONFIG, overrides)
        print(json.dumps(bench_shape(config, args.rounds, args.steps)))
        return
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; quality config {args.config}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    timed = []
    for name, packed in [(n, p) for n in args.shapes for p in [False, True][: 1 + args.pack]]:
        child = [sys.executable, __file__, "--one", name, *(["--one-packed"] if packed else [])]
        child += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
        child += [f"--set={override}" for override in args.overrides]
        out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        timed.append({"name": name, "packed": packed, "overrides": args.overrides, **result})
        shape = result["shape"]
        rows = shape["packed_rows"]
        layout = f"packed into {rows} rows" if rows else "unpacked"
        if packed and not rows:
            layout = "data.pack, no row to save: unpacked"
        print(
            f"[{name}, {layout}] d_model {shape['d_model']}, {shape['n_layers']} layers, L "
            f"{shape['max_len']}, B {shape['batch_size']}: {result['tokens_per_s']:,.0f} trained "
            f"tokens/s, {result['gflops_per_s']:.1f} GFLOP/s = "
            f"{result['fraction_of_matmul']:.1%} of the {shape['dtype']} matmul's "
            f"{result['matmul_gflops_per_s']:.1f} GFLOP/s "
            f"({result['fraction_of_matmul_positions']:.1%} counting padded positions); "
            f"padding {result['padding_share']:.1%} of the positions; "
            f"compile {result['compile_s']:.1f} s; peak RSS {result['peak_rss_mb']:,.0f} MiB; "
            f"{shape['attention']} attention on {result['platform']}"
        )
    if args.json:
        args.json.write_text(json.dumps(timed, indent=1) + "\n")
    results = []
    for seed in args.quality_seeds:
        overrides = [f"train.seed={seed}"]
        if args.eval_every is not None:
            overrides.append(f"train.eval_every_tokens={args.eval_every}")
        r = time_to_quality(replace(load_config(args.config), overrides))
        results.append(r)
        if r["loop_s"] is None:
            reached = f"valid ndcg@10 never reached {QUALITY_NDCG}"
        else:
            reached = (
                f"valid ndcg@10 >= {QUALITY_NDCG} after {r['loop_s']:.1f} s of training loop "
                f"after compilation ({r['compile_s']:.1f} s excluded), of which "
                f"{r['eval_s']:.1f} s in {r['evaluations']} evaluations; {r['epochs']:.1f} epochs"
            )
        print(
            f"[quality, seed {seed}] {reached}; best valid ndcg@10 "
            f"{r['best_valid_ndcg@10']:.4f} at step {r['best_step']}; test there: "
            + _metrics_text(r["test"])
            + "; seen-filtered "
            + _metrics_text(r["test_filtered"])
            + f"; run {r['wall_s']:.0f} s"
        )
    if len(results) > 1:
        mean = {k: sum(r["test"][k] for r in results) / len(results) for k in TEST_KEYS}
        mean_f = {k: sum(r["test_filtered"][k] for r in results) / len(results) for k in TEST_KEYS}
        bar = ", ".join(
            f"{k} {mean[k]:.4f} {'>=' if mean[k] >= v else '<'} {v}" for k, v in TEST_BAR.items()
        )
        print(
            f"[quality, mean of {len(results)} seeds] test {_metrics_text(mean)}; seen-filtered "
            f"{_metrics_text(mean_f)}; bar (RecBole SASRec): {bar}"
        )


def _metrics_text(values: dict[str, float]) -> str:
    return " / ".join(f"{k} {values[k]:.4f}" for k in TEST_KEYS)


if __name__ == "__main__":
    main()

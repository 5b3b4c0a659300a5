"""Does a selective state-space model (Mamba4Rec) match attention (SASRec) at linear cost?

Claims tested (Liu et al. 2024, Mamba4Rec; Obozov et al. 2024):

1. *Quality*: Mamba4Rec matches or beats SASRec on next-item ranking. Protocol: MovieLens-100K,
   leave-one-out split, full ranking over all items (seen items not filtered), test figures at
   the best-validation checkpoint; ``configs/ml100k_sasrec.yaml`` against
   ``configs/ml100k_mamba4rec.yaml``, seeds 0, 1, 2 (mean and standard deviation).
2. *Training cost is linear in L*: the real jitted train step (AdamW included) of both
   backbones at equal width (d_model 64, 2 layers, full softmax over 1,682 items) on windows
   of L in {50, 200, 1024, 4096} with a fixed 8,192 trained positions per step (B = 8192 / L,
   no padding): seconds per 1,000 trained tokens and XLA's planned peak memory of the step,
   as ratios measured in one process.
3. *O(1) serving*: the time to score the next item after one new event — Mamba's recurrent
   step (state carried) against re-encoding the whole history with Mamba or with the
   transformer — at history lengths 50 to 1,000 (batch of one user, jitted, median of
   repeats).

    python experiments/ssm_vs_attention.py [--quick] [--out DIR] [--seeds 0 1 2]
                                           [--parts quality speed serving]

Writes ``results.json``, ``ssm_vs_attention.png`` / ``.svg`` and ``table.md`` into ``--out``
(default ``experiments_out/ssm_vs_attention``). ``--quick`` runs every part on a tiny
synthetic log with tiny shapes in about a minute (what the test runs); its numbers mean
nothing. The conclusions are in docs/experiments/ssm_vs_attention.md.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from common import (
    REPO,
    TINY_LOG,
    experiment_parser,
    machine,
    mean_std,
    plt,
    save_figure,
    seeds_of,
    write_outputs,
)
from flax import nnx

from srt_jax.config import RunConfig, load_config, replace
from srt_jax.data.sampler import Batch
from srt_jax.models.factory import build_model
from srt_jax.progress import progress_bar
from srt_jax.train.loop import train
from srt_jax.train.mesh import data_mesh
from srt_jax.train.step import TrainStep

BACKBONES = ("transformer", "mamba")
CONFIGS = {"transformer": "configs/ml100k_sasrec.yaml", "mamba": "configs/ml100k_mamba4rec.yaml"}
METRICS = ("ndcg@10", "hr@10", "mrr@10")
N_ITEMS = 1682  # MovieLens-100K's catalog, for the speed and serving shapes
QUICK_DATA = [
    "data.dataset=synthetic",
    *TINY_LOG,
    "model.d_model=16",
    "train.batch_size=16",
    "train.epochs=null",
    "train.tokens=1500",
    "train.eval_every_tokens=750",
]


# --------------------------------------------------------------------------- 1. quality


def quality(out: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    """Test metrics at the best-validation checkpoint, per backbone and seed."""
    result: dict[str, Any] = {"protocol": None, "runs": {}, "summary": {}}
    for backbone in BACKBONES:
        base = load_config(REPO / CONFIGS[backbone], QUICK_DATA if quick else ())
        if quick and backbone == "transformer":
            base = replace(base, ["model.n_heads=2"])
        runs = []
        for seed in seeds:
            config = replace(base, [f"train.seed={seed}"])
            summary = train(config, out / "runs" / f"{backbone}-seed{seed}", progress=not quick)
            runs.append(
                {
                    "seed": seed,
                    "params_total": summary["params_total"],
                    "loss": summary["eval"]["loss"],
                    **{m: summary["eval"][m] for m in METRICS},
                    "loop_s": summary["loop_s"],
                    "tokens_per_s": summary["tokens_per_s"],
                }
            )
            result["protocol"] = summary["protocol"]
        result["runs"][backbone] = runs
        result["summary"][backbone] = {
            key: mean_std([r[key] for r in runs])
            for key in ("loss", *METRICS, "loop_s", "tokens_per_s")
        }
        result["summary"][backbone]["params_total"] = runs[0]["params_total"]
    return result


# --------------------------------------------------------------------------- 2. speed


def speed_config(backbone: str, max_len: int, batch_size: int, d_model: int) -> RunConfig:
    """The speed study's shape: equal width and depth, full softmax, no dropout change."""
    model = ["model.n_heads=2"] if backbone == "transformer" else ["model.backbone=mamba"]
    return load_config(
        None,
        [
            *model,
            f"model.d_model={d_model}",
            "model.n_layers=2",
            f"data.max_len={max_len}",
            f"train.batch_size={batch_size}",
        ],
    )


def time_train_step(config: RunConfig, n_items: int, steps: int) -> dict[str, float]:
    """Seconds per step (best of ``steps`` after a warm-up) and XLA's memory plan."""
    batch_size, max_len = config.train.batch_size, config.data.max_len
    model = build_model(config.model, n_items, max_len, nnx.Rngs(0))
    step = TrainStep(model, config.train, total_tokens=10**9, mesh=data_mesh(1))
    compile_s = step.compile(batch_size, max_len)
    items = np.random.default_rng(1).integers(1, n_items + 1, (batch_size, max_len + 1))
    windows = Batch(
        inputs=items[:, :-1].astype(np.int32),
        targets=items[:, 1:].astype(np.int32),
        mask=np.ones((batch_size, max_len), bool),
        positions=np.broadcast_to(np.arange(max_len, dtype=np.int32), (batch_size, max_len)),
        user=np.arange(batch_size),
    )
    batch = step.put_batch(windows)
    state = step.init_state()
    best = float("inf")
    for k in range(steps + 1):
        started = time.perf_counter()
        state, metrics = step(state, batch, k, k * batch_size * max_len)
        jax.block_until_ready(metrics)
        if k > 0:  # the first call may still allocate
            best = min(best, time.perf_counter() - started)
    memory = step.memory_bytes()
    return {
        "step_s": best,
        "s_per_1k_tokens": best / (batch_size * max_len) * 1000,
        "compile_s": compile_s,
        "peak_mib": memory["peak"] / 2**20,
        "temporaries_mib": memory["temporaries"] / 2**20,
    }


def speed(lengths: list[int], tokens_per_step: int, d_model: int, n_items: int) -> dict:
    """Step time and memory of both backbones at each window length, and their ratios."""
    rows = []
    bar = progress_bar(len(lengths) * len(BACKBONES), "train-step speed", unit="shape")
    for max_len in lengths:
        row: dict[str, Any] = {"L": max_len, "B": max(1, tokens_per_step // max_len)}
        for backbone in BACKBONES:
            config = speed_config(backbone, max_len, row["B"], d_model)
            row[backbone] = time_train_step(config, n_items, steps=3)
            bar.update(1)
        t, m = row["transformer"], row["mamba"]
        row["speedup_mamba"] = t["s_per_1k_tokens"] / m["s_per_1k_tokens"]
        row["memory_ratio_mamba"] = m["peak_mib"] / t["peak_mib"]
        rows.append(row)
    bar.close()
    return {"d_model": d_model, "n_layers": 2, "n_items": n_items, "rows": rows}


# --------------------------------------------------------------------------- 3. serving


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``fn()`` (waited for) over ``repeats`` calls after a warm-up."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def scorers(model: nnx.Module) -> tuple[Callable, Callable, nnx.State]:
    """``(encode, step, state)``: jitted pure functions of the model's state — re-encode a
    window and score the next item from its last position (``B x V``), and (Mamba) one
    recurrent step then the scores — split once so a call pays no module traversal."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def encode(state: nnx.State, items_BxL: jax.Array) -> jax.Array:
        net = nnx.merge(graphdef, state)
        return net(items_BxL)[:, -1] @ net.item_table().T

    @jax.jit
    def step(state: nnx.State, cache: Any, items_B: jax.Array) -> tuple[Any, jax.Array]:
        net = nnx.merge(graphdef, state)
        cache, hidden_BxD = net.step(cache, items_B)
        return cache, hidden_BxD @ net.item_table().T

    return encode, step, state


def serving_row(n: int, d_model: int, n_items: int, repeats: int) -> dict[str, float]:
    """Latencies of the three ways to score the next item after the n-th event."""
    history = jax.random.randint(jax.random.key(n), (1, n), 1, n_items + 1)
    models = {}
    for backbone in BACKBONES:
        config = speed_config(backbone, n, 1, d_model)
        models[backbone] = build_model(config.model, n_items, n, nnx.Rngs(0))
        models[backbone].eval()
    cache = models["mamba"].init_cache(1)
    encode_mamba, step_mamba, mamba = scorers(models["mamba"])
    encode_transformer, _, transformer = scorers(models["transformer"])
    for t in range(n - 1):  # the state after the first n - 1 events
        cache, _ = step_mamba(mamba, cache, history[:, t])
    last_B = history[:, -1]
    row = {
        "history": n,
        "mamba_recurrent_s": median_seconds(lambda: step_mamba(mamba, cache, last_B), repeats),
        "mamba_reencode_s": median_seconds(lambda: encode_mamba(mamba, history), repeats),
        "transformer_reencode_s": median_seconds(
            lambda: encode_transformer(transformer, history), repeats
        ),
    }
    row["speedup_vs_mamba_reencode"] = row["mamba_reencode_s"] / row["mamba_recurrent_s"]
    row["speedup_vs_transformer_reencode"] = (
        row["transformer_reencode_s"] / row["mamba_recurrent_s"]
    )
    return row


def serving(history_lengths: list[int], d_model: int, n_items: int, repeats: int) -> dict:
    """Seconds to get the next-item scores after one new event, three ways."""
    bar = progress_bar(len(history_lengths), "serving latency", unit="length")
    rows = []
    for n in history_lengths:
        rows.append(serving_row(n, d_model, n_items, repeats))
        bar.update(1)
    bar.close()
    return {"d_model": d_model, "n_layers": 2, "n_items": n_items, "rows": rows}


# --------------------------------------------------------------------------- outputs


def figure(results: dict, out: Path) -> list[Path]:
    """Step time and memory against L, and serving latency against history length."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {"transformer": "tab:blue", "mamba": "tab:orange"}
    if "speed" in results:
        rows = results["speed"]["rows"]
        lengths = [r["L"] for r in rows]
        panels = (
            (axes[0], "s_per_1k_tokens", "train-step seconds per 1k tokens", "training cost"),
            (axes[1], "peak_mib", "planned peak memory of the step (MiB)", "training memory"),
        )
        for ax, key, ylabel, title in panels:
            for backbone in BACKBONES:
                values = [r[backbone][key] for r in rows]
                ax.plot(lengths, values, "o-", color=colours[backbone], label=backbone)
            ax.set(xscale="log", yscale="log", xlabel="window length L", ylabel=ylabel, title=title)
    if "serving" in results:
        rows = results["serving"]["rows"]
        lengths = [r["history"] for r in rows]
        for key, label, colour in (
            ("mamba_recurrent_s", "Mamba recurrent step", "tab:orange"),
            ("mamba_reencode_s", "Mamba re-encode", "tab:red"),
            ("transformer_reencode_s", "transformer re-encode", "tab:blue"),
        ):
            axes[2].plot(lengths, [r[key] * 1e3 for r in rows], "o-", color=colour, label=label)
        axes[2].set(
            xscale="log",
            yscale="log",
            xlabel="history length",
            ylabel="ms per new event (batch of 1)",
            title="serving",
        )
    for ax in axes:
        if ax.has_data():
            ax.legend()
            ax.grid(True, which="both", alpha=0.3)
        else:
            ax.set_axis_off()
    fig.suptitle("SSM (Mamba4Rec) vs attention (SASRec-style transformer)")
    fig.tight_layout()
    return save_figure(fig, out, "ssm_vs_attention")


def table(results: dict) -> str:
    """The results as markdown tables."""
    lines = []
    if "quality" in results:
        seeds = [r["seed"] for r in results["quality"]["runs"]["transformer"]]
        lines += [
            f"Quality (test at best validation, seeds {seeds}; mean ± std):",
            "",
            "| backbone | params | held-out loss | NDCG@10 | HR@10 | MRR@10 | train tokens/s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for backbone, s in results["quality"]["summary"].items():
            cells = [f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in ("loss", *METRICS)]
            lines.append(
                f"| {backbone} | {s['params_total']:,} | {' | '.join(cells)} | "
                f"{s['tokens_per_s']['mean']:,.0f} |"
            )
        lines.append("")
    if "speed" in results:
        lines += [
            "Training step (AdamW included), equal width, "
            f"{results['speed']['rows'][0]['B'] * results['speed']['rows'][0]['L']:,} "
            "trained tokens per step:",
            "",
            "| L | B | transformer s/1k tok | Mamba s/1k tok | Mamba speed-up | "
            "transformer peak MiB | Mamba peak MiB |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["speed"]["rows"]:
            t, m = r["transformer"], r["mamba"]
            lines.append(
                f"| {r['L']} | {r['B']} | {t['s_per_1k_tokens']:.4f} | {m['s_per_1k_tokens']:.4f}"
                f" | {r['speedup_mamba']:.2f}x | {t['peak_mib']:.0f} | {m['peak_mib']:.0f} |"
            )
        lines.append("")
    if "serving" in results:
        lines += [
            "Serving, ms per new event (one user):",
            "",
            "| history | Mamba recurrent | Mamba re-encode | transformer re-encode | "
            "recurrent speed-up vs re-encode (Mamba / transformer) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in results["serving"]["rows"]:
            lines.append(
                f"| {r['history']} | {r['mamba_recurrent_s'] * 1e3:.3f} | "
                f"{r['mamba_reencode_s'] * 1e3:.3f} | {r['transformer_reencode_s'] * 1e3:.3f} | "
                f"{r['speedup_vs_mamba_reencode']:.1f}x / "
                f"{r['speedup_vs_transformer_reencode']:.1f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = experiment_parser(__doc__, "ssm_vs_attention")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("quality", "speed", "serving"),
        default=["quality", "speed", "serving"],
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = seeds_of(args)
    results: dict[str, Any] = {
        "claim": "Mamba4Rec matches SASRec's quality at linear training cost and O(1) serving",
        "quick": args.quick,
        "machine": machine(),
    }
    results_path = args.out / "results.json"
    if results_path.is_file():  # keep the parts not rerun this time
        results = {**json.loads(results_path.read_text()), **results}
    if "quality" in args.parts:
        results["quality"] = quality(args.out, seeds, args.quick)
    if "speed" in args.parts:
        lengths = [16] if args.quick else [50, 200, 1024, 4096]
        tokens = 256 if args.quick else 8192
        results["speed"] = speed(lengths, tokens, 16 if args.quick else 64, N_ITEMS)
    if "serving" in args.parts:
        lengths = [16] if args.quick else [50, 200, 1000]
        results["serving"] = serving(
            lengths, 16 if args.quick else 64, N_ITEMS, 5 if args.quick else 30
        )
    write_outputs(results, args.out, figure, table)


if __name__ == "__main__":
    main()

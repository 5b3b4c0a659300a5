"""Serving latency per new event: a Mamba run (recurrent step) against a transformer run
(re-encoding the last max_len events), both reading histories of ``--history`` events.

Trains one tiny run of each backbone (``srt-jax train`` with a token budget of a few steps;
latency does not depend on how well a model is trained) on a synthetic store of long
histories with ``data.max_len = --history``, then, through :class:`srt_jax.serve.Recommender`
as ``srt-jax recommend --then`` uses it: encodes a user's last ``--history`` events once,
and feeds ``--events`` new events one at a time, timing ``observe`` (the new hidden state)
and ``top_k`` (k = 10 over the catalog, seen items filtered) per event after a warm-up.
Runs are kept in ``--out`` and reused on a second call.

    python benchmarks/bench_serve.py [--history 1000] [--events 200] [--d-model 64]
        [--layers 2] [--items 2000] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from srt_jax.config import load_config
from srt_jax.serve import Recommender
from srt_jax.train.loop import train

BACKBONES = {"transformer": ["model.n_heads=2"], "mamba": ["model.backbone=mamba"]}


def train_run(out: Path, backbone: str, args: argparse.Namespace) -> Path:
    """The tiny run of ``backbone`` (trained once; a done run is returned as it is)."""
    config = load_config(
        None,
        [
            "data.dataset=synthetic",
            f"data.cache_dir={out / 'cache'}",
            "data.synthetic.users=40",
            f"data.synthetic.items={args.items}",
            f"data.synthetic.mean_length={int(args.history * 1.5)}",
            f"data.max_len={args.history}",
            f"model.d_model={args.d_model}",
            f"model.n_layers={args.layers}",
            "model.dropout=0.0",
            "train.batch_size=2",
            "train.epochs=null",
            f"train.tokens={4 * args.history}",
            "eval.batch_users=8",
            *BACKBONES[backbone],
        ],
    )
    run_dir = out / backbone
    started = time.perf_counter()
    summary = train(config, run_dir, progress=False)
    print(f"{backbone}: run {summary['run_id']} ready in {time.perf_counter() - started:.1f} s")
    return run_dir


def ms(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return 1000 * (time.perf_counter() - start)


def measure(run_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds: encode (first call, with compilation, then steady), and per event the
    median and 90th percentile of observe, top-k and both."""
    rec = Recommender.from_run_dir(run_dir)
    lengths = np.diff(rec.store.offsets)
    user = int(np.argmax(lengths))
    history, _ = rec.user_history(rec.users.original([user])[0])
    if len(history) < args.history:
        raise SystemExit(f"the longest training history has {len(history)} < {args.history}")
    history = history[-args.history :]
    first = ms(lambda: rec.encode(history).hidden)
    encode = statistics.median(ms(lambda: rec.encode(history).hidden) for _ in range(5))
    rng = np.random.default_rng(0)
    state = rec.encode(history)
    observe, top, both = [], [], []
    for n in range(args.warmup + args.events):
        item = int(rng.integers(1, rec.n_items + 1))
        t0 = time.perf_counter()
        state = rec.observe(state, item)
        jax.block_until_ready(state.hidden)
        t1 = time.perf_counter()
        rec.top_k(state, 10, exclude=state.seen)
        t2 = time.perf_counter()
        if n >= args.warmup:
            observe.append(1000 * (t1 - t0))
            top.append(1000 * (t2 - t1))
            both.append(1000 * (t2 - t0))

    def p90(values: list[float]) -> float:
        return float(np.percentile(values, 90))

    return {
        "encode_first": first,
        "encode": encode,
        "observe": statistics.median(observe),
        "observe_p90": p90(observe),
        "top_k": statistics.median(top),
        "event": statistics.median(both),
        "event_p90": p90(both),
        "context": state.context,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=1000, help="events read (= max_len)")
    parser.add_argument("--events", type=int, default=200, help="new events timed")
    parser.add_argument("--warmup", type=int, default=5, help="new events not timed")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--items", type=int, default=2000, help="catalog size")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bench_serve",
        help="where the two runs are trained (default: bench_serve in the temporary directory)",
    )
    args = parser.parse_args()
    results = {b: measure(train_run(args.out, b, args), args) for b in BACKBONES}
    print(
        f"\nd_model {args.d_model}, {args.layers} layers, {args.items} items, histories of "
        f"{args.history} events (max_len {args.history}); ms, {args.events} events, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}"
    )
    print(
        "| backbone | per event (median / p90) | observe (median / p90) | top-10 | "
        "encode 1st call (compile) | encode | context after |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['event']:.2f} / {r['event_p90']:.2f} | {r['observe']:.2f} / "
            f"{r['observe_p90']:.2f} | {r['top_k']:.2f} | {r['encode_first']:.0f} | "
            f"{r['encode']:.2f} | {r['context']} |"
        )


if __name__ == "__main__":
    main()

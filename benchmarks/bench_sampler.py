"""Window sampler throughput (windows/s, target tokens/s) on one core, plus the synthetic
generator's rate, each printed beside a reference measured in the same process.

Datasets: MovieLens-100K (a store given by ``--store``, else built from the ratings file
given by ``--ratings`` or found under ``~/.cache/srt-jax``: the RecBole ``ml-100k.inter`` or
GroupLens ``u.data``) and a synthetic store of ``--synthetic-interactions`` (default 10M)
made with ``srt_jax.data.synthetic``. Training segments are a leave-one-out split with 10%
held-out users. For each dataset, window length L and mode, the sampler builds batches for
``--seconds`` (no prefetch thread, so the figure is the cost of building them), and the
reference is numpy's rate of gathering the same number of int32 elements (B x (L + 1)) at
uniformly random positions of the same memory-mapped ``items``: ``ratio`` > 1 means the
sampler delivers window elements faster than that random gather.

    python benchmarks/bench_sampler.py [--store S | --ratings FILE] [--seconds 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from srt_jax.data.sampler import WindowSampler  # noqa: E402
from srt_jax.data.splits import make_split  # noqa: E402
from srt_jax.data.store import SequenceStore, write_store  # noqa: E402
from srt_jax.data.synthetic import synthesize_store  # noqa: E402

CACHE = Path(os.environ.get("SRT_JAX_CACHE", Path.home() / ".cache" / "srt-jax"))
RATINGS_NAMES = ("ml-100k.inter", "u.data")


def pin_one_core() -> int:
    """Restrict this process to one CPU (the first it may use); return its number."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def find_ratings() -> Path | None:
    for name in RATINGS_NAMES:
        found = sorted(CACHE.rglob(name)) if CACHE.is_dir() else []
        if found:
            return found[0]
    return None


def movielens_store(ratings: Path, out: Path) -> SequenceStore:
    """A store from a MovieLens-100K ratings file (RecBole .inter with header, or u.data)."""
    with open(ratings) as f:
        header = f.readline().startswith("user_id")
    table = np.loadtxt(ratings, delimiter="\t", skiprows=int(header), dtype=np.float64)
    user_ids, user = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    item_ids, item = np.unique(table[:, 1].astype(np.int64), return_inverse=True)
    time_s = table[:, 3].astype(np.int64)
    order = np.lexsort((time_s, user))  # stable: equal times keep file order
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=len(user_ids)))])
    return write_store(
        out,
        item[order] + 1,
        time_s[order],
        offsets,
        np.concatenate([[-1], item_ids]),
        user_ids,
        {"source": str(ratings)},
        overwrite=True,
    )


def reference_gather_rate(items: np.ndarray, n_elements: int, seconds: float) -> float:
    """int32 elements/s of numpy gathering ``n_elements`` random positions of ``items``."""
    rng = np.random.default_rng(0)
    indices = [rng.integers(0, len(items), n_elements) for _ in range(8)]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        items[indices[count % 8]]
        count += 1
    return count * n_elements / (time.perf_counter() - start)


def sampler_rate(sampler: WindowSampler, seconds: float) -> tuple[float, float]:
    """(windows/s, counted target tokens/s) of building batches 0, 1, ..."""
    step, tokens, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tokens += sampler.batch(step).n_targets
        step += 1
    elapsed = time.perf_counter() - start
    return step * sampler.batch_size / elapsed, tokens / elapsed


def iterator_rate(sampler: WindowSampler, seconds: float) -> float:
    """windows/s through iter_batches (prefetch thread included)."""
    count, start = 0, time.perf_counter()
    for _ in sampler.iter_batches():
        count += 1
        if time.perf_counter() - start > seconds:
            break
    return count * sampler.batch_size / (time.perf_counter() - start)


def bench_store(name: str, store: SequenceStore, args: argparse.Namespace) -> None:
    split = make_split(store, heldout_fraction=0.1, seed=0)
    print(
        f"\n{name}: {store.n_users:,} users, {store.n_interactions:,} interactions, "
        f"{len(split.train):,} training segments"
    )
    print(
        f"{'L':>4} {'mode':>16} {'windows/s':>12} {'tokens/s':>12} {'ref elem/s':>12} {'ratio':>6}"
    )
    for max_len in args.lengths:
        ref = reference_gather_rate(store.items, args.batch_size * (max_len + 1), args.seconds)
        for mode in args.modes:
            sampler = WindowSampler(
                store.items,
                split.train,
                batch_size=args.batch_size,
                max_len=max_len,
                mode=mode,
                seed=0,
                prefetch=0,
            )
            windows, tokens = sampler_rate(sampler, args.seconds)
            ratio = windows * (max_len + 1) / ref
            print(
                f"{max_len:>4} {mode:>16} {windows:>12,.0f} {tokens:>12,.0f} "
                f"{ref:>12,.0f} {ratio:>6.2f}"
            )
        threaded = WindowSampler(
            store.items,
            split.train,
            batch_size=args.batch_size,
            max_len=max_len,
            mode="sliding",
            seed=0,
            prefetch=2,
        )
        windows = iterator_rate(threaded, args.seconds)
        print(
            f"{max_len:>4} {'sliding+prefetch':>16} {windows:>12,.0f} {'':>12} "
            f"{ref:>12,.0f} {windows * (max_len + 1) / ref:>6.2f}"
        )


def bench_synthetic(out: Path, interactions: int) -> SequenceStore:
    mean_length = 50.0
    rng_rate = 6 * 4_000_000 / _time(lambda: np.random.default_rng(0).random((6, 4_000_000)))
    start = time.perf_counter()
    store = synthesize_store(
        out,
        users=int(interactions / mean_length),
        items=100_000,
        mean_length=mean_length,
        seed=0,
        overwrite=True,
    )
    elapsed = time.perf_counter() - start
    rate = store.n_interactions / elapsed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"synthetic generator: {store.n_interactions:,} interactions in {elapsed:.1f} s = "
        f"{rate:,.0f} interactions/s ({rng_rate / rate:.1f} uniform draws' time each; "
        f"numpy draws {rng_rate:,.0f} uniforms/s here); peak RSS {peak:,.0f} MiB; "
        f"oracle loss {store.meta['oracle_loss']:.4f} nats"
    )
    return store


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="a MovieLens-100K sequence store")
    parser.add_argument("--ratings", type=Path, help="ml-100k.inter or u.data")
    parser.add_argument("--work", type=Path, help="where to write stores (default: a temp dir)")
    parser.add_argument("--synthetic-interactions", type=float, default=1e7)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument(
        "--modes", nargs="+", default=["recent", "sliding", "stride", "recency_weighted"]
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    cpu = pin_one_core()
    print(f"pinned to CPU {cpu}; batch size {args.batch_size}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    ratings = args.ratings or find_ratings()
    if args.store is not None:
        bench_store("MovieLens-100K", SequenceStore(args.store), args)
    elif ratings is not None:
        bench_store("MovieLens-100K", movielens_store(ratings, work / "ml100k"), args)
    else:
        print(f"MovieLens-100K skipped: no --store/--ratings and none under {CACHE}")
    if args.synthetic_interactions > 0:
        store = bench_synthetic(work / "synthetic", int(args.synthetic_interactions))
        bench_store("synthetic", store, args)


if __name__ == "__main__":
    main()

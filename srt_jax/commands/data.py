"""``srt-jax data``: get public logs, prepare sequence stores, describe and export them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import TypeVar

from srt_jax.commands.output import finish
from srt_jax.data.download import DATASETS, SOURCES, get_dataset
from srt_jax.data.info import format_stats, store_stats
from srt_jax.data.ingest import DUPLICATE_POLICIES, FILTER_ORDER, Filters, prepare_store
from srt_jax.data.readers import FORMATS, ReadOptions
from srt_jax.data.store import SequenceStore
from srt_jax.data.synthetic import GeneratorOptions, synthesize_store

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    data = subparsers.add_parser("data", help="get, prepare, describe and export interaction data")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _register_get(commands)
    _register_prepare(commands)
    _register_info(commands)
    _register_synth(commands)
    _register_export_tfds(commands)


def _register_get(commands: argparse._SubParsersAction) -> None:
    get = commands.add_parser(
        "get",
        help="download a public dataset into the cache and print its ratings file",
        description="Fetch a dataset (checksum-verified, cached) and print the path of its "
        "ratings file. movielens-100k: from GroupLens where reachable, else from "
        "the RecBole 1.2.1 wheel on PyPI (needs only the package registry).",
    )
    get.add_argument("dataset", help=f"one of: {', '.join(DATASETS)}")
    get.add_argument(
        "--cache-dir", help="cache directory (default $SRT_JAX_CACHE or ~/.cache/srt-jax)"
    )
    get.add_argument(
        "--source",
        default="auto",
        help=f"where to fetch from: {', '.join(SOURCES)} (default auto: cache, "
        f"then GroupLens, then PyPI)",
    )
    get.set_defaults(handler=run_get)


def _register_prepare(commands: argparse._SubParsersAction) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="turn interaction logs into a sequence store",
        description="Read interaction logs, encode ids, filter, sort each user's history by "
        "time (ties keep file order) and write a sequence store atomically. "
        "Filters are off unless asked for; they apply in the order "
        f"{', '.join(FILTER_ORDER)}.",
    )
    prepare.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="input file(s) of one format (for tfds: a dataset name or directory)",
    )
    prepare.add_argument(
        "--format", required=True, dest="fmt", help=f"input format: {', '.join(FORMATS)}"
    )
    prepare.add_argument("--out", required=True, help="store directory to create")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing store")
    prepare.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows and report how many and the first ones (default: the "
        "first malformed row is an error naming its file and line)",
    )
    columns = prepare.add_argument_group("columns (csv, parquet; overrides for recbole, tfds)")
    columns.add_argument("--user-col")
    columns.add_argument("--item-col")
    columns.add_argument("--time-col")
    columns.add_argument("--rating-col")
    columns.add_argument("--sep", help="csv field separator (default ','; '\\t' for tab)")
    columns.add_argument("--tfds-split", default="train")
    columns.add_argument("--tfds-data-dir", help="TFDS data directory to find a dataset name")
    filters = prepare.add_argument_group("filters (all off by default)")
    filters.add_argument("--min-rating", type=float, help="keep rows with rating >= this")
    filters.add_argument(
        "--duplicates",
        default="keep",
        help=f"rows with equal (user, item, time): {', '.join(DUPLICATE_POLICIES)} (default keep)",
    )
    filters.add_argument(
        "--min-user-interactions",
        type=int,
        default=0,
        help="k-core: least interactions per user (iterated to a fixed point)",
    )
    filters.add_argument(
        "--min-item-interactions", type=int, default=0, help="k-core: least interactions per item"
    )
    filters.add_argument(
        "--max-users",
        type=int,
        help="keep a random sample of this many users (applied last; nested "
        "across sizes for one seed)",
    )
    filters.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    prepare.set_defaults(handler=run_prepare)


def _register_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="statistics of a sequence store")
    info.add_argument("store", help="store directory")
    info.set_defaults(handler=run_info)


def _register_synth(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser(
        "synth",
        help="generate a synthetic interaction log with a known loss floor",
        description="Write a synthetic sequence store (Zipf popularity, drifting interests, "
        "item-to-item transitions, a long-term preference seen mainly in older history). "
        "meta.json records the oracle per-token loss: the floor a fitted E is checked against.",
    )
    synth.add_argument("--out", required=True, help="store directory to create")
    synth.add_argument("--users", type=int, required=True, help="number of users")
    synth.add_argument("--items", type=int, required=True, help="catalog size")
    synth.add_argument("--mean-length", type=float, required=True, help="mean history length")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="replace an existing store")
    options = synth.add_argument_group(
        "generator options (defaults in srt_jax/data/synthetic/options.py)"
    )
    for field in fields(GeneratorOptions):
        kind = int if "int" in str(field.type) else float
        options.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None)
    synth.set_defaults(handler=run_synth)


def _register_export_tfds(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export-tfds",
        help="expose a store as a TFDS dataset (array_record)",
        description="Write the store as TFDS dataset srt_store (one example per user: user, "
        "user_id, items, timestamps) under --out, readable with "
        "tfds.data_source / grain without TensorFlow; prints its directory.",
    )
    export.add_argument("store", help="store directory")
    export.add_argument("--out", required=True, help="TFDS data directory")
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(handler=run_export_tfds)


def run_get(args: argparse.Namespace) -> int:
    fetched = get_dataset(args.dataset, args.cache_dir, args.source)
    origin = "cached" if fetched.cached else "downloaded and verified"
    if not args.quiet:
        print(
            f"{args.dataset}: {origin}; prepare it with: srt-jax data prepare {fetched.path} "
            f"--format {fetched.format} --out STORE",
            file=sys.stderr,
        )
    summary = {
        "dataset": args.dataset,
        "path": str(fetched.path),
        "format": fetched.format,
        "cached": fetched.cached,
    }
    finish(args, summary, str(fetched.path))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    read_options = _from_args(ReadOptions, args)
    filters = _from_args(Filters, args)
    result = prepare_store(
        args.inputs,
        args.fmt,
        args.out,
        read_options=read_options,
        filters=filters,
        skip_bad_rows=args.skip_bad_rows,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    store = result.store
    bad = result.bad_rows
    if bad.count:  # always said, --quiet or not: rows were left out
        reasons = ", ".join(f"{n} {reason}" for reason, n in bad.by_reason.items())
        print(f"skipped {bad.count} bad rows ({reasons}); first ones:", file=sys.stderr)
        for example in bad.examples:
            print(f"  {example}", file=sys.stderr)
    removed = {name: n for name, n in result.removed.items() if n}
    summary = {
        "store": str(store.path),
        "users": store.n_users,
        "items": store.n_items,
        "interactions": store.n_interactions,
        "rows_read": result.rows_read,
        "bad_rows": dict(bad.by_reason),
        "removed": removed,
        "seconds": result.seconds,
    }
    text = (
        f"wrote {store.path}: {store.n_users:,} users, {store.n_items:,} items, "
        f"{store.n_interactions:,} interactions from {result.rows_read:,} rows read"
        + (f" (removed: {removed})" if removed else "")
        + f" in {result.seconds:.1f} s"
    )
    finish(args, summary, text)
    return 0


def _from_args(cls: type[T], args: argparse.Namespace) -> T:
    """A ``cls`` dataclass from the parsed arguments named like its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def run_info(args: argparse.Namespace) -> int:
    stats = store_stats(SequenceStore(args.store))
    finish(args, stats, format_stats(stats))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    options = {
        field.name: getattr(args, field.name)
        for field in fields(GeneratorOptions)
        if getattr(args, field.name) is not None
    }
    store = synthesize_store(
        args.out,
        users=args.users,
        items=args.items,
        mean_length=args.mean_length,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        **options,
    )
    summary = {
        "store": str(store.path),
        "users": store.n_users,
        "items": store.n_items,
        "interactions": store.n_interactions,
        "oracle_loss": store.meta["oracle_loss"],
    }
    text = (
        f"wrote {store.path}: {store.n_users:,} users, {store.n_items:,} items, "
        f"{store.n_interactions:,} interactions; oracle loss "
        f"{store.meta['oracle_loss']:.4f} nats/target"
    )
    finish(args, summary, text)
    return 0


def run_export_tfds(args: argparse.Namespace) -> int:
    from srt_jax.data.tfds_builder import export_store  # imports tensorflow_datasets

    written = export_store(args.store, args.out, overwrite=args.overwrite)
    finish(args, {"store": args.store, "tfds_dir": str(written)}, str(written))
    return 0

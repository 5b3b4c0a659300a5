"""``srt-jax data``: get public logs, prepare sequence stores, describe and export them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import TypeVar

from srt_jax.commands.output import finish
from srt_jax.data.download import DATASETS, SOURCES, get_dataset, get_item_features
from srt_jax.data.info import format_stats, store_stats
from srt_jax.data.ingest import (
    DUPLICATE_POLICIES,
    FILTER_ORDER,
    FeatureInput,
    Filters,
    prepare_store,
)
from srt_jax.data.readers import (
    FEATURE_FORMATS,
    FORMATS,
    BadRows,
    FeatureColumn,
    ReadOptions,
)
from srt_jax.data.store import SequenceStore
from srt_jax.data.subsets import items_with_tokens, subset_store
from srt_jax.data.synthetic import GeneratorOptions, synthesize_store
from srt_jax.errors import ConfigError

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    data = subparsers.add_parser("data", help="get, prepare, describe and export interaction data")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _register_get(commands)
    _register_prepare(commands)
    _register_info(commands)
    _register_synth(commands)
    _register_subset(commands)
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
    get.add_argument(
        "--item-features",
        action="store_true",
        help="fetch and print the item features file instead (movielens-100k: the RecBole "
        "wheel's ml-100k.item, with title, release year and genres)",
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
    features = prepare.add_argument_group(
        "item features (a side table of item attributes, stored as tokens per item)"
    )
    features.add_argument(
        "--item-features",
        metavar="FILE",
        help="item attributes: RecBole .item, Amazon meta_*.json(.gz), CSV or Parquet",
    )
    features.add_argument(
        "--features-format",
        help=f"format of --item-features: {', '.join(FEATURE_FORMATS)} (default: --format "
        "when it is one of these)",
    )
    features.add_argument(
        "--feature-column",
        action="append",
        metavar="COLUMN[:MODE[:SEP]]",
        help="an attribute column and how it becomes tokens: whole (default: the value is one "
        "token), words (lower-cased words), multi:SEP (split on SEP); repeat for several "
        "(required for csv and parquet; defaults: every column of a .item file, title, brand "
        "and categories of Amazon metadata)",
    )
    features.add_argument("--features-item-col", help="item id column of --item-features")
    features.add_argument(
        "--min-token-items",
        type=int,
        help="keep only the feature tokens at least this many items carry (default 1: all; "
        "2 drops the title words of a single item)",
    )
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


def _register_subset(commands: argparse._SubParsersAction) -> None:
    subset = commands.add_parser(
        "subset",
        help="a store restricted to items with (or without) feature tokens, and a user sample",
        description="Write a sub-store: the items that carry any --items-with token (or none "
        "of the --items-without tokens), each user's history restricted to them, users with "
        "fewer than --min-length such interactions dropped, then a seeded sample of "
        "--max-users. Items keep their original ids and features: the domains of a transfer "
        "study (e.g. --items-with 'class=Comedy' of MovieLens-100K).",
    )
    subset.add_argument("store", help="the parent store (with item features)")
    subset.add_argument("--out", required=True, help="store directory to create")
    choose = subset.add_mutually_exclusive_group(required=True)
    choose.add_argument("--items-with", nargs="+", metavar="TOKEN", help="e.g. class=Comedy")
    choose.add_argument("--items-without", nargs="+", metavar="TOKEN")
    subset.add_argument("--min-length", type=int, default=2, help="least interactions kept")
    subset.add_argument("--max-users", type=int, help="keep a seeded sample of this many users")
    subset.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    subset.add_argument("--overwrite", action="store_true", help="replace an existing store")
    subset.set_defaults(handler=run_subset)


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
    if args.item_features:
        fetched = get_item_features(args.dataset, args.cache_dir)
        hint = f"--item-features {fetched.path} --features-format {fetched.format}"
    else:
        fetched = get_dataset(args.dataset, args.cache_dir, args.source)
        hint = f"{fetched.path} --format {fetched.format} --out STORE"
    origin = "cached" if fetched.cached else "downloaded and verified"
    if not args.quiet:
        print(
            f"{args.dataset}: {origin}; use it with: srt-jax data prepare {hint}", file=sys.stderr
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
        item_features=_feature_input(args),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    store = result.store
    bad = result.bad_rows
    _say_skipped(bad, "bad rows")
    if result.feature_bad_rows is not None:
        _say_skipped(result.feature_bad_rows, "bad item-feature rows")
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
    if store.has_item_features:
        record = store.meta["item_features"]
        summary["item_features"] = {
            key: record[key]
            for key in ("vocab_size", "items_with_features", "items_without_features")
        } | {"rows_unmatched": record["rows_unmatched"]}
        summary["item_features"]["tokens_dropped"] = record["tokens_dropped"]
        text += (
            f"; item features: {record['vocab_size']:,} tokens"
            + (
                f" ({record['tokens_dropped']:,} rare ones dropped)"
                if record["tokens_dropped"]
                else ""
            )
            + f", {record['items_without_features']:,} items without features, "
            f"{record['rows_unmatched']:,} feature rows for items not in the log"
        )
    finish(args, summary, text)
    return 0


def _say_skipped(bad: BadRows, what: str) -> None:
    """Print how many rows were skipped and the first ones (always, --quiet or not: rows
    were left out)."""
    if bad.count:
        reasons = ", ".join(f"{n} {reason}" for reason, n in bad.by_reason.items())
        print(f"skipped {bad.count} {what} ({reasons}); first ones:", file=sys.stderr)
        for example in bad.examples:
            print(f"  {example}", file=sys.stderr)


def _feature_input(args: argparse.Namespace) -> FeatureInput | None:
    """The ``--item-features`` options as a FeatureInput (None without the option)."""
    if args.item_features is None:
        for option in ("features_format", "feature_column", "features_item_col", "min_token_items"):
            if getattr(args, option) is not None:
                raise ConfigError(
                    f"--{option.replace('_', '-')} needs --item-features FILE", key=option
                )
        return None
    fmt = args.features_format or (args.fmt if args.fmt in FEATURE_FORMATS else None)
    if fmt not in FEATURE_FORMATS:
        raise ConfigError(
            f"--features-format = {fmt!r} is invalid: expected one of {', '.join(FEATURE_FORMATS)}",
            key="--features-format",
        )
    columns = None
    if args.feature_column:
        columns = tuple(FeatureColumn.parse(text) for text in args.feature_column)
    min_items = 1 if args.min_token_items is None else args.min_token_items
    if min_items < 1:
        raise ConfigError(
            f"--min-token-items = {min_items} is invalid: expected an integer >= 1",
            key="--min-token-items",
        )
    return FeatureInput(args.item_features, fmt, columns, args.features_item_col, min_items)


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


def run_subset(args: argparse.Namespace) -> int:
    parent = SequenceStore(args.store)
    tokens = args.items_with or args.items_without
    chosen = items_with_tokens(parent, tokens)
    keep = chosen if args.items_with else ~chosen
    keep[0] = False
    rule = {"items_with" if args.items_with else "items_without": tokens}
    store = subset_store(
        parent,
        args.out,
        keep,
        max_users=args.max_users,
        seed=args.seed,
        min_length=args.min_length,
        overwrite=args.overwrite,
        meta=rule,
    )
    summary = {
        "store": str(store.path),
        "users": store.n_users,
        "items": store.n_items,
        "interactions": store.n_interactions,
        **rule,
    }
    text = (
        f"wrote {store.path}: {store.n_users:,} users, {store.n_items:,} items, "
        f"{store.n_interactions:,} interactions (of {parent.n_interactions:,} in {parent.path})"
    )
    finish(args, summary, text)
    return 0


def run_export_tfds(args: argparse.Namespace) -> int:
    from srt_jax.data.tfds_builder import export_store  # imports tensorflow_datasets

    written = export_store(args.store, args.out, overwrite=args.overwrite)
    finish(args, {"store": args.store, "tfds_dir": str(written)}, str(written))
    return 0

"""Fuzz ``data prepare`` with damaged and arbitrary inputs of every format.

Every input (``tests/fuzz_inputs.py``: near-valid rows of the format with random damage —
flipped, inserted or deleted bytes, NULs, a BOM, mixed line endings, wrong delimiters, huge
lines, truncation, truncated or corrupted gzip; Parquet tables with columns of the wrong
type, nulls, a missing or nested column, damaged bytes — or arbitrary bytes) must end as a valid
store or as a one-line error naming the file, with nothing left behind. Prints the outcomes
per format, the failures (any other exception or a broken promise, with the seed that
reproduces it) and the rate; exits 1 if there was any failure. TFDS inputs
(``tests/fuzz_tfds.py``: datasets built by TFDS with random features, types and values, a
file damaged in a third of them) are fuzzed when ``--formats`` names ``tfds``.

    python benchmarks/fuzz_readers.py [--inputs 10000] [--seed 0] [--formats csv,parquet]
        [--skip-bad-rows]
    python benchmarks/fuzz_readers.py --formats tfds --inputs 2000

Latest figures: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_inputs import FORMATS, check_outcome, check_prepared, make_input

from srt_jax.progress import progress_bar


def fuzz_one(fmt: str, seed: int, work: Path, skip_bad_rows: bool) -> str:
    """The outcome of fuzz input ``seed`` of ``fmt``, prepared in ``work``."""
    if fmt == "tfds":
        from fuzz_tfds import make_tfds_input  # imports TFDS: only when asked

        work.mkdir(parents=True)
        dataset, options = make_tfds_input(seed, work)
        return check_prepared(dataset, fmt, work, options, skip_bad_rows=skip_bad_rows)
    data, gzipped = make_input(fmt, seed)
    return check_outcome(fmt, data, gzipped, work, skip_bad_rows=skip_bad_rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs in all (10000)")
    parser.add_argument("--seed", type=int, default=0, help="first input seed (0)")
    parser.add_argument(
        "--formats",
        type=lambda text: tuple(text.split(",")),
        default=FORMATS,
        help=f"comma-separated, taken in turn (default {','.join(FORMATS)})",
    )
    parser.add_argument(
        "--skip-bad-rows", action="store_true", help="prepare in the lenient mode (skip rows)"
    )
    args = parser.parse_args()
    unknown = set(args.formats) - {*FORMATS, "tfds"}
    if unknown:
        allowed = ", ".join([*FORMATS, "tfds"])
        parser.error(f"unknown format(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
    outcomes: collections.Counter = collections.Counter()
    failures = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch, progress_bar(args.inputs, "inputs") as bar:
        for k in range(args.inputs):
            fmt, seed = args.formats[k % len(args.formats)], args.seed + k
            work = Path(scratch) / str(k)
            try:
                outcome = fuzz_one(fmt, seed, work, args.skip_bad_rows)
                outcomes[fmt, outcome] += 1
            except Exception as err:
                failures.append((fmt, seed, "".join(traceback.format_exception_only(err)).strip()))
            bar.update(1)
    seconds = time.perf_counter() - started
    for fmt in args.formats:
        stores, errors = outcomes[fmt, "store"], outcomes[fmt, "error"]
        print(f"{fmt:<10} stores {stores:>6}  clear errors {errors:>6}")
    rate = args.inputs / seconds
    print(f"{args.inputs} inputs in {seconds:.0f} s ({rate:.1f}/s); failures: {len(failures)}")
    for fmt, seed, what in failures[:20]:
        print(f"  {fmt} seed {seed}: {what}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

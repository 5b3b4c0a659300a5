"""``srt-jax advise``: the model size, data and expected quality for a compute budget, from a
fit that its data support (:mod:`srt_jax.scaling.advice`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srt_jax.commands.argtypes import positive_float
from srt_jax.commands.output import finish
from srt_jax.data.store import SequenceStore
from srt_jax.errors import ConfigError
from srt_jax.scaling.advice import advice_markdown, advise, check_advisable, read_fit
from srt_jax.scaling.report import write_staged
from srt_jax.sweep.ladders import LADDERS

SECONDS_PER_HOUR = 3600.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``advise`` command."""
    parser = subparsers.add_parser(
        "advise",
        help="N*, D*, expected loss and metrics for a compute budget, from a supported fit",
        description="Read a fit (srt-jax fit's output directory or its fit.json) and a "
        "budget, in FLOPs or in GPU-hours at a stated device rate; print and write "
        "(advice.json, advice.md) the compute-optimal parameters N* and target tokens D* with "
        "95% bootstrap intervals, the expected held-out loss and ranking metrics, how many "
        "epochs D* means over the data, and the ladder shape nearest N*. A fit that its "
        "data do not support is refused with the reasons (see the fit's grade).",
    )
    parser.add_argument("fit", metavar="FIT", help="fit directory or fit.json")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--compute", type=positive_float, help="budget in FLOPs")
    budget.add_argument("--gpu-hours", type=positive_float, help="budget in device-hours")
    parser.add_argument(
        "--device-flops",
        type=positive_float,
        help="peak FLOP/s of one device (with --gpu-hours), e.g. 9.89e14 for an H100's bf16",
    )
    parser.add_argument(
        "--utilization",
        type=positive_float,
        default=0.3,
        help="share of the peak a run achieves (model FLOPs utilisation; default 0.3)",
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--unique-tokens", type=positive_float, help="target tokens in one epoch")
    data.add_argument("--store", help="sequence store whose target tokens make one epoch")
    parser.add_argument(
        "--config", help="run config whose model the ladder reshapes (and whose data it uses)"
    )
    parser.add_argument(
        "--ladder", choices=sorted(LADDERS), help="shapes to choose from (needs --config)"
    )
    parser.add_argument("--out", help="output directory (default: the fit's directory)")
    parser.set_defaults(handler=run_advise)


def budget_flops(args: argparse.Namespace) -> float:
    """The budget in FLOPs: ``--compute``, or GPU-hours x device FLOP/s x utilisation."""
    if args.compute is not None:
        return args.compute
    if args.device_flops is None:
        raise ConfigError("--gpu-hours needs --device-flops (the device's peak FLOP/s)")
    if args.utilization > 1:
        raise ConfigError(f"--utilization {args.utilization:g} must be at most 1")
    return args.gpu_hours * SECONDS_PER_HOUR * args.device_flops * args.utilization


def epoch_tokens(store: SequenceStore) -> float:
    """Target tokens of one pass over every user's history (each item after the first)."""
    return float(store.n_interactions - store.n_users)


def ladder_shapes(config_path: str, ladder: str, params_kind: str) -> tuple[dict, SequenceStore]:
    """Shape label -> parameter count (of ``params_kind``) of each shape of ``ladder`` applied
    to the config's model, on the config's data; and that data's store."""
    from srt_jax.config import load_config  # with the model code: only for --ladder
    from srt_jax.data.sources import open_dataset
    from srt_jax.models.factory import shape_label
    from srt_jax.sweep.plan import param_counts

    base = load_config(config_path, [])
    store = open_dataset(base.data, progress=False)
    shapes = {}
    for shape in LADDERS[ladder]:
        config = load_config(config_path, [f"model.{key}={value}" for key, value in shape.items()])
        counts = param_counts(config.model, store, config.data.max_len)
        shapes[shape_label(config.model)] = float(
            counts.total if params_kind == "total" else counts.non_embedding
        )
    return shapes, store


def run_advise(args: argparse.Namespace) -> int:
    """Check, advise, write; print the advice."""
    if args.ladder and not args.config:
        raise ConfigError("--ladder needs --config (the model and data the shapes apply to)")
    path, record = read_fit(Path(args.fit))
    compute = budget_flops(args)
    check_advisable(path, record, compute)
    shapes, store = None, None
    if args.ladder:
        shapes, store = ladder_shapes(args.config, args.ladder, record["params_kind"])
    if args.store:
        store = SequenceStore(args.store)
    unique = args.unique_tokens or (epoch_tokens(store) if store is not None else None)
    advice = advise(record, compute, unique_tokens=unique, shapes=shapes)
    text = advice_markdown(advice, str(path))
    out = Path(args.out) if args.out else path.parent

    def fill(staging: Path) -> None:
        (staging / "advice.md").write_text(text)
        (staging / "advice.json").write_text(json.dumps(advice, indent=1) + "\n")

    written = write_staged(out, fill)
    finish(
        args,
        {"out": str(out), "written": [str(p) for p in written], "advice": advice},
        f"{text}\nwrote {len(written)} files to {out}",
    )
    return 0

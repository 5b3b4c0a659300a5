"""``srt-jax recommend``: top-k next items from a trained run (see :mod:`srt_jax.serve`)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from srt_jax.commands.argtypes import positive_int
from srt_jax.commands.output import note
from srt_jax.errors import DataError

_SEPARATORS = re.compile(r"[,\s]+")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``recommend`` command."""
    rec = subparsers.add_parser(
        "recommend",
        help="top-k next items from a run's best-validation checkpoint",
        description="Recommend the top-k next items (original item ids, with the model's "
        "scores) with a run's best-validation checkpoint, as `srt-jax eval` picks it. The "
        "model reads the last data.max_len events of a history, like evaluation (a Mamba run "
        "can read all of them: --full-history). A --user's history is the part of it before "
        "its valid/test targets in the run's split (what the model trained on); a held-out "
        "user's is its whole history. --then adds events one at a time and prints the top-k "
        "after each: a Mamba run carries its recurrent state (O(1) per event, its context "
        "grows past max_len), a transformer re-encodes the last max_len events.",
    )
    rec.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    query = rec.add_mutually_exclusive_group(required=True)
    query.add_argument("--user", metavar="ID", help="a user of the run's store (original id)")
    query.add_argument(
        "--items", metavar="ID,ID,...", help="a history of original item ids, oldest first"
    )
    query.add_argument(
        "--histories",
        metavar="FILE",
        help="one history per line: item ids separated by commas or spaces, optionally "
        "after a label and a TAB; prints one JSON line per non-blank line",
    )
    rec.add_argument(
        "--top-k", type=positive_int, default=10, metavar="K", help="items to list (10)"
    )
    rec.add_argument(
        "--filter-seen", action="store_true", help="never recommend an item of the history"
    )
    rec.add_argument(
        "--then",
        metavar="ID,ID,...",
        help="new events (original item ids) fed one at a time after the history; the top-k "
        "is printed after each",
    )
    rec.add_argument(
        "--full-history",
        action="store_true",
        help="Mamba runs: read the whole history recurrently instead of its last "
        "data.max_len events",
    )
    rec.add_argument(
        "--json", action="store_true", help="print JSON lines (one per top-k) instead of tables"
    )
    rec.set_defaults(handler=run_recommend)


def run_recommend(args: argparse.Namespace) -> int:
    """Handler of ``srt-jax recommend``: every input is checked before anything is printed."""
    if args.then is not None and args.histories is not None:
        raise DataError("--then applies to --user or --items, not to --histories")
    lines = _read_histories(Path(args.histories)) if args.histories is not None else None
    from srt_jax.serve import Recommender

    rec = Recommender.from_run_dir(args.run_dir, full_history=args.full_history)
    if lines is not None:
        return _batch(rec, args, lines)
    if args.user is not None:
        history, part = rec.user_history(args.user)
        if len(history) == 0:
            raise DataError(f"user {args.user!r} has an empty {part}: nothing to recommend from")
        who: dict[str, Any] = {"user": rec.users.original(rec.users.lookup([args.user]))[0]}
    else:
        history, part = rec.item_indices(_ids(args.items, "--items")), "the given items"
        who = {"user": None}
    then_ids = _ids(args.then, "--then") if args.then is not None else []
    then = rec.item_indices(then_ids, "--then: ") if then_ids else []
    state = rec.encode(history)

    def show(after: Any) -> None:
        exclude = state.seen if args.filter_seen else None
        top = rec.top_k(state, args.top_k, exclude=exclude)
        record = {
            **who,
            "history": part,
            "events": len(state.seen),
            "context": state.context,
            "after": after,
            "top_k": top.as_json(),
        }
        if args.json:
            print(json.dumps(record))
            return
        if after is None:
            label = part if who["user"] is None else f"user {who['user']}: {part}"
            print(f"{label}, {len(state.seen)} events; {_reads(rec, state)}")
        else:
            print(f"\nafter item {after}: {len(state.seen)} events; {_reads(rec, state)}")
        print(_table(top))

    if not args.json:
        note(
            args,
            f"run {rec.run_id} ({rec.backbone} {rec.shape}), checkpoint: {rec.checkpoint}"
            + (", seen items filtered" if args.filter_seen else ""),
        )
    show(None)
    for item in then:
        state = rec.observe(state, item)
        show(rec.items.original([item])[0])
    return 0


def _batch(
    rec: Any, args: argparse.Namespace, lines: list[tuple[int, str | None, list[str]]]
) -> int:
    histories = []
    for line, _, ids in lines:
        where = f"{args.histories}:{line}: "
        if not ids:
            raise DataError(f"{where}empty history: at least one item id is needed")
        histories.append(rec.item_indices(ids, where))
    tops = rec.recommend_many(histories, args.top_k, filter_seen=args.filter_seen)
    for (line, label, _), history, top in zip(lines, histories, tops, strict=True):
        record = {
            "line": line,
            "label": label,
            "events": len(history),
            "context": rec.context_of(len(history)),
            "top_k": top.as_json(),
        }
        print(json.dumps(record))
    return 0


def _read_histories(path: Path) -> list[tuple[int, str | None, list[str]]]:
    """``(line number, label or None, item ids)`` of each non-blank line of ``path``."""
    if not path.is_file():
        raise DataError(f"histories file not found: {path}")
    out = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        label, items = text.split("\t", 1) if "\t" in text else (None, text)
        out.append((number, label, [t for t in _SEPARATORS.split(items.strip()) if t]))
    return out


def _ids(text: str, option: str) -> list[str]:
    ids = [t for t in _SEPARATORS.split(text.strip()) if t]
    if not ids:
        raise DataError(f"{option}: empty history: at least one item id is needed")
    return ids


def _reads(rec: Any, state: Any) -> str:
    if state.context == len(state.seen):
        return f"the model reads all {state.context}"
    how = "recurrent state" if rec.recurrent else "model"
    return f"the {how} reads the last {state.context}"


def _table(top: Any) -> str:
    width = max([4, *(len(str(i)) for i in top.ids)])
    rows = [f"{'rank':>4}  {'item':<{width}}  {'score':>9}"]
    for rank, (item, score) in enumerate(zip(top.ids, top.scores, strict=True), 1):
        rows.append(f"{rank:>4}  {item!s:<{width}}  {score:>9.4f}")
    return "\n".join(rows)

"""Cost of one full evaluation: leave-one-out ranking of the valid and test users over the
whole catalog plus the held-out loss, as the training loop and ``srt-jax eval`` run them.

For ``--config`` (default ``configs/ml100k_sasrec.yaml``, MovieLens-100K: 943 users, 1,682
items) and each ``--shape``, builds the run's real :class:`~srt_jax.train.evaluate.Evaluator`
with an untrained model and times, per ``eval.batch_users`` value of ``--users``:

- **reference**: the ranking as it was before ``last_hidden`` — the model's full forward
  over every position of each max_len window, of which only the last is scored — at
  ``eval.batch_users`` 256 (the default then);
- **last position, full width**: the last block computes the scored position only, every
  window at max_len columns;
- **last position**: today's ranking: also users in order of context length, each chunk
  at the narrowest of the context widths 16, 32, 64, ... max_len that holds it.

Ranking (valid + test) and the held-out loss are timed apart. The machine is shared, so the
variants are timed in interleaved rounds and each keeps its fastest round. Every variant's
held-out loss must agree with the reference's within 1e-6 relative (the sums of a different
chunking), and its ranks must equal the reference's but for rounding: an untrained model
scores many items almost alike, so computing the last position alone (other matmul shapes,
other rounding) can move a target past a near-tie. At most 0.5% of the ranks may differ,
each by at most 1; the count is printed. Anything else fails the script.

    python benchmarks/bench_eval.py [--config configs/ml100k_sasrec.yaml]
                                    [--shapes small large] [--users 32 64 128 256]
                                    [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from srt_jax.config import load_config, replace
from srt_jax.train.build import build_run
from srt_jax.train.evaluate import Evaluator, rank_targets

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml100k_sasrec.yaml"
SHAPES = {
    "small": [],
    "large": ["model.d_model=256", "model.n_layers=4", "model.n_heads=4", "data.max_len=200"],
}
REFERENCE_USERS = 256


class FullWidthEvaluator(Evaluator):
    """Every ranking chunk at ``max_len`` columns."""

    context_buckets = False


class FullForwardEvaluator(FullWidthEvaluator):
    """The ranking as it was: the full forward, then the last position's hidden state."""

    def _rank_fn(
        self, params, rest, inputs_UxL, positions_UxL, targets_U, seen_UxA, *candidates_UxY
    ):
        net = self._model(params, rest)
        return rank_targets(
            net(inputs_UxL, positions_UxL)[:, -1],
            net.item_table(),
            targets_U,
            seen_UxA,
            candidates_UxY[0] if candidates_UxY else None,
            self.cfg.item_chunk,
        )


def evaluator_for(parts, users: int, cls: type[Evaluator]) -> Evaluator:
    """An evaluator of ``parts``' run with ``eval.batch_users = users``, compiled."""
    config = parts.config
    evaluator = cls(
        parts.model,
        parts.store.items,
        parts.split,
        n_items=parts.store.n_items,
        max_len=config.data.max_len,
        eval_cfg=replace(config.eval, [f"batch_users={users}"]),
        mesh=parts.step.mesh,
    )
    evaluator.compile()
    return evaluator


def full_evaluation(evaluator: Evaluator, params: nnx.State) -> tuple[np.ndarray, dict]:
    """Seconds ``[ranking (valid + test), held-out loss]`` and the results."""
    start = time.perf_counter()
    results = {"valid": evaluator.ranks(params, "valid"), "test": evaluator.ranks(params, "test")}
    ranked = time.perf_counter()
    results["heldout"] = evaluator.heldout_loss(params)
    return np.array([ranked - start, time.perf_counter() - ranked]), results


def rank_differences(got: dict, want: dict) -> tuple[int, int, int]:
    """(ranks that differ, their largest difference, ranks compared) over both splits,
    unfiltered and filtered."""
    pairs = [
        (np.asarray(g), np.asarray(w))
        for split in ("valid", "test")
        for g, w in zip(got[split], want[split], strict=True)
    ]
    differ = sum(int((g != w).sum()) for g, w in pairs)
    largest = max(int(np.abs(g - w).max(initial=0)) for g, w in pairs)
    return differ, largest, sum(w.size for _, w in pairs)


def same_results(got: dict, want: dict) -> tuple[bool, str]:
    """Whether ``got`` equals ``want`` but for rounding (module docstring), and how."""
    differ, largest, compared = rank_differences(got, want)
    ranks_ok = differ <= 0.005 * compared and largest <= 1
    how = "equal" if differ == 0 else f"{differ} of {compared} ranks differ by 1"
    if want["heldout"] is None:
        return ranks_ok and got["heldout"] is None, how
    close = abs(got["heldout"] - want["heldout"]) <= 1e-6 * abs(want["heldout"])
    return ranks_ok and close, how


def bench_shape(config_path: Path, overrides: list[str], users: list[int], rounds: int) -> None:
    """Print the table rows of one shape."""
    parts = build_run(load_config(config_path, overrides), progress=False)
    _, params, _ = nnx.split(parts.model, nnx.Param, ...)
    variants = {"reference": evaluator_for(parts, REFERENCE_USERS, FullForwardEvaluator)}
    for n in users:
        variants[f"last position, full width, {n} users"] = evaluator_for(
            parts, n, FullWidthEvaluator
        )
    for n in users:
        variants[f"last position, {n} users"] = evaluator_for(parts, n, Evaluator)
    best = {name: np.full(2, np.inf) for name in variants}
    results = {}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, evaluator in variants.items():
            seconds, results[name] = full_evaluation(evaluator, params)
            if round_:
                best[name] = np.minimum(best[name], seconds)
    data, model = parts.config.data, parts.config.model
    print(
        f"\n{model.d_model}d x {model.n_layers} layers, L {data.max_len}: "
        f"{len(parts.split.valid)} valid + {len(parts.split.test)} test users ranked over "
        f"{parts.store.n_items} items, held-out loss of {parts.split.heldout.n_targets} targets"
    )
    print("| variant | ranking, ms | speed-up | held-out loss, ms | speed-up | results |")
    print("| --- | --- | --- | --- | --- | --- |")
    reference = best["reference"]
    for name, seconds in best.items():
        same, how = same_results(results[name], results["reference"])
        if not same:
            raise SystemExit(f"{name}: results differ from the reference ({how})")
        ratio = reference / seconds
        print(
            f"| {name} | {seconds[0] * 1e3:.0f} | {ratio[0]:.2f}x | {seconds[1] * 1e3:.0f} "
            f"| {ratio[1]:.2f}x | {how} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["small"])
    parser.add_argument("--users", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}")
    for shape in args.shapes:
        bench_shape(args.config, SHAPES[shape], args.users, args.rounds)


if __name__ == "__main__":
    main()

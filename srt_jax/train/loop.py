"""The host training loop: ``train(config, run_dir)`` trains, evaluates, checkpoints, resumes.

One run: resolve the data (:mod:`srt_jax.data.sources`), split it, build the window
sampler, the model, the jitted step (:mod:`srt_jax.train.step`) and the evaluator over a
device mesh; compile the step and the evaluation ahead of time; then loop over the
sampler's batches until the token budget is spent.

The host dispatches step t+1 before it reads step t's metrics: after dispatching a step it
waits only for the previous step's finite flags (so the device always has the next step
queued, and the host never runs more than one step ahead), and converts losses to Python
floats only every ``log_every`` steps. Every ``eval_every_tokens`` tokens and at the end it
evaluates (held-out loss, validation ranking) and saves a checkpoint carrying the
validation NDCG@10; every ``checkpoint_every`` steps it saves one without metrics. The
test figures are taken at the best-validation checkpoint, restored at the end.

``metrics.jsonl`` lines (the contract the scaling loaders read):

- ``{"kind": "train", "step", "tokens", "flops", "loss", "lr", "grad_norm", "wall_s"}`` every
  ``log_every`` steps and at the last step; ``loss`` is the mean per-token training loss
  over the steps since the previous train line, ``lr`` and ``grad_norm`` those of ``step``.
- ``{"kind": "eval", "step", "tokens", "flops", "loss", "wall_s", "loop_s", "eval_s",
  "metrics"}``; ``loss`` is the held-out per-token cross-entropy (null without held-out
  users), ``metrics`` the validation ranking metrics, ``eval_s`` the seconds this
  evaluation took.

``step`` counts optimiser steps done, ``tokens`` trained target positions, ``flops`` the
analytic training FLOPs so far, ``wall_s`` seconds since the run started (setup and
compilation included, summed over resumed sessions) and ``loop_s`` seconds spent in the
training loop itself (no setup or compilation).

A non-finite loss or gradient norm ends the run: ``summary.json`` gets status ``failed``
and an error naming the step and the quantity, and :class:`TrainingError` is raised.
Calling :func:`train` again on the same directory resumes from the last checkpoint and
continues exactly as an uninterrupted run (same batches, keys and loss curve).
"""

from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from srt_jax.config import RunConfig, config_hash
from srt_jax.data.sampler import WindowSampler
from srt_jax.data.sources import open_dataset
from srt_jax.data.splits import Segments, Split, split_from_config
from srt_jax.data.store import SequenceStore
from srt_jax.errors import ConfigError, TrainingError
from srt_jax.models.counting import FlopsBreakdown, count_params, flops_per_token, six_n_d
from srt_jax.models.factory import build_model
from srt_jax.progress import progress_bar
from srt_jax.train.checkpoint import BEST_METRIC, Checkpoints
from srt_jax.train.evaluate import Evaluator, SplitName
from srt_jax.train.losses import log_q_from_counts
from srt_jax.train.run_dir import RunDirectory
from srt_jax.train.step import TrainStep, check_divisible, data_mesh

_COUNT_CHUNK = 1 << 24


# --------------------------------------------------------------------------- building a run


@dataclass
class RunParts:
    """Everything a run builds from its config before the first step."""

    config: RunConfig
    store: SequenceStore
    split: Split
    sampler: WindowSampler
    model: nnx.Module
    step: TrainStep
    evaluator: Evaluator
    token_budget: int
    flops: FlopsBreakdown

    @property
    def flops_per_token(self) -> float:
        """Analytic training FLOPs per trained target token (forward x 3)."""
        return self.flops.total


def token_budget(config: RunConfig, split: Split) -> int:
    """Target tokens the run trains: ``train.tokens``, or ``train.epochs`` times the target
    positions of the training segments."""
    if config.train.tokens is not None:
        return config.train.tokens
    return max(1, round(config.train.epochs * split.train.n_targets))


def train_item_counts(items: np.ndarray, segments: Segments, n_items: int) -> np.ndarray:
    """int64 [n_items + 1]: occurrences of each item in the training segments."""
    counts = np.zeros(n_items + 1, np.int64)
    order = np.argsort(segments.start)
    start, end = segments.start[order], segments.end[order]
    lo = 0
    while lo < len(start):  # groups of segments spanning at most _COUNT_CHUNK items
        hi = max(lo + 1, int(np.searchsorted(start, start[lo] + _COUNT_CHUNK, "left")))
        chunk = np.asarray(items[start[lo] : end[hi - 1]])
        inside = np.zeros(len(chunk) + 1, np.int64)
        np.add.at(inside, start[lo:hi] - start[lo], 1)
        np.add.at(inside, end[lo:hi] - start[lo], -1)
        counts += np.bincount(chunk[np.cumsum(inside[:-1]) > 0], minlength=n_items + 1)
        lo = hi
    return counts


def build_run(config: RunConfig, *, progress: bool = True) -> RunParts:
    """Open the data and build the split, sampler, model, step and evaluator of ``config``."""
    data, train_cfg = config.data, config.train
    store = open_dataset(data, progress=progress)
    split = split_from_config(store, data)
    for which in ("valid", "test"):
        if len(getattr(split, which)) == 0:
            raise ConfigError(
                f"the {data.split} split of {data.dataset!r} has no {which} targets "
                "(no training user has enough interactions)",
                key="data.split",
            )
    budget = token_budget(config, split)
    mesh = data_mesh(train_cfg.data_parallel)
    check_divisible(train_cfg.batch_size, mesh, "train.batch_size")
    sampler = WindowSampler.from_config(
        store.items, split.train, data, train_cfg.batch_size, train_cfg.seed, token_budget=budget
    )
    model = build_model(config.model, store.n_items, data.max_len, nnx.Rngs(train_cfg.seed))
    item_log_q = None
    if train_cfg.negatives == "popularity" and train_cfg.loss != "full_softmax":
        counts = train_item_counts(store.items, split.train, store.n_items)
        item_log_q = np.asarray(log_q_from_counts(counts))
    step = TrainStep(model, train_cfg, total_tokens=budget, mesh=mesh, item_log_q=item_log_q)
    evaluator = Evaluator(
        model,
        store.items,
        split,
        n_items=store.n_items,
        max_len=data.max_len,
        eval_cfg=config.eval,
        mesh=mesh,
    )
    flops = flops_per_token(config.model, store.n_items, data.max_len, train_cfg)
    return RunParts(config, store, split, sampler, model, step, evaluator, budget, flops)


# --------------------------------------------------------------------------- loop state


@dataclass
class LoopState:
    """What the loop carries between steps and through checkpoints (JSON; no RNG state).

    ``interval_loss_sum`` / ``interval_count`` hold the steps since the last train line;
    ``best`` and ``last_eval`` are eval records (step, tokens, loss, metrics).
    """

    step: int = 0
    tokens: int = 0
    next_eval_tokens: int | None = None
    wall_s: float = 0.0
    loop_s: float = 0.0
    interval_loss_sum: float = 0.0
    interval_count: float = 0.0
    best: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (exact: Python floats round-trip through JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LoopState:
        """Inverse of :meth:`to_json`."""
        return cls(**raw)


# --------------------------------------------------------------------------- the loop


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Training:
    """One session of one run (fresh or resumed); see the module docstring."""

    def __init__(self, config: RunConfig, run: RunDirectory, progress: bool) -> None:
        self.started = time.perf_counter()
        self.config, self.run, self.progress = config, run, progress
        self.run_id = config_hash(config)
        self.parts = build_run(config, progress=progress)
        self.checkpoints = Checkpoints(run.checkpoint_dir, config.train.keep_checkpoints)
        self.compile_s = 0.0
        self.session_wall_base = 0.0
        self.session_loop_base = 0.0
        self.loop_started = 0.0

    # ------------------------------------------------------------------ clocks and records

    def wall_s(self) -> float:
        return self.session_wall_base + time.perf_counter() - self.started

    def loop_s(self) -> float:
        return self.session_loop_base + time.perf_counter() - self.loop_started

    def flops(self, tokens: int) -> float:
        return self.parts.flops_per_token * tokens

    def base_summary(self, status: str, ls: LoopState, error: str | None = None) -> dict:
        parts, counts = self.parts, count_params(self.parts.model)
        flops = parts.flops
        return {
            "run_id": self.run_id,
            "status": status,
            "error": error,
            "dataset": {
                "name": self.config.data.dataset,
                "n_users": parts.store.n_users,
                "n_items": parts.store.n_items,
                "n_interactions": parts.store.n_interactions,
            },
            "params_total": counts.total,
            "params_embedding": counts.embedding,
            "params_non_embedding": counts.non_embedding,
            "flops_per_token": flops.total,
            "flops_per_token_breakdown": flops.training_parts(),
            "flops_6nd": six_n_d(counts.non_embedding, ls.tokens),
            "flops_6nd_params": "params_non_embedding",
            "train_flops": self.flops(ls.tokens),
            "train_tokens": ls.tokens,
            "token_budget": parts.token_budget,
            "steps": ls.step,
            "batch_size": self.config.train.batch_size,
            "devices": parts.step.mesh.shape["data"],
            "wall_s": ls.wall_s,
            "loop_s": ls.loop_s,
            "compile_s": self.compile_s,
            "tokens_per_s": ls.tokens / ls.loop_s if ls.loop_s > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
        }

    # ------------------------------------------------------------------ session

    def execute(self) -> dict[str, Any]:
        ls = LoopState()
        try:
            self.compile_s = self.parts.step.compile(
                self.config.train.batch_size, self.config.data.max_len
            )
            self.compile_s += self.parts.evaluator.compile()
            state, ls = self.restore_or_init()
            self.run.write_summary(self.base_summary("running", ls))
            state, ls = self.loop(state, ls)
            summary = self.finish(ls)
        except Exception as err:
            ls.wall_s = max(ls.wall_s, self.wall_s())
            self.run.write_summary(self.base_summary("failed", ls, error=str(err)))
            raise
        finally:
            self.checkpoints.close()
        return summary

    def restore_or_init(self) -> tuple[dict, LoopState]:
        step = self.checkpoints.latest_step()
        every = self.config.train.eval_every_tokens
        if step is None:
            self.run.truncate_metrics(0)
            return self.parts.step.init_state(), LoopState(next_eval_tokens=every)
        state, raw = self.checkpoints.restore(step, self.parts.step.abstract_state())
        ls = LoopState.from_json(raw)
        self.run.truncate_metrics(ls.step)
        self.session_wall_base, self.session_loop_base = ls.wall_s, ls.loop_s
        return state, ls

    def loop(self, state: dict, ls: LoopState) -> tuple[dict, LoopState]:
        parts, train_cfg = self.parts, self.config.train
        budget = parts.token_budget
        bar = progress_bar(
            budget, f"train {self.run_id}", unit="tok", disable=not self.progress, initial=ls.tokens
        )
        unchecked: list[tuple[int, int, dict]] = []  # dispatched, finite flags not read
        unlogged: list[tuple[int, int, dict]] = []  # checked, loss not yet folded in
        self.loop_started = time.perf_counter()
        for batch in parts.sampler.iter_batches(start_step=ls.step, tokens_before=ls.tokens):
            state, metrics = parts.step(state, parts.step.put_batch(batch), ls.step, ls.tokens)
            ls.step += 1
            ls.tokens += batch.n_targets
            unchecked.append((ls.step, ls.tokens, metrics))
            unlogged += self.check_finite(unchecked[:-1])  # the previous step's, one late
            del unchecked[:-1]
            if unlogged and unlogged[-1][0] % train_cfg.log_every == 0:
                self.fold_and_log(unlogged, ls, force=False, bar=bar)
                unlogged.clear()
            bar.update(batch.n_targets)
            last = ls.tokens >= budget
            evaluate = last or (
                ls.next_eval_tokens is not None and ls.tokens >= ls.next_eval_tokens
            )
            save = evaluate or ls.step % train_cfg.checkpoint_every == 0
            if save:  # needs this step's state before the next step donates it: sync here
                unlogged += self.check_finite(unchecked)
                unchecked.clear()
                self.fold_and_log(unlogged, ls, force=last, bar=bar)
                unlogged.clear()
            if evaluate:
                self.evaluate(state, ls)
            if save:
                ls.wall_s, ls.loop_s = self.wall_s(), self.loop_s()
                metrics_for_best = None
                if evaluate:
                    metrics_for_best = {BEST_METRIC: ls.last_eval["metrics"][BEST_METRIC]}
                self.checkpoints.save(ls.step, state, ls.to_json(), metrics_for_best)
        bar.close()
        ls.wall_s, ls.loop_s = self.wall_s(), self.loop_s()
        return state, ls

    def check_finite(self, records: list[tuple[int, int, dict]]) -> list[tuple[int, int, dict]]:
        """Raise TrainingError at the first record whose loss or gradient norm is not finite."""
        flags = jax.device_get([(m["loss_finite"], m["grad_finite"]) for _, _, m in records])
        for (step, _, metrics), (loss_ok, grad_ok) in zip(records, flags, strict=True):
            if not (loss_ok and grad_ok):
                what = "loss" if not loss_ok else "gradient norm"
                values = jax.device_get(metrics)
                loss = values["loss_sum"] / max(values["count"], 1.0)
                raise TrainingError(
                    f"non-finite {what} at step {step} (loss {loss}, gradient norm "
                    f"{values['grad_norm']}, learning rate {values['lr']:.3g}); the run is "
                    "failed — lower train.learning_rate or check the data"
                )
        return records

    def fold_and_log(
        self, records: list[tuple[int, int, dict]], ls: LoopState, *, force: bool, bar: Any
    ) -> None:
        """Add the records' losses to the interval (in step order) and write a train line when
        the last record ends a ``log_every`` interval (or ``force``)."""
        values = jax.device_get([m for _, _, m in records])
        for v in values:
            ls.interval_loss_sum += float(v["loss_sum"])
            ls.interval_count += float(v["count"])
        if not records:
            return
        step, tokens, _ = records[-1]
        if not (force or step % self.config.train.log_every == 0):
            return
        loss = ls.interval_loss_sum / max(ls.interval_count, 1.0)
        self.run.append_metrics(
            {
                "kind": "train",
                "step": step,
                "tokens": tokens,
                "flops": self.flops(tokens),
                "loss": loss,
                "lr": float(values[-1]["lr"]),
                "grad_norm": float(values[-1]["grad_norm"]),
                "wall_s": self.wall_s(),
            }
        )
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        ls.interval_loss_sum = ls.interval_count = 0.0

    def evaluate(self, state: dict, ls: LoopState) -> None:
        """Validation metrics and held-out loss of ``state``; updates best and next eval."""
        evaluator = self.parts.evaluator
        started = time.perf_counter()
        record = {
            "step": ls.step,
            "tokens": ls.tokens,
            "loss": evaluator.heldout_loss(state["params"]),
            "metrics": evaluator.metrics(state["params"], "valid"),
        }
        self.run.append_metrics(
            {
                "kind": "eval",
                "step": ls.step,
                "tokens": ls.tokens,
                "flops": self.flops(ls.tokens),
                "loss": record["loss"],
                "wall_s": self.wall_s(),
                "loop_s": self.loop_s(),
                "eval_s": time.perf_counter() - started,
                "metrics": record["metrics"],
            }
        )
        ls.last_eval = record
        # ">=": on ties the later checkpoint is best, as orbax's BestN keeps it
        if ls.best is None or record["metrics"][BEST_METRIC] >= ls.best["metrics"][BEST_METRIC]:
            ls.best = record
        every = self.config.train.eval_every_tokens
        if every is not None:
            ls.next_eval_tokens = (ls.tokens // every + 1) * every

    def finish(self, ls: LoopState) -> dict[str, Any]:
        """Test figures at the best-validation checkpoint; the final summary."""
        best = ls.best
        best_step = best["step"]
        state, _ = self.checkpoints.restore(best_step, self.parts.step.abstract_state())
        test = self.parts.evaluator.metrics(state["params"], "test")
        ls.wall_s = self.wall_s()
        summary = self.base_summary("done", ls)
        summary["eval"] = {
            "loss": best["loss"],
            **test,
            "step": best_step,
            "valid": best["metrics"],
        }
        summary["final"] = ls.last_eval
        summary["protocol"] = {
            **self.parts.evaluator.protocol(),
            "checkpoint": f"best validation {BEST_METRIC} (step {best_step}); test and "
            "held-out loss figures in 'eval' are from it",
            "selection_metric": f"valid {BEST_METRIC}",
        }
        self.run.write_summary(summary)
        return summary


# --------------------------------------------------------------------------- entry points


def train(config: RunConfig, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run of ``config`` in ``run_dir``; return its summary.

    A directory whose run is done returns its summary at once; one holding checkpoints
    resumes from the latest; one holding another config's run is refused (ConfigError).

    Raises:
      TrainingError: a non-finite loss or gradient (summary status ``failed``).
    """
    run = RunDirectory(run_dir)
    run.check_config(config)
    summary = run.read_summary()
    if summary is not None and summary.get("status") == "done":
        return summary
    training = _Training(config, run, progress)
    run.claim(config)
    return training.execute()


def time_steps(config: RunConfig, n_steps: int) -> float:
    """Seconds per training step of ``config`` on this machine (compilation excluded).

    Builds the run's data, model and step (nothing is written), runs two warm-up steps and
    then ``n_steps`` real steps, and returns their mean wall time.
    """
    parts = build_run(config, progress=False)
    parts.step.compile(config.train.batch_size, config.data.max_len)
    state = parts.step.init_state()
    tokens = 0
    start = 0.0
    for k in range(n_steps + 2):
        if k == 2:
            jax.block_until_ready(state)
            start = time.perf_counter()
        batch = parts.sampler.batch(k)
        state, _ = parts.step(state, parts.step.put_batch(batch), k, tokens)
        tokens += batch.n_targets
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / max(n_steps, 1)


def evaluate_run(run_dir: str | Path, which: SplitName, *, progress: bool = False) -> dict:
    """Metrics of a run's best-validation checkpoint on ``which`` (valid or test); the latest
    checkpoint when no evaluation has run yet.

    Returns ``{"run_id", "split", "step", "loss", "metrics", "protocol"}``.
    """
    run = RunDirectory(run_dir)
    config = run.read_config()
    if not run.checkpoint_dir.is_dir() or not any(run.checkpoint_dir.iterdir()):
        raise TrainingError(f"{run.checkpoint_dir}: no checkpoint to evaluate")
    parts = build_run(config, progress=progress)
    checkpoints = Checkpoints(run.checkpoint_dir, config.train.keep_checkpoints)
    try:
        latest = checkpoints.latest_step()
        if latest is None:
            raise TrainingError(f"{run.checkpoint_dir}: no checkpoint to evaluate")
        best = LoopState.from_json(checkpoints.restore_loop(latest)).best
        step = latest if best is None else best["step"]
        state, _ = checkpoints.restore(step, parts.step.abstract_state())
    finally:
        checkpoints.close()
    params = state["params"]
    which_checkpoint = (
        f"latest (step {step}; no validation yet)"
        if best is None
        else f"best validation {BEST_METRIC} (step {step})"
    )
    return {
        "run_id": config_hash(config),
        "split": which,
        "step": step,
        "loss": parts.evaluator.heldout_loss(params),
        "metrics": parts.evaluator.metrics(params, which),
        "protocol": {**parts.evaluator.protocol(), "checkpoint": which_checkpoint},
    }

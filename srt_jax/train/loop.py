"""The host training loop: ``train(config, run_dir)`` trains, evaluates, checkpoints, resumes.

One run: build it (:func:`srt_jax.train.build.build_run`: data, split, sampler, model, the
jitted step and the evaluator over a device mesh); compile the step and the evaluation ahead
of time; then loop over the sampler's batches until the token budget is spent, and take the
test figures at the best-validation checkpoint (:mod:`srt_jax.train.run_eval`).

The host dispatches step t+1 before it reads step t's metrics: after dispatching a step it
waits only for the previous step's finite flags (so the device always has the next step
queued, and the host never runs more than one step ahead), and converts losses to Python
floats only every ``log_every`` steps. Every ``eval_every_tokens`` tokens and at the end it
evaluates (held-out loss, validation ranking) and saves a checkpoint carrying the
validation NDCG@10; every ``checkpoint_every`` steps it saves one without metrics. The
test figures are taken at the best-validation checkpoint, restored at the end. Every
evaluation uses the state's parameters to evaluate
(:meth:`~srt_jax.train.step.TrainStep.eval_params`: schedule-free's averaged ones).

``metrics.jsonl`` lines (the contract the scaling loaders read):

- ``{"kind": "train", "step", "tokens", "flops", "loss", "lr", "grad_norm", "wall_s"}`` every
  ``log_every`` steps and at the last step; ``loss`` is the mean per-token training loss
  over the steps since the previous train line, ``lr`` and ``grad_norm`` those of ``step``.
  Adaptive optimisers add their own figures of ``step`` (:mod:`srt_jax.train.optim`):
  ``d`` (prodigy, dadapt_adamw: the adapted estimate; their step is d x ``lr``), or
  ``lipschitz`` and ``evals`` (usgm: its L, and the loss evaluations of its line search;
  its ``lr`` is 1/L). With ``train.adaptive_batch``: ``accumulation`` (micro-batches per
  update now), ``updates`` (optimiser updates so far) and ``noise_scale`` (the gradient
  noise scale in trained tokens; :mod:`srt_jax.train.adaptive_batch`), and eval lines
  ``updates``; ``step`` still counts micro-batches.
- ``{"kind": "eval", "step", "tokens", "flops", "loss", "wall_s", "loop_s", "eval_s",
  "metrics"}``; ``loss`` is the held-out per-token cross-entropy (null without held-out
  users), ``metrics`` the validation ranking metrics, ``eval_s`` the seconds this
  evaluation took.

``step`` counts optimiser steps done, ``tokens`` trained target positions, ``flops`` the
analytic training FLOPs so far, ``wall_s`` seconds since the run started (setup and
compilation included, summed over resumed sessions) and ``loop_s`` seconds spent in the
training loop itself (no setup or compilation).

A non-finite loss or gradient norm ends the run: ``summary.json`` gets status ``failed``
and an error naming the step and the quantity, and :class:`RunFailedError` (a
:class:`TrainingError`, exit status 1 in the CLI) is raised.
Calling :func:`train` again on the same directory resumes from the last checkpoint and
continues exactly as an uninterrupted run (same batches, keys and loss curve).

With ``train.trackers``, every ``metrics.jsonl`` line and the final summary are also handed
to TensorBoard and/or MLflow (:mod:`srt_jax.train.tracking`); a tracker's failure never
fails the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import resource
import time
from pathlib import Path
from typing import Any

import jax

from srt_jax.config import RunConfig, config_hash
from srt_jax.errors import RunFailedError, first_line
from srt_jax.models.counting import count_params, six_n_d
from srt_jax.progress import progress_bar
from srt_jax.train.adaptive_batch import BatchController
from srt_jax.train.build import build_run, train_item_counts
from srt_jax.train.checkpoint import BEST_METRIC, Checkpoints, checkpoint_params
from srt_jax.train.distributed import is_writer
from srt_jax.train.embedding_quality import embedding_quality
from srt_jax.train.loop_state import LoopState
from srt_jax.train.mesh import ITEMS_AXIS
from srt_jax.train.run_dir import FollowerRunDirectory, RunDirectory
from srt_jax.train.tracking import Trackers, check_installed

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DISK_FULL_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded")


def disk_full(err: BaseException, ls: LoopState) -> RunFailedError | None:
    """A RunFailedError naming the cause when ``err`` is a write that failed for lack of
    space (ENOSPC, EFBIG from a file-size limit, EDQUOT; also when a library reports one in
    its message), else None."""
    if not (
        (isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS)
        or any(text in str(err) for text in DISK_FULL_TEXTS)
    ):
        return None
    where = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
    return RunFailedError(
        f"the disk is full ({where}{first_line(err, 200)}) at step {ls.step}; "
        "the checkpoints saved before are intact: free space and run the same command to "
        "resume"
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Training:
    """One session of one run (fresh or resumed); see the module docstring."""

    def __init__(self, config: RunConfig, run: RunDirectory, progress: bool) -> None:
        self.started = time.perf_counter()
        self.config, self.run, self.progress = config, run, progress
        self.run_id = config_hash(config)
        check_installed(config)
        self.trackers: Trackers | None = None
        self.parts = build_run(config, progress=progress)
        self.checkpoints = Checkpoints(run.checkpoint_dir, config.train.keep_checkpoints)
        self.compile_s = 0.0
        self.session_wall_base = 0.0
        self.session_loop_base = 0.0
        self.loop_started = 0.0
        self.controller = None if config.train.adaptive_batch is None else BatchController()

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
            "item_encoder": self.config.model.item_encoder,
            "params_grow_with_catalog": self.config.model.item_encoder != "features",
            "flops_per_token": flops.total,
            "flops_per_token_breakdown": flops.training_parts(),
            "flops_6nd": six_n_d(counts.non_embedding, ls.tokens),
            "flops_6nd_params": "params_non_embedding",
            "train_flops": self.flops(ls.tokens),
            "train_tokens": ls.tokens,
            "unique_train_tokens": parts.split.train.n_targets,
            "epochs": ls.tokens / max(1, parts.split.train.n_targets),
            "token_budget": parts.token_budget,
            "steps": ls.step,
            "updates": ls.step if self.controller is None else self.controller.updates,
            "batch_size": self.config.train.batch_size,
            "packed_rows": parts.sampler.packed_rows,
            "accumulation": 1 if self.controller is None else self.controller.accumulation,
            "devices": parts.step.mesh.size,
            "item_shards": parts.step.mesh.shape[ITEMS_AXIS],
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
                self.config.train.batch_size,
                self.config.data.max_len,
                self.parts.sampler.packed_rows,
            )
            self.compile_s += self.parts.evaluator.compile()
            state, ls = self.restore_or_init()
            self.trackers = Trackers(self.config, self.run.path, self.run_id)
            self.run.write_summary(self.base_summary("running", ls))
            state, ls = self.loop(state, ls)
            summary = self.finish(ls)
        except Exception as err:
            full = disk_full(err, ls)
            ls.wall_s = max(ls.wall_s, self.wall_s())
            # on a full disk this write may fail too; the error raised still names the cause
            with contextlib.suppress(OSError):
                self.run.write_summary(self.base_summary("failed", ls, error=str(full or err)))
            if self.trackers is not None:
                self.trackers.close("failed")
            if full is not None:
                raise full from err
            raise
        finally:
            self.checkpoints.close()
            if self.trackers is not None:  # still open only when interrupted
                self.trackers.close("interrupted")
        return summary

    def log(self, record: dict[str, Any]) -> None:
        """Write one ``metrics.jsonl`` line and hand it to the trackers."""
        self.run.append_metrics(record)
        self.trackers.record(record)

    def restore_or_init(self) -> tuple[dict, LoopState]:
        every = self.config.train.eval_every_tokens
        restored = self.checkpoints.restore_latest(self.parts.step.abstract_state())
        if restored is None:
            self.run.truncate_metrics(0)
            return self.parts.step.init_state(), LoopState(next_eval_tokens=every)
        _, state, raw = restored
        ls = LoopState.from_json(raw)
        if self.controller is not None:
            self.controller = BatchController.from_json(ls.batch_controller)
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
            accumulation = 1
            if self.controller is not None:
                accumulation = self.controller.dispatch(last=ls.tokens + batch.n_targets >= budget)
            state, metrics = parts.step(
                state, parts.step.put_batch(batch), ls.step, ls.tokens, accumulation
            )
            if self.controller is not None:  # as of this step, for its train line
                metrics["accumulation"] = accumulation
                metrics["updates"] = self.controller.updates
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
                if self.controller is not None:
                    ls.batch_controller = self.controller.to_json()
                metrics_for_best = None
                if evaluate:
                    metrics_for_best = {BEST_METRIC: ls.last_eval["metrics"][BEST_METRIC]}
                self.checkpoints.save(ls.step, state, ls.to_json(), metrics_for_best)
        bar.close()
        ls.wall_s, ls.loop_s = self.wall_s(), self.loop_s()
        return state, ls

    def check_finite(self, records: list[tuple[int, int, dict]]) -> list[tuple[int, int, dict]]:
        """Raise RunFailedError at the first record whose loss or gradient norm is not finite."""
        flags = jax.device_get([(m["loss_finite"], m["grad_finite"]) for _, _, m in records])
        for (step, _, metrics), (loss_ok, grad_ok) in zip(records, flags, strict=True):
            if not (loss_ok and grad_ok):
                what = "loss" if not loss_ok else "gradient norm"
                values = jax.device_get(metrics)
                loss = values["loss_sum"] / max(values["count"], 1.0)
                raise RunFailedError(
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
        adaptive, controller = self.config.train.adaptive_batch, self.controller
        for v in values:
            ls.interval_loss_sum += float(v["loss_sum"])
            ls.interval_count += float(v["count"])
            if controller is not None:
                controller.observe(adaptive, float(v["noise_g2"]), float(v["noise_trace"]))
        if controller is not None:
            controller.decide(adaptive, self.parts.sampler.expected_tokens_per_batch())
        if not records:
            return
        step, tokens, _ = records[-1]
        if not (force or step % self.config.train.log_every == 0):
            return
        loss = ls.interval_loss_sum / max(ls.interval_count, 1.0)
        self.log(
            {
                "kind": "train",
                "step": step,
                "tokens": tokens,
                "flops": self.flops(tokens),
                "loss": loss,
                "lr": float(values[-1]["lr"]),
                "grad_norm": float(values[-1]["grad_norm"]),
                **{k: values[-1][k].item() for k in self.parts.step.metric_keys},
                **({} if controller is None else self.batch_figures(values[-1])),
                "wall_s": self.wall_s(),
            }
        )
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        ls.interval_loss_sum = ls.interval_count = 0.0

    def batch_figures(self, last: dict[str, Any]) -> dict[str, Any]:
        """The adaptive batch's figures for a train line from its ``last`` step's record:
        that step's accumulation, the optimiser updates made up to it, and the noise scale
        (trained tokens) so far."""
        return {
            "accumulation": int(last["accumulation"]),
            "updates": int(last["updates"]),
            "noise_scale": self.controller.noise_scale,
        }

    def evaluate(self, state: dict, ls: LoopState) -> None:
        """Validation metrics and held-out loss of ``state``; updates best and next eval."""
        evaluator = self.parts.evaluator
        started = time.perf_counter()
        params = self.parts.step.eval_params(state)
        record = {
            "step": ls.step,
            "tokens": ls.tokens,
            "loss": evaluator.heldout_loss(params),
            "metrics": evaluator.metrics(params, "valid"),
        }
        self.log(
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
                **({} if self.controller is None else {"updates": self.controller.updates}),
            }
        )
        ls.last_eval = record
        # ">=": on ties the later checkpoint is best, as orbax's BestN keeps it
        if ls.best is None or record["metrics"][BEST_METRIC] >= ls.best["metrics"][BEST_METRIC]:
            ls.best = record
        every = self.config.train.eval_every_tokens
        if every is not None:
            ls.next_eval_tokens = (ls.tokens // every + 1) * every

    def embedding_quality(self, params: Any) -> dict[str, Any]:
        """The item embeddings' quality at ``params`` (:mod:`srt_jax.train.embedding_quality`)."""
        parts = self.parts
        counts = train_item_counts(parts.store.items, parts.split.train, parts.store.n_items)
        return embedding_quality(
            parts.evaluator.item_table(params),
            parts.store,
            parts.split.heldout,
            counts,
            seed=self.config.data.split_seed,
            feature=parts.embedding_feature,
        )

    def finish(self, ls: LoopState) -> dict[str, Any]:
        """Test figures at the best-validation checkpoint; the final summary."""
        best = ls.best
        best_step = best["step"]
        params = checkpoint_params(self.parts.step, self.checkpoints, best_step)
        test = self.parts.evaluator.metrics(params, "test")
        ls.wall_s = self.wall_s()
        summary = self.base_summary("done", ls)
        summary["eval"] = {
            "loss": best["loss"],
            **test,
            "step": best_step,
            "valid": best["metrics"],
        }
        summary["final"] = ls.last_eval
        if self.parts.evaluator.test_sets:
            summary["test_sets"] = self.parts.evaluator.test_set_metrics(params)
        if self.config.eval.embedding_quality:
            summary["embedding_quality"] = self.embedding_quality(params)
        init = self.parts.init
        summary["init_from"] = None if init is None else init.as_json()
        summary["protocol"] = {
            **self.parts.evaluator.protocol(),
            "objective": self.config.train.objective,
            **({} if init is None else {"init_from": f"{init.run_dir} ({init.checkpoint})"}),
            "checkpoint": f"best validation {BEST_METRIC} (step {best_step}); test and "
            "held-out loss figures in 'eval' are from it",
            "selection_metric": f"valid {BEST_METRIC}",
        }
        self.run.write_summary(summary)
        self.trackers.finish(summary)
        return summary


def train(config: RunConfig, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run of ``config`` in ``run_dir``; return its summary.

    A directory whose run is done returns its summary at once; one holding checkpoints
    resumes from the latest; one holding another config's run is refused (ConfigError).

    Raises:
      RunFailedError: a non-finite loss or gradient (summary status ``failed``).
    """
    writer = is_writer()
    run = RunDirectory(run_dir) if writer else FollowerRunDirectory(run_dir)
    if not writer:  # one process logs, tracks and shows progress
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, trackers=()))
        progress = False
    run.check_config(config)
    summary = run.read_summary()
    if summary is not None and summary.get("status") == "done":
        return summary
    training = _Training(config, run, progress)
    run.claim(config)
    return training.execute()

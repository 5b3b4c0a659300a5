"""The training loop end to end on a tiny synthetic store: run directory, evaluation,
best checkpoint, refusal of another config, non-finite failures, step timing."""

import json

import jax.numpy as jnp
import optax
import pytest
import yaml

from srt_jax.config import load_config, replace, to_dict
from srt_jax.errors import ConfigError, TrainingError
from srt_jax.train import loop, step
from srt_jax.train.checkpoint import Checkpoints
from srt_jax.train.loop import train
from srt_jax.train.run_eval import evaluate_run, restore_best
from srt_jax.train.timing import time_steps

TINY = [
    "data.dataset=synthetic",
    "data.synthetic.users=150",
    "data.synthetic.items=40",
    "data.synthetic.mean_length=16",
    "data.max_len=8",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "train.batch_size=16",
    "train.epochs=null",
    "train.tokens=2500",
    "train.eval_every_tokens=1000",
    "train.log_every=5",
    "train.checkpoint_every=7",
    "train.keep_checkpoints=1",
    "eval.batch_users=64",
]


def tiny_config(cache_dir, *more):
    return load_config(None, [*TINY, f"data.cache_dir={cache_dir}", *more])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    config = tiny_config(root / "cache")
    run_dir = root / "run"
    summary = train(config, run_dir, progress=False)
    return config, run_dir, summary


def records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_run_directory_holds_config_metrics_checkpoints_summary(finished):
    config, run_dir, summary = finished
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == to_dict(config)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert (run_dir / "checkpoints").is_dir()
    train_lines = records(run_dir, "train")
    assert {"step", "tokens", "flops", "loss", "lr", "wall_s"} <= set(train_lines[0])
    assert [r["step"] for r in train_lines][:2] == [5, 10]
    assert train_lines[-1]["step"] == summary["steps"]  # the last step is always logged
    assert train_lines[-1]["tokens"] == summary["train_tokens"] == 2500  # exact budget


def test_summary_counts_and_protocol(finished):
    _, _, summary = finished
    assert summary["status"] == "done" and summary["error"] is None
    assert summary["params_total"] == summary["params_embedding"] + summary["params_non_embedding"]
    assert summary["train_flops"] == pytest.approx(summary["flops_per_token"] * 2500)
    assert summary["flops_6nd"] == pytest.approx(6 * summary["params_non_embedding"] * 2500)
    assert summary["flops_per_token"] == pytest.approx(
        sum(summary["flops_per_token_breakdown"].values())
    )
    assert summary["peak_rss_mb"] > 0 and summary["wall_s"] > 0
    evaluation = summary["eval"]
    for key in ("loss", "ndcg@10", "hr@10", "mrr@10", "ndcg@10_filtered", "hr@20_filtered"):
        assert isinstance(evaluation[key], float), key
    protocol = summary["protocol"]
    assert protocol["ranking"] == "full" and protocol["cutoffs"] == [5, 10, 20]
    assert protocol["split"]["scheme"] == "leave_one_out"
    assert f"step {evaluation['step']}" in protocol["checkpoint"]
    assert protocol["n_test_users"] > 0


def test_evaluations_every_eval_tokens_and_test_at_best_validation(finished):
    _, run_dir, summary = finished
    evals = records(run_dir, "eval")
    assert [r["tokens"] // 1000 for r in evals[:-1]] == [1, 2]  # first crossing of each 1000
    assert evals[-1]["tokens"] == 2500
    best = max(evals, key=lambda r: (r["metrics"]["ndcg@10"], r["step"]))
    assert summary["eval"]["step"] == best["step"]
    assert summary["eval"]["valid"] == best["metrics"]
    assert summary["eval"]["loss"] == best["loss"]
    assert summary["final"]["step"] == summary["steps"]


def test_done_run_returns_its_summary_without_building(finished, monkeypatch):
    config, run_dir, summary = finished
    monkeypatch.setattr(loop, "build_run", lambda *a, **k: pytest.fail("rebuilt a done run"))
    assert train(config, run_dir, progress=False) == summary


def test_another_config_is_refused_naming_the_difference(finished):
    config, run_dir, _ = finished
    other = replace(config, ["model.d_model=32"])
    with pytest.raises(ConfigError, match=r"model\.d_model: 16 -> 32"):
        train(other, run_dir, progress=False)


def test_eval_run_uses_the_best_checkpoint(finished):
    _, run_dir, summary = finished
    result = evaluate_run(run_dir, "test")
    assert result["step"] == summary["eval"]["step"]
    assert result["metrics"]["ndcg@10"] == pytest.approx(summary["eval"]["ndcg@10"])
    assert result["loss"] == pytest.approx(summary["eval"]["loss"])


@pytest.fixture(scope="module")
def schedule_free(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule_free")
    config = tiny_config(root / "cache", "train.optimizer=schedule_free_adamw")
    summary = train(config, root / "run", progress=False)
    return config, root / "run", summary


def test_schedule_free_runs_are_evaluated_at_their_averaged_parameters(schedule_free):
    """Validation, held-out loss, the best checkpoint's test figures and ``srt-jax eval``
    all use schedule-free's eval parameters, not the interpolated training ones."""
    config, run_dir, summary = schedule_free
    restored = restore_best(run_dir)
    parts, best = restored.parts, summary["eval"]["step"]
    checkpoints = Checkpoints(run_dir / "checkpoints", config.train.keep_checkpoints)
    try:
        state, _ = checkpoints.restore(best, parts.step.abstract_state())
    finally:
        checkpoints.close()
    averaged = optax.contrib.schedule_free_eval_params(
        state["opt_state"][-1].inner_state, state["params"]
    )
    evaluator = parts.evaluator
    assert evaluator.heldout_loss(averaged) == pytest.approx(summary["eval"]["loss"], rel=1e-6)
    assert evaluator.heldout_loss(state["params"]) != pytest.approx(summary["eval"]["loss"])
    test = evaluator.metrics(averaged, "test")
    assert test["ndcg@10"] == pytest.approx(summary["eval"]["ndcg@10"], rel=1e-6)
    assert evaluate_run(run_dir, "test")["metrics"] == test
    assert [r["loss"] for r in records(run_dir, "eval") if r["step"] == best] == [
        summary["eval"]["loss"]
    ]


@pytest.mark.parametrize(
    ("optimizer", "keys"), [("prodigy", {"d"}), ("usgm", {"lipschitz", "evals"})]
)
def test_adaptive_optimisers_write_their_step_size_in_train_lines(tmp_path, optimizer, keys):
    config = tiny_config(tmp_path / "cache", f"train.optimizer={optimizer}", "train.tokens=800")
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["status"] == "done"
    lines = records(tmp_path / "run", "train")
    assert lines and all(keys <= set(r) and all(r[k] > 0 for k in keys) for r in lines)
    if optimizer == "usgm":
        assert all(r["lr"] == pytest.approx(1 / r["lipschitz"]) for r in lines)


def _nan_loss(*args, **kwargs):
    loss_sum, count = step_compute_loss(*args, **kwargs)
    return loss_sum + jnp.nan, count


def _nan_gradient(hidden, *args, **kwargs):
    loss_sum, count = step_compute_loss(hidden, *args, **kwargs)
    x = hidden.sum()
    # finite value (the branch is never taken), NaN gradient (0 x the NaN slope of sqrt)
    return loss_sum + jnp.where(x > jnp.inf, jnp.sqrt(-jnp.abs(x) - 1.0), 0.0), count


step_compute_loss = step.compute_loss


@pytest.mark.parametrize(("patched", "what"), [(_nan_loss, "loss"), (_nan_gradient, "gradient")])
def test_non_finite_ends_the_run_failed_naming_the_step(tmp_path, monkeypatch, patched, what):
    monkeypatch.setattr(step, "compute_loss", patched)
    config = tiny_config(tmp_path / "cache", "train.tokens=400")
    with pytest.raises(TrainingError, match=rf"non-finite {what}.* at step 1\b"):
        train(config, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert f"non-finite {what}" in summary["error"] and "step 1" in summary["error"]
    assert not list((tmp_path / "run" / "checkpoints").iterdir())  # nothing saved after NaN


def test_time_steps_measures_a_real_step(tmp_path):
    seconds = time_steps(tiny_config(tmp_path / "cache"), 3)
    assert 0 < seconds < 10

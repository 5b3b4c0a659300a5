"""The Mamba backbone through the whole stack: every loss, every sampler mode, a full run with
evaluation and ``srt-jax eval``, and IsoFLOP sweeps that cost each backbone with its own
FLOP count."""

import dataclasses
import typing
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from srt_jax.config import SamplerMode, TrainConfig, load_config
from srt_jax.data.sampler import WindowSampler
from srt_jax.models.counting import flops_per_token
from srt_jax.sweep.spec import data_facts, expand, load_spec
from srt_jax.train.build import build_run
from srt_jax.train.loop import train
from srt_jax.train.run_eval import evaluate_run

TINY_MAMBA = [
    "data.dataset=synthetic",
    "data.synthetic.users=120",
    "data.synthetic.items=40",
    "data.synthetic.mean_length=16",
    "data.max_len=8",
    "model.backbone=mamba",
    "model.d_model=16",
    "model.n_layers=2",
    "model.mamba.d_state=4",
    "train.batch_size=16",
    "train.epochs=null",
    "train.tokens=1200",
    "train.eval_every_tokens=600",
    "train.log_every=5",
    "train.keep_checkpoints=1",
    "eval.batch_users=64",
]


def tiny(cache_dir, *more):
    return load_config(None, [*TINY_MAMBA, f"data.cache_dir={cache_dir}", *more])


def run_steps(parts, sampler, n: int = 2) -> list[float]:
    """Mean training losses of ``n`` steps of ``parts``' step on ``sampler``'s batches."""
    state, tokens, losses = parts.step.init_state(), 0, []
    for k in range(n):
        batch = sampler.batch(k)
        state, metrics = parts.step(state, parts.step.put_batch(batch), k, tokens)
        tokens += batch.n_targets
        values = jax.device_get(metrics)
        assert values["loss_finite"] and values["grad_finite"]
        losses.append(float(values["loss_sum"] / values["count"]))
    return losses


@pytest.mark.parametrize("loss", typing.get_args(typing.get_type_hints(TrainConfig)["loss"]))
def test_every_loss_trains_a_mamba_model(tmp_path, loss):
    parts = build_run(tiny(tmp_path, f"train.loss={loss}", "train.num_negatives=8"), progress=False)
    assert all(np.isfinite(run_steps(parts, parts.sampler)))


def test_every_sampler_mode_feeds_a_mamba_model(tmp_path):
    config = tiny(tmp_path)
    parts = build_run(config, progress=False)
    for mode in typing.get_args(SamplerMode):
        data = dataclasses.replace(config.data, sampler=mode)
        sampler = WindowSampler.from_config(
            parts.store.items, parts.split.train, data, 16, 0, token_budget=parts.token_budget
        )
        assert all(np.isfinite(run_steps(parts, sampler))), mode


def test_a_mamba_run_trains_evaluates_and_is_costed_as_mamba(tmp_path):
    config = tiny(tmp_path / "cache")
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["status"] == "done"
    parts = summary["flops_per_token_breakdown"]
    assert parts["attention"] == 0 and parts["scan"] > 0
    expected = flops_per_token(config.model, summary["dataset"]["n_items"], 8, config.train)
    assert summary["flops_per_token"] == expected.total
    assert summary["train_flops"] == expected.total * summary["train_tokens"]
    assert 0 <= summary["eval"]["ndcg@10"] <= 1 and np.isfinite(summary["eval"]["loss"])
    again = evaluate_run(tmp_path / "run", "test")
    assert again["metrics"]["ndcg@10"] == pytest.approx(summary["eval"]["ndcg@10"])


def test_isoflop_sizes_each_backbone_with_its_own_flops(tmp_path):
    data = {
        "dataset": "synthetic",
        "cache_dir": str(tmp_path),
        "synthetic": {"users": 60, "items": 40, "mean_length": 15},
        "max_len": 10,
    }
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "both",
                "config": {"data": data, "train": {"batch_size": 8}},
                "shapes": ["tiny", "mamba_tiny"],
                "isoflop": {"budgets": [1e9], "min_tokens": 10},
            }
        )
    )
    runs = expand(load_spec(spec_path)).runs
    assert {r.config.model.backbone for r in runs} == {"transformer", "mamba"}
    n_items = data_facts(runs[0].config.data).n_items
    for run in runs:
        per_token = flops_per_token(run.config.model, n_items, 10, run.config.train).total
        assert run.flops_per_token == per_token
        assert run.tokens == round(1e9 / per_token)
    mamba = [r for r in runs if r.config.model.backbone == "mamba"]
    assert len(mamba) == 4 and all(r.config.model.n_heads is None for r in mamba)


def test_the_shipped_mamba4rec_config_has_mamba4rec_s_shape():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "ml100k_mamba4rec.yaml")
    model = config.model
    assert model.backbone == "mamba" and (model.d_model, model.n_layers) == (64, 1)
    assert (model.mamba.d_state, model.mamba.d_conv, model.mamba.expand) == (32, 4, 2)
    assert config.data.dataset == "movielens-100k" and config.train.loss == "full_softmax"

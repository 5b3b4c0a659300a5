"""Every experiment runs end to end in its --quick mode and writes its results JSON, its
figure and its markdown table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_quick(script: str, out: Path) -> dict:
    """Run ``script --quick`` into ``out``; its results. Its same-shaped runs (arms that
    differ only on the host: samplers, seeds, learning rates) compile their step and
    evaluation once, through JAX's persistent cache in the test's own directory."""
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(out.parent / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out.parent,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_ssm_vs_attention_quick(tmp_path):
    out = tmp_path / "ssm"
    results = run_quick("ssm_vs_attention.py", out)
    assert results["quick"] is True
    summary = results["quality"]["summary"]
    assert set(summary) == {"transformer", "mamba"}
    for backbone in summary.values():
        assert 0 <= backbone["ndcg@10"]["mean"] <= 1
    (row,) = results["speed"]["rows"]
    assert row["transformer"]["s_per_1k_tokens"] > 0 and row["mamba"]["peak_mib"] > 0
    (serving,) = results["serving"]["rows"]
    assert serving["mamba_recurrent_s"] > 0 and serving["transformer_reencode_s"] > 0
    assert (out / "ssm_vs_attention.png").stat().st_size > 0
    table = (out / "table.md").read_text()
    assert "NDCG@10" in table and "Mamba speed-up" in table


@pytest.mark.slow
def test_orpo_finetuning_quick(tmp_path):
    out = tmp_path / "orpo"
    results = run_quick("orpo_finetuning.py", out)
    assert results["quick"] is True
    assert set(results["runs"]) == {"base", "ce", "orpo_disliked", "orpo_hard", "orpo_uniform"}
    for stage in ("orpo_disliked", "orpo_hard", "orpo_uniform"):
        (run,) = results["runs"][stage]
        assert np.isfinite(run["log_odds_ratio"]) and 0 <= run["ndcg@10"] <= 1
        assert set(results["paired_vs_ce"][stage]) == {"ndcg@10", "hr@10", "loss"}
    assert results["protocol"]["objective"] == "orpo"
    assert (out / "orpo_finetuning.png").stat().st_size > 0
    assert "NDCG@10 - ce (paired)" in (out / "table.md").read_text()


@pytest.mark.slow
def test_mup_lr_transfer_quick(tmp_path):
    out = tmp_path / "mup"
    results = run_quick("mup_lr_transfer.py", out)
    assert results["quick"] is True
    assert set(results["curves"]) == {"standard", "mup"}
    assert len(results["runs"]) == 2 * 2 * 2  # parametrisations x widths x rates, one seed
    for curves in results["curves"].values():
        for curve in curves.values():
            assert curve["best_rate"] in results["rates"]  # two rates: no parabola
    assert set(results["best_rate_drift"]) == {"standard", "mup"}
    assert (out / "mup_lr_transfer.png").stat().st_size > 0
    assert "Best-rate drift" in (out / "table.md").read_text()


@pytest.mark.slow
def test_adaptive_batch_quick(tmp_path):
    out = tmp_path / "adaptive"
    results = run_quick("adaptive_batch.py", out)
    assert results["quick"] is True
    assert set(results["summary"]) == {"fixed_32", "fixed_128", "adaptive"}
    (adaptive,) = results["runs"]["adaptive"]
    (fixed,) = results["runs"]["fixed_32"]
    assert adaptive["summary"]["updates"] < fixed["summary"]["updates"]
    assert adaptive["summary"]["train_tokens"] == fixed["summary"]["train_tokens"]
    assert adaptive["noise"] and all(n["noise_scale"] > 0 for n in adaptive["noise"])
    assert results["summary"]["fixed_32"]["reached"] == 1  # the target is 95% of its best
    assert (out / "adaptive_batch.png").stat().st_size > 0
    assert "updates to target" in (out / "table.md").read_text()


@pytest.mark.slow
def test_adaptive_step_size_quick(tmp_path):
    out = tmp_path / "step_size"
    results = run_quick("adaptive_step_size.py", out)
    assert results["quick"] is True
    optimizers = {"adamw", "prodigy", "dadapt_adamw", "schedule_free_adamw", "usgm"}
    assert set(results["summary"]) == set(results["runs"]) == optimizers
    for runs in results["runs"].values():
        (run,) = runs
        assert run["evals"] and all(e["loop_s"] >= 0 for e in run["evals"])
        assert 0 <= run["summary"]["ndcg@10"] <= 1
    assert results["summary"]["adamw"]["reached"] == 1  # the target is 95% of its best
    assert (out / "adaptive_step_size.png").stat().st_size > 0
    assert "loop s to target" in (out / "table.md").read_text()


@pytest.mark.slow
def test_sliding_window_quick(tmp_path):
    out = tmp_path / "sliding"
    results = run_quick("sliding_window.py", out)
    assert results["quick"] is True
    summary = results["summary"]["synthetic_tiny"]
    assert set(summary) == {
        "recent",
        "sliding",
        "mixed_epoch_50",
        "mixed_epoch_75",
        "recency_weighted",
    }
    for entry in summary.values():
        for key in ("recent/ndcg@10", "old_windows/ndcg@10", "long_history/ndcg@10"):
            assert 0 <= entry[key]["mean"] <= 1
        assert 0 <= entry["cooccurrence_recall/all"]["mean"] <= 1
        assert "topic_agreement/all" in entry  # a synthetic store: its topics are known
    assert summary["recent"]["vs_recent"]["old_windows/ndcg@10"]["mean"] == 0
    for name in ("sliding_window.png", "sliding_window_embeddings.png"):
        assert (out / name).stat().st_size > 0
    assert "Paired difference to recent" in (out / "table.md").read_text()


@pytest.mark.slow
def test_item_encoder_quick(tmp_path):
    out = tmp_path / "item_encoder"
    results = run_quick("item_encoder.py", out)
    assert set(results["summary"]) == {"id", "features", "features+id"}
    summary = results["summary"]
    assert summary["features+id"]["params_total"] > summary["features"]["params_total"]
    for encoder in ("features", "features+id"):
        assert results["ndcg_ratio_to_id"][encoder] > 0
        assert set(results["paired_vs_id"][encoder]) == {"ndcg@10", "hr@10", "loss"}
    assert (out / "item_encoder.png").stat().st_size > 0
    assert "NDCG@10 / id" in (out / "table.md").read_text()


@pytest.mark.slow
def test_transfer_quick(tmp_path):
    out = tmp_path / "transfer"
    results = run_quick("transfer.py", out)
    (domain,) = results["domains"].values()
    assert list(domain["widths"]) == ["8", "16"]
    for row in domain["widths"].values():
        assert row["tokens_matched"] > 0  # the pair shares its feature vocabulary
        assert row["pretrain_flops"] > 0
        for arm in ("finetuned", "scratch"):
            assert 0 <= row[arm]["ndcg@10"]["mean"] <= 1
    flops = [row["pretrain_flops"] for row in domain["widths"].values()]
    assert flops[1] > flops[0]  # wider models cost more to pre-train
    assert domain["fit"]["metric_gain_per_decade"] is not None
    assert domain["fit"]["loss_law"]["reason"].startswith("2 budgets")
    assert (out / "transfer.png").stat().st_size > 0
    assert "pre-training FLOPs" in (out / "table.md").read_text()


@pytest.mark.slow
def test_srt_sweep_quick(tmp_path):
    out = tmp_path / "srt"
    results = run_quick("srt_sweep.py", out)
    (group,) = results["groups"]
    assert (group["negatives"], group["runs"]) == ("100", 60)
    assert group["max_epochs"] == pytest.approx(50)  # every SRT run reads its data 50 times
    (fit,) = group["fits"]
    assert fit["supported"] is True or (fit["supported"] is False and fit["reasons"])
    check = fit["extrapolation"]
    assert check["fit_on_runs"] >= 5 and check["predicted_runs"] >= 1
    assert "ndcg_at_5" in check["metrics"]
    for name in ("fit_100/fit.json", "fit_100/report.html", "srt_sweep.png", "table.md"):
        assert (out / name).stat().st_size > 0
    assert "| 100 | 60 | 0 |" in (out / "table.md").read_text()

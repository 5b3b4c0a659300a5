"""The extrapolation check and the grade of every fit (srt_jax/scaling/validation.py)."""

import dataclasses
import json

import numpy as np
import pytest
from test_scaling_cli import isoflop_csv, run_fit
from test_scaling_loaders import write_csv

from srt_jax.scaling.analysis import FitOptions, analyse
from srt_jax.scaling.loaders import load_points
from srt_jax.scaling.report import extrapolation_line
from srt_jax.scaling.validation import extrapolation_check


def test_a_known_law_extrapolates_a_decade_and_is_supported(tmp_path):
    points = load_points(isoflop_csv(tmp_path / "points.csv"))  # budgets 1e19 ... 1e22
    report = analyse(points, FitOptions(bootstrap=50, show_progress=False))
    check = report.extrapolation
    assert check["fit_on_runs"] == 18 and check["predicted_runs"] == 6
    assert check["fit_compute_max"] == pytest.approx(1e21)
    assert check["mean_abs_relative_error"] < 0.01  # 0.2% noise
    for run in check["per_run"]:
        assert run["compute"] == pytest.approx(1e22)
        lo, hi = run["interval"]
        assert lo < run["predicted"] < hi
        assert abs(run["relative_error"]) < 0.01
    assert report.grade["supported"], report.grade["reasons"]
    assert set(report.grade["checks"]) == {"converged", "identifiable", "extrapolates"}


def flat_csv(path):
    """Losses without a trend in N or D: nothing to fit."""
    rng = np.random.default_rng(0)
    rows = []
    for budget in (1e19, 1e20, 1e21, 1e22):
        for n in np.geomspace(1e8, 1e10, 6):
            rows.append([n, budget, 3.0 * np.exp(0.01 * rng.standard_normal())])
    return write_csv(path, ["N", "C", "loss"], rows)


def test_a_flat_fit_is_not_supported_and_says_why_first(tmp_path, capsys):
    out = tmp_path / "fit"
    argv = [str(flat_csv(tmp_path / "flat.csv")), "--out", str(out), "--bootstrap", "20"]
    assert run_fit(argv) == 0
    record = json.loads((out / "fit.json").read_text())
    assert record["supported"] is False
    assert not record["grade"]["checks"]["identifiable"]["ok"]
    assert any("not identified" in reason for reason in record["grade"]["reasons"])
    assert len(record["bootstrap"]["law_samples"]["alpha"]) == 20
    report = (out / "report.md").read_text().splitlines()
    assert report[2].startswith("**Fit NOT supported by the data**")
    assert capsys.readouterr().out.startswith("fit NOT supported by the data: ")
    needs = record["grade"]["needs"]
    assert needs and any("as many runs" in need or "term never reaches" in need for need in needs)
    assert "What the data would need (orders of magnitude to plan the next sweep with):" in report
    assert f"- {needs[0]}" in report


def test_too_few_small_budget_runs_fail_the_extrapolation_check(tmp_path):
    points = load_points(isoflop_csv(tmp_path / "points.csv"))
    report = analyse(
        points, FitOptions(bootstrap=0, show_progress=False, extrapolation_factor=2000)
    )
    assert report.extrapolation["skipped"].startswith("only 0 runs at budgets <= C_max / 2000")
    checks = report.grade["checks"]
    assert not checks["extrapolates"]["ok"] and not checks["identifiable"]["ok"]
    assert "--bootstrap 0" in checks["identifiable"]["detail"]
    assert not report.grade["supported"]
    assert "6 more runs at budgets <= C_max / 2000" in " ".join(report.grade["needs"])


def test_the_check_predicts_each_metric_from_its_refitted_frontier_law(tmp_path):
    points = load_points(isoflop_csv(tmp_path / "points.csv"))  # budgets 1e19 ... 1e22
    trend = 0.02 + 0.01 * np.log(points.compute / 1e19)  # best NDCG grows with ln C
    size_penalty = 0.002 * np.abs(np.log(points.n_total / np.median(points.n_total)))
    metrics = {"ndcg@10": trend - size_penalty, "step": np.arange(len(points), dtype=float)}
    points = dataclasses.replace(points, metrics=metrics)
    check = extrapolation_check(points, "total", factor=100, delta=1e-3, resamples=0, seed=0)
    assert set(check["metrics"]) == {"ndcg@10"}  # ranking metrics only
    ndcg = check["metrics"]["ndcg@10"]  # refitted on budgets 1e19, 1e20: log-linear
    observed = float((trend - size_penalty)[points.compute >= 1e22 / 1.5].max())
    assert ndcg["observed"] == pytest.approx(observed)
    assert ndcg["form"] == "m(C) = a + b ln C"
    assert abs(ndcg["relative_error"]) < 0.05  # the trend, less the smallest size penalty
    text = extrapolation_line(check)
    assert "ndcg@10" in text and "predicted by the refitted frontier laws" in text


def test_a_term_fitted_to_nothing_leaves_its_exponent_not_identified(tmp_path):
    """Losses that depend on D only (as the SRT sweep's): the N term fits to about 0, so
    alpha could be anything, and the grade says so even where its interval looks narrow."""
    rows, rng = [], np.random.default_rng(0)
    for budget in (1e19, 1e20, 1e21, 1e22):
        for n in np.geomspace(1e8, 1e10, 6):
            d = budget / (6 * n)
            rows.append(
                [n, budget, (1.8 + 1800.0 / d**0.36) * np.exp(0.001 * rng.standard_normal())]
            )
    points = load_points(write_csv(tmp_path / "d_only.csv", ["N", "C", "loss"], rows))
    report = analyse(points, FitOptions(bootstrap=20, show_progress=False))
    check = report.grade["checks"]["identifiable"]
    assert check["term_shares"]["alpha"] < 1e-3 <= check["term_shares"]["beta"]
    assert not check["ok"] and "the N term is at most" in check["detail"]
    assert "alpha is not identified" in " ".join(report.grade["reasons"])


def test_bootstrap_worker_processes_give_the_same_estimates(tmp_path):
    points = load_points(isoflop_csv(tmp_path / "points.csv"))  # approach 2 is resampled too
    samples = [
        analyse(
            points, FitOptions(bootstrap=30, workers=workers, show_progress=False)
        ).bootstrap.samples
        for workers in (1, 2)
    ]
    assert "approach2_a" in samples[0]
    assert samples[0].keys() == samples[1].keys()
    for name, values in samples[0].items():
        np.testing.assert_array_equal(values, samples[1][name], err_msg=name)

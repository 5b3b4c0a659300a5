"""The data-constrained law: effective tokens on hand-computed cases, recovery of a known
law with repeated data, and its place in ``analyse`` and fit.json."""

import dataclasses
import json
import math

import numpy as np
import pytest
from test_scaling_loaders import write_csv, write_run_dir

from srt_jax.scaling.advice import advice_markdown, advise
from srt_jax.scaling.analysis import FitOptions, analyse
from srt_jax.scaling.data_constrained import (
    DataConstrainedFit,
    effective_tokens,
    fit_data_constrained,
    repeats_data,
)
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.loaders import load_points
from srt_jax.scaling.points import ScalingPoints
from srt_jax.scaling.report import fit_record

LAW = ChinchillaLaw(E=1.8, A=450.0, B=1800.0, alpha=0.34, beta=0.36)
R_STAR = 15.0
UNIQUE = 2e9


def test_effective_tokens_by_hand():
    assert effective_tokens(5.0, 10.0, 3.0) == pytest.approx(5.0)  # within one epoch: D
    # two epochs: R = 1, D' = U + U R* (1 - e^(-1/R*))
    assert effective_tokens(20.0, 10.0, 3.0) == pytest.approx(10 + 30 * (1 - math.exp(-1 / 3)))
    assert effective_tokens(1e9, 10.0, 3.0) == pytest.approx(10 * (1 + 3))  # the ceiling
    assert effective_tokens(20.0, 10.0, 1e9) == pytest.approx(20.0, rel=1e-6)  # R* -> inf


def known_law_points(noise: float = 0.0) -> ScalingPoints:
    """5 budgets x 6 sizes; most runs repeat the 2e9 unique tokens (up to ~90 epochs)."""
    rng = np.random.default_rng(0)
    rows = []
    for budget in np.geomspace(1e19, 1e21, 5):
        for factor in np.geomspace(0.2, 5.0, 6):
            n = LAW.optimal_params(budget, 6.0) * factor
            d = budget / (6 * n)
            loss = LAW.loss(n, effective_tokens(d, UNIQUE, R_STAR))
            rows.append((n, d, budget, float(loss * np.exp(noise * rng.standard_normal()))))
    n, d, c, loss = map(np.array, zip(*rows, strict=True))
    return ScalingPoints.from_columns(
        [f"r{i}" for i in range(len(n))], n, n, d, c, loss, unique_tokens=[UNIQUE] * len(n)
    )


def test_a_known_decay_of_repeated_tokens_is_recovered():
    points = known_law_points()
    assert (points.tokens / UNIQUE).max() > 20
    fit = fit_data_constrained(
        points.n_total, points.tokens, points.unique_tokens, points.loss, delta=1e-3
    )
    assert fit.identified and fit.r_star == pytest.approx(R_STAR, rel=0.05)
    assert fit.law.alpha == pytest.approx(LAW.alpha, abs=0.02)
    assert fit.law.beta == pytest.approx(LAW.beta, abs=0.02)
    assert pytest.approx(LAW.E, rel=0.02) == fit.law.E


def test_the_optimum_under_scarce_data_moves_to_fewer_tokens():
    points = known_law_points()
    fitted = fit_data_constrained(
        points.n_total, points.tokens, points.unique_tokens, points.loss, delta=1e-3
    )
    fit = DataConstrainedFit(fitted.law, R_STAR)
    compute = 1e22
    plain_d = float(LAW.optimal_tokens(compute, 6.0))
    scarce = fit.optimal(compute, 6.0, UNIQUE)
    assert plain_d / UNIQUE > 50  # the plain law would repeat the data > 50 times
    assert scarce["D_opt"] < plain_d and scarce["epochs"] < plain_d / UNIQUE
    assert scarce["loss"] <= float(fit.loss(compute / (6 * plain_d), plain_d, UNIQUE)) + 1e-12


def test_analyse_fits_it_beside_the_plain_law_and_records_it():
    points = known_law_points(noise=0.002)
    report = analyse(points, FitOptions(bootstrap=0, show_progress=False))
    result = report.data_constrained
    assert result["law"]["R_star"] == pytest.approx(R_STAR, rel=0.3)
    assert result["law"]["objective"] < result["plain_objective"]
    assert result["runs_repeating"] > 0 and result["max_epochs"] > 20
    check = result["extrapolation"]
    assert check["mean_abs_relative_error"] < report.extrapolation["mean_abs_relative_error"]
    assert fit_record(report)["data_constrained"]["law"]["R_star_identified"] is True


def test_runs_that_do_not_repeat_or_do_not_say_are_not_fitted():
    points = known_law_points()
    fresh = ScalingPoints.from_columns(
        points.run_id, points.n_total, points.n_total, points.tokens, points.compute,
        points.loss, unique_tokens=points.tokens * 2,
    )  # fmt: skip
    assert "no run repeats" in repeats_data(fresh)
    unknown = ScalingPoints.from_columns(
        points.run_id, points.n_total, points.n_total, points.tokens, points.compute, points.loss
    )
    assert "do not record" in repeats_data(unknown)
    report = analyse(unknown, FitOptions(bootstrap=0, show_progress=False))
    assert report.data_constrained is None and "data_constrained" in report.not_applicable


def test_advise_discounts_repeats_with_the_fitted_law():
    record = fit_record(analyse(known_law_points(), FitOptions(bootstrap=0, show_progress=False)))
    advice = advise(record, 1e22, unique_tokens=UNIQUE)
    constrained = advice["data_constrained"]
    assert constrained["R_star"] == pytest.approx(R_STAR, rel=0.05)
    assert constrained["optimal"]["epochs"] < advice["data"]["epochs"]
    assert constrained["optimal"]["loss"] <= constrained["loss_at_plain_allocation"]
    text = advice_markdown(advice, "fit.json")
    assert "Data-constrained law (R* = 15" in text
    assert "data_constrained" not in advise(record, 1e22, unique_tokens=1e15)  # one epoch


def test_loaders_read_the_unique_tokens_column_and_summary_key(tmp_path):
    rows = [[f"r{i}", 1e6 * (i + 1), 1e8, 4e14 * (i + 1), 3.0 - 0.1 * i, 5e7] for i in range(6)]
    header = ["run_id", "N", "D", "C", "loss", "U"]
    points = load_points(write_csv(tmp_path / "t.csv", header, rows))
    assert np.allclose(points.unique_tokens, 5e7) and "U" not in points.metrics
    export = ["status", "N_non_embedding", "N_embedding", "ndcg@10"]
    rows = [[*row[:5], "done", row[1], 0.0, 0.1, row[5]] for row in rows]
    table = write_csv(tmp_path / "runs.csv", [*header[:5], *export, "U"], rows)
    points = load_points(table, fmt="export")
    assert np.allclose(points.unique_tokens, 5e7) and set(points.metrics) == {"ndcg@10"}
    run = write_run_dir(tmp_path / "runs", "a", 1e6, 1e8, 3.0)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "unique_train_tokens": 4e7}))
    write_run_dir(tmp_path / "runs", "b", 2e6, 1e8, 2.9)  # an older run: no such key
    points = load_points(tmp_path / "runs")
    assert points.unique_tokens[0] == 4e7 and np.isnan(points.unique_tokens[1])
    assert "1 run(s) do not record" in repeats_data(points)


def test_one_repetition_count_cannot_identify_r_star_and_advise_does_not_use_it():
    points = known_law_points()  # as the SRT sweep: every run reads its data 50 times
    same = dataclasses.replace(points, unique_tokens=points.tokens / 50)
    record = fit_record(analyse(same, FitOptions(bootstrap=0, show_progress=False)))
    law = record["data_constrained"]["law"]
    assert law["R_star_identified"] is False and "only rescales B" in law["R_star_reason"]
    advice = advise(record, 1e22, unique_tokens=UNIQUE)
    assert advice["data_constrained"]["used"] is False
    assert "not identified" in advice["data_constrained"]["reason"]
    assert "Data-constrained law not used" in advice_markdown(advice, "fit.json")

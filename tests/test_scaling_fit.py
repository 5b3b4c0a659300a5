"""Approach 3 and the law algebra: golden Chinchilla refit, pitfall, known-answer recovery."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from srt_jax.errors import DataError
from srt_jax.scaling import warm_start as warm_start_module
from srt_jax.scaling.approach3 import fit_approach3, inner_fit
from srt_jax.scaling.bootstrap import bootstrap_runs
from srt_jax.scaling.laws import ChinchillaLaw, PowerLaw, compute_law_loss, kaplan_loss
from srt_jax.scaling.lbfgs import minimize_huber
from srt_jax.scaling.loaders import ColumnNames, load_points
from srt_jax.scaling.objective import (
    chinchilla_residuals,
    compute_law_residuals,
    huber,
    huber_objective,
    kaplan_residuals,
)
from srt_jax.scaling.points import ScalingPoints
from srt_jax.scaling.warm_start import (
    CHECK_RESAMPLES,
    MIN_BOOTSTRAP,
    OBJECTIVE_TOLERANCE,
    warm_start,
)

DATA = Path(__file__).resolve().parent / "data"  # golden files, see tests/data/README.md
CHINCHILLA_CSV = DATA / "chinchilla_svg_extracted.csv"
REFERENCE_JSON = DATA / "chinchilla_refit_reference.json"
TRUTH = ChinchillaLaw(E=1.8, A=450.0, B=1800.0, alpha=0.34, beta=0.36)


def chinchilla_points() -> ScalingPoints:
    """The 240-point fit set of Epoch AI: all rows but the 5 with the highest loss."""
    points = load_points(CHINCHILLA_CSV, columns=ColumnNames(n="Model Size", c="Training FLOP"))
    return points.without_highest_loss(5)


def synthetic_points(seed: int, sigma: float) -> ScalingPoints:
    """8 sizes x 6 token counts from TRUTH, loss times exp(sigma * standard normal)."""
    n, d = (g.ravel() for g in np.meshgrid(np.logspace(7, 9.5, 8), np.logspace(8.5, 11, 6)))
    rng = np.random.default_rng(seed)
    loss = TRUTH.loss(n, d) * np.exp(sigma * rng.standard_normal(n.size))
    run_id = [f"run{i}" for i in range(n.size)]
    return ScalingPoints.from_columns(run_id, n, n, d, 6 * n * d, loss, source="synthetic")


def test_golden_chinchilla_refit():
    points = chinchilla_points()
    assert len(points) == 240
    fit = fit_approach3(points.n_total, points.tokens, points.loss, delta=1e-3)
    law = fit.law
    assert law.alpha == pytest.approx(0.3473, abs=0.005)
    assert law.beta == pytest.approx(0.367, abs=0.01)
    assert abs(law.E - 1.817) <= 0.005
    assert fit.objective == pytest.approx(1.0183e-3, rel=0.01)
    reference = json.loads(REFERENCE_JSON.read_text())["epoch2024_grid_sum_huber"]
    assert law.A / reference["A"] == pytest.approx(1.0, abs=0.1)
    assert law.B / reference["B"] == pytest.approx(1.0, abs=0.2)
    assert fit.converged
    assert fit.convergence()["exponents_at_bound"] == []


def test_mean_objective_stops_next_to_its_start():
    """The pitfall: scipy's default L-BFGS-B on the MEAN Huber loss quits near the start.

    Its gradient is the summed one divided by 240, under the default pgtol of 1e-5 almost
    at once; from the same start, the summed objective with explicit tolerances goes on to
    the optimum. The stop point is the one in the reference JSON's premature_stop_demo.
    """
    points = chinchilla_points()
    residual_fn = chinchilla_residuals(
        np.log(points.n_total), np.log(points.tokens), np.log(points.loss)
    )
    start = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28).theta
    early = minimize_huber(residual_fn, start, 1e-3, reduction="mean", options={})
    stuck = ChinchillaLaw.from_theta(early.theta)
    assert early.iterations <= 15
    assert "PROJECTED GRADIENT" in early.message
    assert abs(stuck.E - 1.6986) <= 1e-3
    assert stuck.alpha == pytest.approx(0.3387, abs=1e-3)
    assert stuck.beta == pytest.approx(0.2853, abs=1e-3)
    summed_at_stop, summed_grad = huber_objective(residual_fn, early.theta, 1e-3)
    assert np.abs(summed_grad).max() > 1e-5 > early.grad_norm  # the sum is not flat there
    assert summed_at_stop > 1.1 * 1.0183e-3

    full = minimize_huber(residual_fn, start, 1e-3, reduction="sum")
    assert full.objective == pytest.approx(1.0183e-3, rel=0.01)
    assert ChinchillaLaw.from_theta(full.theta).alpha == pytest.approx(0.3473, abs=0.005)


def test_noise_free_synthetic_points_are_recovered_exactly():
    points = synthetic_points(seed=0, sigma=0.0)
    law = fit_approach3(points.n_total, points.tokens, points.loss).law
    np.testing.assert_allclose(law.theta, TRUTH.theta, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_synthetic_points_are_recovered_within_stated_bounds(seed):
    """48 points, 0.5% multiplicative noise: exponents within 0.035, E within 0.1.

    Justification: over 100 other noise seeds (100-199) at 0.5% noise the fitted alpha,
    beta and E had standard deviations 0.0076, 0.0081 and 0.021 (largest deviations 0.026,
    0.024, 0.067); the bounds are about 4 standard deviations.
    """
    points = synthetic_points(seed=seed, sigma=0.005)
    law = fit_approach3(points.n_total, points.tokens, points.loss).law
    assert law.alpha == pytest.approx(TRUTH.alpha, abs=0.035)
    assert law.beta == pytest.approx(TRUTH.beta, abs=0.035)
    assert abs(law.E - TRUTH.E) <= 0.1


def test_inner_problem_matches_lbfgs_over_e_a_b():
    """For fixed exponents the projected (E, A, B) is the optimum of the 3-parameter fit."""
    points = synthetic_points(seed=4, sigma=0.01)
    logs = np.log(points.n_total), np.log(points.tokens), np.log(points.loss)
    alpha, beta = np.array([0.3, 0.5]), np.array([0.4, 0.25])
    _, objective = inner_fit(alpha, beta, *logs, 1e-3, max_iter=200)
    residual_fn = chinchilla_residuals(*logs)
    for g in range(2):
        bounds = [(None, None)] * 3 + [(alpha[g], alpha[g]), (beta[g], beta[g])]
        start = np.array([0.0, 5.0, 5.0, alpha[g], beta[g]])
        best = minimize_huber(residual_fn, start, 1e-3, bounds=bounds)
        assert objective[g] <= best.objective * (1 + 1e-8)
        assert objective[g] == pytest.approx(best.objective, rel=1e-6)


@pytest.mark.parametrize(
    ("make", "theta"),
    [
        (lambda lx, ly, ll: chinchilla_residuals(lx, ly, ll), [0.5, 6.0, 7.0, 0.3, 0.35]),
        (lambda lx, ly, ll: compute_law_residuals(lx, ll), [0.5, 8.0, 0.2]),
        (lambda lx, ly, ll: kaplan_residuals(lx, ly, ll), [30.0, 31.0, 0.08, 0.1]),
    ],
)
def test_analytic_gradients_match_finite_differences(make, theta):
    rng = np.random.default_rng(0)
    log_x, log_y = rng.uniform(15, 22, 30), rng.uniform(18, 25, 30)
    log_loss = rng.uniform(0.7, 1.2, 30)
    residual_fn = make(log_x, log_y, log_loss)
    theta = np.asarray(theta)
    _, jac = residual_fn(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        numeric = (residual_fn(theta + step)[0] - residual_fn(theta - step)[0]) / 2e-6
        np.testing.assert_allclose(jac[:, i], numeric, rtol=1e-5, atol=1e-8)


def test_huber_is_quadratic_inside_and_linear_outside():
    r = np.array([-0.01, -1e-3, 5e-4, 0.0, 2e-3])
    expected = [1e-3 * (0.01 - 5e-4), 0.5e-6, 0.5 * 25e-8, 0.0, 1e-3 * (2e-3 - 5e-4)]
    np.testing.assert_allclose(huber(r, 1e-3), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("fit_key", "derived_key"),
    [
        ("hoffmann2022_reported_rounded", "hoffmann_rounded"),
        ("hoffmann2022_unrounded_tex", "hoffmann_unrounded"),
        ("epoch2024_huber_mle_point", "epoch_mle"),
    ],
)
def test_compute_optimal_allocation_reproduces_reference(fit_key, derived_key):
    reference = json.loads(REFERENCE_JSON.read_text())
    params = reference[fit_key]
    law = ChinchillaLaw(params["E"], params["A"], params["B"], params["alpha"], params["beta"])
    derived = reference["derived_at_chinchilla_compute_5.88e23"][derived_key]
    n_opt, d_opt = law.optimal_params(5.88e23, 6.0), law.optimal_tokens(5.88e23, 6.0)
    assert n_opt == pytest.approx(derived["N_opt"], rel=5e-3)
    assert d_opt == pytest.approx(derived["D_opt"], rel=5e-3)
    assert d_opt / n_opt == pytest.approx(derived["D_over_N"], rel=5e-3)


def test_allocation_minimises_the_law_on_the_compute_budget():
    """N*(C) is the argmin of L(N, C/(kN)); N* D* k = C; exponents a + b = 1."""
    k, compute = 6.0, 1e21
    n_grid = np.geomspace(1e6, 1e13, 200001)
    best = n_grid[np.argmin(TRUTH.loss(n_grid, compute / (k * n_grid)))]
    n_opt = TRUTH.optimal_params(compute, k)
    assert n_opt == pytest.approx(best, rel=1e-3)
    assert n_opt * TRUTH.optimal_tokens(compute, k) * k == pytest.approx(compute)
    assert TRUTH.a + TRUTH.b == pytest.approx(1.0)
    assert TRUTH.frontier_loss(compute, k) == pytest.approx(
        TRUTH.loss(best, compute / (k * best)), rel=1e-9
    )


def test_other_law_forms_by_hand():
    assert compute_law_loss(np.array([100.0]), 1.0, 2.0, 0.5)[0] == pytest.approx(1.2)
    # ((N_c/N)^(aN/aD) + D_c/D)^aD with N_c/N = 4, aN/aD = 0.5, D_c/D = 2, aD = 0.5 -> 2
    assert kaplan_loss(1.0, 1.0, 4.0, 2.0, 0.25, 0.5) == pytest.approx(2.0)
    law = PowerLaw.fit(np.array([1.0, 10.0, 100.0]), 3.0 * np.array([1.0, 10.0, 100.0]) ** 0.4)
    assert (law.coefficient, law.exponent) == (pytest.approx(3.0), pytest.approx(0.4))


def test_bootstrap_intervals_cover_the_truth():
    """50 run-resamples of noisy synthetic points: 95% intervals contain the true values."""
    points = synthetic_points(seed=5, sigma=0.01)

    def estimator(sample):
        law = fit_approach3(sample.n_total, sample.tokens, sample.loss).law
        return {"alpha": law.alpha, "beta": law.beta, "E": law.E, "a": law.a}

    result = bootstrap_runs(points, estimator, n_resamples=50, seed=0, show_progress=False)
    for name, true in (("alpha", 0.34), ("beta", 0.36), ("E", 1.8), ("a", TRUTH.a)):
        lo, hi = result.interval(name)
        assert lo < true < hi, (name, lo, hi)
        assert hi - lo < 0.4 * max(true, 1.0)  # informative, not a blanket interval
    assert result.summary()["alpha"]["failed"] == 0


@pytest.mark.parametrize("points", [chinchilla_points(), synthetic_points(seed=5, sigma=0.01)])
def test_a_refit_from_the_full_fit_equals_a_full_search(points):
    """The bootstrap's refits start from the law of all points: on 15 resamples each reaches
    the objective and exponents of a grid + exponent search + polish from scratch."""
    start = fit_approach3(points.n_total, points.tokens, points.loss).law
    rng = np.random.default_rng(0)
    for _ in range(15):
        sample = points.take(rng.integers(0, len(points), len(points)))
        args = (sample.n_total, sample.tokens, sample.loss)
        refit, search = fit_approach3(*args, start=start), fit_approach3(*args)
        assert refit.started_from == start and refit.profile is None
        assert search.started_from is None
        assert refit.objective <= search.objective * (1 + 1e-9)
        assert refit.law.alpha == pytest.approx(search.law.alpha, abs=1e-4)
        assert refit.law.beta == pytest.approx(search.law.beta, abs=1e-4)
        assert "started_from" in refit.convergence() and "grid_best" not in refit.convergence()


def test_a_refit_whose_polish_ends_on_a_bound_searches_from_scratch():
    points = synthetic_points(seed=5, sigma=0.01)
    args = (points.n_total, points.tokens, points.loss)
    bad_start = ChinchillaLaw(E=1.8, A=400.0, B=400.0, alpha=4.0, beta=4.0)
    fit = fit_approach3(*args, start=bad_start)
    assert fit.started_from is None and fit.profile is not None
    assert fit.law.alpha == pytest.approx(fit_approach3(*args).law.alpha)
    zero_start = ChinchillaLaw(E=0.0, A=400.0, B=400.0, alpha=0.3, beta=0.3)
    assert fit_approach3(*args, start=zero_start).started_from is None


def test_bootstrap_resamples_whole_runs():
    points = synthetic_points(seed=6, sigma=0.0)
    seen = []

    def estimator(sample):
        seen.append(sample)
        return {"x": 1.0}

    bootstrap_runs(points, estimator, n_resamples=5, seed=1, show_progress=False)
    by_id = {r: i for i, r in enumerate(points.run_id)}
    for sample in seen:
        assert len(sample) == len(points)
        rows = np.array([by_id[r] for r in sample.run_id])
        np.testing.assert_array_equal(sample.loss, points.loss[rows])
        np.testing.assert_array_equal(sample.n_total, points.n_total[rows])


def test_approach3_rejects_unusable_points():
    with pytest.raises(DataError, match="at least 5 points"):
        fit_approach3(np.ones(3), np.ones(3), np.ones(3))
    with pytest.raises(DataError, match="finite positive loss"):
        fit_approach3(np.full(6, 1e8), np.full(6, 1e10), np.array([2.0] * 5 + [np.nan]))


def exponents_of(sample: ScalingPoints) -> dict[str, float]:
    """A picklable bootstrap estimator (worker processes are spawned)."""
    law = fit_approach3(sample.n_total, sample.tokens, sample.loss).law
    return {"alpha": law.alpha, "beta": law.beta}


def test_bootstrap_in_worker_processes_equals_one_process():
    points = synthetic_points(seed=5, sigma=0.01)
    one = bootstrap_runs(points, exponents_of, n_resamples=60, seed=3, show_progress=False)
    two = bootstrap_runs(
        points, exponents_of, n_resamples=60, seed=3, workers=2, show_progress=False
    )
    for name in ("alpha", "beta"):
        np.testing.assert_array_equal(one.samples[name], two.samples[name])


def test_bootstrap_refits_start_from_the_point_law_only_when_checked():
    points = chinchilla_points()
    law = fit_approach3(points.n_total, points.tokens, points.loss).law
    checked = warm_start(points, "total", law, bootstrap=1000, delta=1e-3, seed=0)
    assert checked.start == law
    assert (checked.checked, checked.missed) == (CHECK_RESAMPLES, 0)
    assert checked.largest_excess <= OBJECTIVE_TOLERANCE
    assert checked.summary()["refits"] == "from the point law"
    small = warm_start(points, "total", law, bootstrap=MIN_BOOTSTRAP - 1, delta=1e-3, seed=0)
    assert small.start is None and small.checked == 0
    assert small.summary()["refits"] == "full search"
    flat = dataclasses.replace(law, E=0.0)
    assert warm_start(points, "total", flat, bootstrap=1000, delta=1e-3, seed=0).checked == 0


def test_one_refit_short_of_the_search_means_full_searches(monkeypatch):
    """A resample whose best fit lies in another basin: the refit from the point law stops
    short of the full search there, and then no resample starts from the point law."""
    points = synthetic_points(seed=5, sigma=0.01)
    law = fit_approach3(points.n_total, points.tokens, points.loss).law
    calls = {"refits": 0}

    def fit_with_one_short_refit(n, d, loss, *, delta, start=None):
        fit = fit_approach3(n, d, loss, delta=delta, start=start)
        if start is None:
            return fit
        calls["refits"] += 1
        if calls["refits"] == 7:
            return dataclasses.replace(fit, objective=fit.objective * 1.01)
        return fit

    monkeypatch.setattr(warm_start_module, "fit_approach3", fit_with_one_short_refit)
    monkeypatch.setattr(warm_start_module, "CHECK_RESAMPLES", 20)
    checked = warm_start(points, "total", law, bootstrap=1000, delta=1e-3, seed=0)
    assert checked.start is None
    assert (checked.checked, checked.missed) == (20, 1)
    assert checked.largest_excess == pytest.approx(0.01, rel=1e-6)
    assert checked.summary()["refits"] == "full search"

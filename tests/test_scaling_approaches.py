"""Approaches 1 and 2 on synthetic training curves and IsoFLOP points with a known optimum."""

import numpy as np
import pytest

from srt_jax.errors import DataError
from srt_jax.scaling.approach1 import fit_approach1
from srt_jax.scaling.approach2 import fit_approach2
from srt_jax.scaling.frontier import fit_metric_law, pareto_frontier
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.points import Curve

LAW = ChinchillaLaw(E=1.8, A=450.0, B=1800.0, alpha=0.34, beta=0.36)  # a = 0.514
K = 6.0
SIZES = np.logspace(7, 10, 16)


def synthetic_curves(max_compute: float = 1e22) -> tuple[list[Curve], np.ndarray]:
    """One run per size, evaluated at 40 log-spaced token counts up to ``max_compute``."""
    curves = []
    for n in SIZES:
        tokens = np.geomspace(1e8, max_compute / (K * n), 40)
        curves.append(
            Curve(
                step=np.arange(40.0), tokens=tokens, flops=K * n * tokens, loss=LAW.loss(n, tokens)
            )
        )
    return curves, SIZES.copy()


def test_approach1_envelope_recovers_the_allocation_exponents():
    """With 16 sizes 0.2 decades apart the envelope's N is within a factor 1.26 of N*.

    Over the 6 decades of compute the envelope spans, that bounds the exponent error by
    about 2 log10(1.26) / 6 = 0.03, so a and b must be within 0.04 of the truth.
    """
    curves, n = synthetic_curves()
    result = fit_approach1(curves, n, np.array([f"r{i}" for i in range(n.size)]), smooth=1)
    assert result.n_law.exponent == pytest.approx(LAW.a, abs=0.04)
    assert result.d_law.exponent == pytest.approx(LAW.b, abs=0.04)
    ratio = result.n_opt / LAW.optimal_params(result.compute, K)
    inside = (result.n_opt > SIZES[0]) & (result.n_opt < SIZES[-1])
    assert np.all(np.abs(np.log10(ratio[inside])) <= 0.1 + 1e-9)


def test_approach1_needs_curves_and_a_trend():
    with pytest.raises(DataError, match="at least 2 runs"):
        fit_approach1([None, None], np.ones(2), np.array(["a", "b"]))
    curves, _ = synthetic_curves()
    with pytest.raises(DataError, match="one model size"):
        fit_approach1(curves[:2], np.full(2, 1e8), np.array(["a", "b"]))


def test_approach2_isoflop_minima_from_curves():
    """Parabola vertices track N*(C) at 4 budgets; the budget beyond the sizes is flagged.

    Each parabola is fitted within 1 decade of the lowest loss, where L(N, C/(kN)) in
    log N is nearly quadratic: its vertex (and the spline minimum) lands within 5% of
    N*(C) (measured: within 1.5%), so the exponent is within 0.01 of beta / (alpha + beta).
    """
    curves, n = synthetic_curves()
    budgets = (1e18, 1e19, 1e20, 1e21, 1e22)
    result = fit_approach2(
        n, np.full(n.size, 1e22), LAW.loss(n, 1e22 / (K * n)), curves, K, budgets=budgets
    )
    by_budget = {p.compute: p for p in result.profiles}
    assert set(by_budget) == set(budgets)
    assert by_budget[1e22].flag  # N*(1e22) ~ 1.7e10 lies beyond the largest size (1e10)
    trusted = [p for p in result.profiles if p.trusted]
    assert len(trusted) >= 3
    for profile in trusted:
        optimum = LAW.optimal_params(profile.compute, K)
        assert profile.n_opt == pytest.approx(optimum, rel=0.05)
        assert profile.n_opt_spline == pytest.approx(optimum, rel=0.05)
    assert result.n_law.exponent == pytest.approx(LAW.a, abs=0.01)
    assert result.d_law.exponent == pytest.approx(1.0 - result.n_law.exponent)


def test_approach2_groups_final_points_without_curves():
    budgets = np.array([1e19, 1e20, 1e21])
    n, c = [], []
    for budget in budgets:
        centre = LAW.optimal_params(budget, K)
        for factor in np.geomspace(0.2, 5.0, 7):
            n.append(centre * factor)
            c.append(budget * (1 + 0.01 * factor))  # within 0.05 decades: one group
    n, c = np.array(n), np.array(c)
    result = fit_approach2(n, c, LAW.loss(n, c / (K * n)), [None] * n.size, K)
    assert not result.from_curves
    assert len(result.profiles) == 3
    assert all(p.trusted for p in result.profiles)
    assert result.n_law.exponent == pytest.approx(LAW.a, abs=0.03)


def test_approach2_flags_a_downward_parabola_and_needs_sizes():
    n = np.array([1e7, 1e8, 1e9, 1e10])
    loss = np.array([2.0, 2.5, 2.5, 2.0])
    result = fit_approach2(n, np.full(4, 1e20), loss, [None] * 4, K)
    assert result.profiles[0].flag == "parabola opens downwards"
    assert result.n_law is None
    with pytest.raises(DataError, match="4 or more model sizes"):
        fit_approach2(n[:3], np.full(3, 1e20), loss[:3], [None] * 3, K)


def test_frontier_and_metric_law():
    compute = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    loss = np.array([5.0, 6.0, 4.0, 4.5, 3.0])
    np.testing.assert_array_equal(pareto_frontier(compute, loss, lower_is_better=True), [0, 2, 4])
    ndcg = np.array([0.1, 0.05, 0.2, np.nan, 0.3])
    np.testing.assert_array_equal(pareto_frontier(compute, ndcg, lower_is_better=False), [0, 2, 4])
    c = np.geomspace(1e15, 1e19, 6)
    law = fit_metric_law(c, 0.01 + 0.002 * np.log(c))
    assert (law["a"], law["b"], law["r2"]) == (
        pytest.approx(0.01),
        pytest.approx(0.002),
        pytest.approx(1.0),
    )

"""What an unsupported fit's data would need (srt_jax/scaling/needs.py), by hand."""

import numpy as np

from srt_jax.scaling.needs import data_needs

LIMITS = {"max_width": 1.0, "min_share": 1e-3, "factor": 10.0, "min_fit_runs": 6}


def checks(identifiable=True, extrapolates=True, **evidence):
    return {
        "converged": {"ok": True},
        "identifiable": {"ok": identifiable, **evidence},
        "extrapolates": {"ok": extrapolates},
    }


def runs(count=8):
    """``count`` runs: N from 1e6 to 1e7 (a factor 10), D 1e8, budgets 1e12 ... 1e15."""
    return {
        "n": np.geomspace(1e6, 1e7, count),
        "tokens": np.full(count, 1e8),
        "compute": np.geomspace(1e12, 1e15, count),
    }


def test_a_supported_fit_needs_nothing():
    assert data_needs(checks(), **runs(), unique_tokens=None, **LIMITS) == []


def test_a_wide_exponent_interval_needs_the_square_of_its_excess_in_runs():
    found = data_needs(
        checks(False, relative_widths={"alpha": 3.0, "beta": 0.5}, term_shares={}),
        **runs(),
        unique_tokens=None,
        **LIMITS,
    )
    assert found == [
        "alpha's interval is 3.0x wider than allowed: about 9x as many runs over the same "
        "models, or models spanning a factor 1e+03 in N instead of 10"
    ]


def test_an_absent_term_needs_runs_where_it_is_larger():
    (found,) = data_needs(
        checks(False, relative_widths={}, term_shares={"alpha": 0.1, "beta": 2e-4}),
        **runs(),
        unique_tokens=None,
        **LIMITS,
    )
    assert found.startswith("the D term never reaches 0.1% of the loss: runs with fewer tokens")
    assert "smallest D = 1e+08" in found


def test_the_extrapolation_check_needs_its_small_budget_runs():
    # 8 budgets 10^(12 + 3k/7): 5 of them at most C_max / 10 = 1e14, one short of 6
    (missing,) = data_needs(checks(extrapolates=False), **runs(8), unique_tokens=None, **LIMITS)
    assert missing == (
        "1 more run at budgets <= C_max / 10 = 1e+14 FLOPs (the extrapolation check refits "
        "on at least 6; there are 5)"
    )
    # 20 budgets 10^(12 + 3k/19): 13 at most 1e14, enough runs, yet the check missed
    (missing,) = data_needs(checks(extrapolates=False), **runs(20), unique_tokens=None, **LIMITS)
    assert missing == (
        "runs at more budgets below C_max / 10: the law fitted to the 13 runs at 13 budgets "
        "there misses the largest budget"
    )


def test_repeated_data_needs_unique_tokens_for_four_epochs():
    unique = np.full(8, 1e7)  # every run trains 1e8 tokens: 10 epochs
    (found,) = data_needs(checks(), **runs(), unique_tokens=unique, **LIMITS)
    assert found == (
        "the runs repeat their data up to 10.0 epochs: keeping every run within 4 epochs "
        "needs 2.5e+07 unique target tokens, 2.5x the 1e+07 the runs had"
    )
    assert data_needs(checks(), **runs(), unique_tokens=np.full(8, 5e7), **LIMITS) == []
    assert data_needs(checks(), **runs(), unique_tokens=np.full(8, np.nan), **LIMITS) == []

"""What the data would need for a fit that the grade does not support: rough, stated sizes.

Each failed check of :func:`srt_jax.scaling.validation.grade` maps to what more runs or more
data would fix it, sized by the usual scalings:

- an exponent whose bootstrap interval is ``w`` times the widest allowed: interval widths
  fall about as 1/sqrt(runs) and as 1/(range of log N) (log D for beta), so about w^2 times
  the runs over the same sizes, or sizes spanning the present factor raised to the power w;
- a term of the law that never matters (A / N^alpha or B / D^beta below the grade's share
  of the loss): runs below the smallest N (fewer tokens than the smallest D) at the same
  budgets, where that term is larger;
- an extrapolation check without enough runs at budgets <= C_max / factor: how many are
  missing; one that misses by more than the limit: runs at more budgets below the cut;
- runs that repeat their data beyond :data:`FRESH_EPOCHS` epochs (Muennighoff et al. 2023:
  up to about 4 epochs repeated data is worth nearly as much as fresh): the unique target
  tokens that would keep the largest run within that many epochs, against those available.

The sizes are orders of magnitude to plan a sweep with, not promises; the report says so.
"""

from __future__ import annotations

import numpy as np

FRESH_EPOCHS = 4.0
"""Epochs up to which repeated data is about as good as fresh (Muennighoff et al. 2023)."""


def data_needs(
    checks: dict,
    *,
    n: np.ndarray,
    tokens: np.ndarray,
    compute: np.ndarray,
    unique_tokens: np.ndarray | None,
    max_width: float,
    min_share: float,
    factor: float,
    min_fit_runs: int,
) -> list[str]:
    """Sentences saying what would fix each failed check of ``checks`` (``grade``'s), and
    the unique data the runs would need; [] when nothing is missing.

    Args:
      checks: ``grade(...)["checks"]``, whose ``identifiable`` entry may carry
        ``relative_widths`` and ``term_shares``.
      n, tokens, compute, unique_tokens: the fitted runs' N, D, C [runs] and unique target
        tokens [runs] (NaN or None where unknown).
      max_width, min_share, factor, min_fit_runs: the grade's limits.
    """
    needs = []
    identifiable = checks["identifiable"]
    ranges = {"alpha": ("N", "models", n), "beta": ("D", "token counts", tokens)}
    if not identifiable["ok"]:
        for name, width in identifiable.get("relative_widths", {}).items():
            if width > max_width:
                needs.append(_narrower(name, width / max_width, *ranges[name]))
        for name, share in identifiable.get("term_shares", {}).items():
            if share < min_share:
                symbol, _, values = ranges[name]
                needs.append(
                    f"the {symbol} term never reaches {min_share:.1%} of the loss: runs with "
                    f"{'smaller models' if name == 'alpha' else 'fewer tokens'} than the "
                    f"smallest {symbol} = {values.min():.3g}, where that term is larger"
                )
    if not checks["extrapolates"]["ok"]:
        cut = compute.max() / factor
        small = compute[compute <= cut]
        if small.size < min_fit_runs:
            lacking = min_fit_runs - small.size
            needs.append(
                f"{lacking} more run{'s' if lacking > 1 else ''} at budgets <= C_max / "
                f"{factor:g} = {cut:.3g} FLOPs (the extrapolation check refits on at least "
                f"{min_fit_runs}; there are {small.size})"
            )
        else:
            budgets = len(np.unique(np.round(np.log10(small), 1)))
            needs.append(
                f"runs at more budgets below C_max / {factor:g}: the law fitted to the "
                f"{small.size} runs at {budgets} budgets there misses the largest budget"
            )
    if unique_tokens is not None:
        needs.extend(_fresh_data(tokens, unique_tokens))
    return needs


def _narrower(name: str, ratio: float, symbol: str, what: str, values: np.ndarray) -> str:
    """How many more runs, or how much wider a range, would make ``name``'s interval
    ``ratio`` times narrower."""
    span = float(values.max() / values.min())
    wider = span**ratio
    return (
        f"{name}'s interval is {ratio:.1f}x wider than allowed: about {ratio**2:,.0f}x as many "
        f"runs over the same {what}, or {what} spanning a factor {wider:.3g} in {symbol} "
        f"instead of {span:.3g}"
    )


def _fresh_data(tokens: np.ndarray, unique_tokens: np.ndarray) -> list[str]:
    """The unique tokens that would keep every run within FRESH_EPOCHS epochs, if more are
    needed than the runs had."""
    known = np.isfinite(unique_tokens) & (unique_tokens > 0)
    if not known.any():
        return []
    epochs = tokens[known] / unique_tokens[known]
    if epochs.max() <= FRESH_EPOCHS:
        return []
    needed = float(tokens[known].max() / FRESH_EPOCHS)
    available = float(np.max(unique_tokens[known]))
    return [
        f"the runs repeat their data up to {epochs.max():.1f} epochs: keeping every run "
        f"within {FRESH_EPOCHS:g} epochs needs {needed:.3g} unique target tokens, "
        f"{needed / available:.1f}x the {available:.3g} the runs had"
    ]

"""``srt-jax advise``: what to train for a compute budget, from a supported fit.

Given a fit (``fit.json`` of ``srt-jax fit``) and a budget C in FLOPs, the advice is the
law's compute-optimal allocation at C, with 95% intervals from the fit's bootstrap samples of
the law (:func:`srt_jax.scaling.predict.allocation_bands`):

- ``N_opt`` parameters and ``D_opt`` trained target tokens (``C = k N D``), and the loss
  ``L*`` expected there (nats per target);
- each ranking metric's expectation from the fit's metric laws on the compute frontier: the
  saturating ``M_inf - A (C/C0)^-alpha`` where identified, else the trend
  ``m(C) = a + b ln C`` clipped to [0, 1] (no interval either way);
- given the unique target tokens the data hold, the epochs ``D_opt`` means; beyond one epoch
  the fit's data-constrained law (:mod:`srt_jax.scaling.data_constrained`), where the fit
  has one, gives the loss at that allocation with repeated tokens discounted and the
  allocation that is optimal when only those unique tokens exist; without one, the advice
  says that repeated tokens are worth less (Muennighoff et al. 2023: little loss up to
  about 4 epochs, rapidly less beyond);
- given a ladder of shapes with their parameter counts, the shape nearest ``N_opt`` (in
  log N) and the tokens the budget buys for it.

A fit that its data do not support (``fit.json``'s ``supported``, see
:mod:`srt_jax.scaling.validation`) is refused with its reasons, and so is a budget more than
:data:`MAX_DECADES_BEYOND` decades beyond the largest run or below the smallest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from srt_jax.errors import DataError
from srt_jax.scaling.data_constrained import DataConstrainedFit
from srt_jax.scaling.files import read_json
from srt_jax.scaling.frontier import law_values
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.predict import allocation_bands

MAX_DECADES_BEYOND = 3.0
REPEAT_SAFE_EPOCHS = 4.0
"""Up to about this many epochs, repeated tokens are worth nearly as much as fresh ones."""
LAW_KEYS = ("E", "A", "B", "alpha", "beta")


def read_fit(source: Path) -> tuple[Path, dict[str, Any]]:
    """The path and content of a fit record: ``source`` itself or ``source/fit.json``."""
    path = Path(source)
    path = path / "fit.json" if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"{source}: no fit.json (run srt-jax fit first)")
    record = read_json(path)
    missing = [
        key for key in (*LAW_KEYS, "supported", "flops_per_param_token") if key not in record
    ]
    if missing:
        raise DataError(
            f"{path}: not a fit record of this srt-jax version (missing {', '.join(missing)}); "
            "fit again with srt-jax fit"
        )
    return path, record


def check_advisable(path: Path, record: Mapping[str, Any], compute: float) -> None:
    """Refuse an unsupported fit or a budget outside the range the runs can speak for."""
    if not record["supported"]:
        reasons = "; ".join(record["grade"]["reasons"])
        needs = record["grade"].get("needs")
        needed = f". What the data would need: {'; '.join(needs)}" if needs else ""
        raise DataError(
            f"{path}: the fit is not supported by its data, so no advice: {reasons}{needed}"
        )
    runs = [run["C"] for run in record["points_used"]["runs"]]
    low, high = min(runs), max(runs)
    if not math.isfinite(compute) or compute < low:
        raise DataError(
            f"budget {compute:.3g} FLOPs is below the smallest run of the fit ({low:.3g}): "
            "read those runs instead of a law"
        )
    if compute > high * 10**MAX_DECADES_BEYOND:
        raise DataError(
            f"budget {compute:.3g} FLOPs is more than {MAX_DECADES_BEYOND:g} decades beyond the "
            f"largest run of the fit ({high:.3g}): run a sweep at larger budgets first"
        )


def advise(
    record: Mapping[str, Any],
    compute: float,
    *,
    unique_tokens: float | None = None,
    shapes: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The advice at ``compute`` FLOPs (module docstring), JSON-ready.

    Args:
      record: a supported fit record (:func:`read_fit`).
      compute: the budget, FLOPs.
      unique_tokens: target tokens in one pass over the training data, if known.
      shapes: shape label -> parameter count (the fit's kind of N), if a ladder is given.
    """
    law = ChinchillaLaw(*(float(record[key]) for key in LAW_KEYS))
    k = float(record["flops_per_param_token"]["k"])
    grid = np.array([compute])
    samples = {
        key: np.asarray(values, float)
        for key, values in record["bootstrap"].get("law_samples", {}).items()
    }
    bands = allocation_bands(samples, k, grid) if len(samples) == len(LAW_KEYS) else {}
    values = {
        "N_opt": float(law.optimal_params(compute, k)),
        "D_opt": float(law.optimal_tokens(compute, k)),
        "loss": float(law.frontier_loss(compute, k)),
    }
    advice: dict[str, Any] = {
        "compute": compute,
        "k": k,
        "params_kind": record["params_kind"],
        **values,
        "intervals": {name: [float(bands[name][0][0]), float(bands[name][1][0])] for name in bands},
        "metrics": {
            name: metric_expectation(law_fit, compute)
            for name, law_fit in record["alternatives"].get("metric_laws", {}).items()
        },
        "extrapolation_decades": float(
            np.log10(compute / max(r["C"] for r in record["points_used"]["runs"]))
        ),
        "extrapolation_check": record["grade"]["checks"]["extrapolates"]["detail"],
    }
    if unique_tokens is not None:
        advice["data"] = data_advice(values["D_opt"], unique_tokens)
        constrained = record.get("data_constrained")
        if constrained and advice["data"]["epochs"] > 1:
            advice["data_constrained"] = constrained_advice(
                constrained, values, compute, k, unique_tokens
            )
    if shapes:
        advice["shape"] = nearest_shape(shapes, values["N_opt"], compute, k)
    return advice


def metric_expectation(law_fit: Mapping[str, Any], compute: float) -> dict[str, Any]:
    """A ranking metric at ``compute`` from the fit's metric laws on the compute frontier:
    the saturating law where it is identified, else the log-linear trend clipped to [0, 1]."""
    saturating = law_fit.get("saturating") or {}
    if saturating.get("identified"):
        return {
            "value": float(law_values(saturating["law"], np.array([compute]))[0]),
            "form": "M_inf - A (C/C0)^-alpha on the compute frontier of the runs",
        }
    why = saturating.get("reason", "no saturating law in this fit")
    return {
        "value": float(np.clip(law_fit["a"] + law_fit["b"] * np.log(compute), 0, 1)),
        "form": f"{law_fit['form']} on the compute frontier (saturating law not used: {why})",
    }


def data_advice(d_opt: float, unique_tokens: float) -> dict[str, Any]:
    """How many epochs ``d_opt`` tokens mean over ``unique_tokens``, and what that implies."""
    epochs = d_opt / unique_tokens
    if epochs <= 1:
        note = "the data hold D* without repeating a target"
    elif epochs <= REPEAT_SAFE_EPOCHS:
        note = (
            f"D* repeats the data {epochs:.1f} times; up to about {REPEAT_SAFE_EPOCHS:g} "
            "epochs repeated tokens are worth nearly as much as fresh ones (Muennighoff et "
            "al. 2023), so the advice stands"
        )
    else:
        note = (
            f"D* repeats the data {epochs:.1f} times: beyond about {REPEAT_SAFE_EPOCHS:g} "
            "epochs repeated tokens are worth rapidly less (Muennighoff et al. 2023), so the "
            "law, fitted on runs that did not repeat data this often, is optimistic here: "
            "collect more data, or spend the budget on a larger model with fewer epochs"
        )
    return {"unique_tokens": unique_tokens, "epochs": epochs, "note": note}


def constrained_advice(
    constrained: Mapping[str, Any],
    plain: Mapping[str, float],
    compute: float,
    k: float,
    unique_tokens: float,
) -> dict[str, Any]:
    """What the fit's data-constrained law says about a budget whose D* repeats the data:
    the loss at the plain allocation with repeats discounted, and its own optimum; or, when
    the fit did not identify R*, that it is not used and why."""
    record = constrained["law"]
    if not record["R_star_identified"]:
        why = record.get("R_star_reason", "R* ended at the end of its range")
        return {"used": False, "reason": f"R* is not identified by the runs: {why}"}
    law = DataConstrainedFit.from_record(record)
    at_plain = float(law.loss(plain["N_opt"], plain["D_opt"], unique_tokens))
    return {
        "used": True,
        "R_star": law.r_star,
        "loss_at_plain_allocation": at_plain,
        "optimal": law.optimal(compute, k, unique_tokens),
        "extrapolation": constrained["extrapolation"],
    }


def nearest_shape(
    shapes: Mapping[str, float], n_opt: float, compute: float, k: float
) -> dict[str, Any]:
    """The shape whose parameter count is nearest ``n_opt`` in log N, with its tokens."""
    label = min(shapes, key=lambda name: abs(math.log(shapes[name] / n_opt)))
    params = shapes[label]
    largest = max(shapes.values())
    result = {
        "label": label,
        "params": params,
        "tokens": compute / (k * params),
        "params_vs_optimal": params / n_opt,
    }
    if n_opt > 2 * largest:
        result["note"] = (
            f"N* is {n_opt / largest:.1f}x the ladder's largest shape: extend the ladder"
        )
    return result


def advice_markdown(advice: Mapping[str, Any], source: str) -> str:
    """The advice as a short Markdown page."""
    intervals = advice["intervals"]

    def shown(name: str, value: float, digits: int = 3) -> str:
        lo_hi = intervals.get(name)
        interval = (
            ""
            if lo_hi is None
            else f" (95% interval {lo_hi[0]:.{digits}g} to {lo_hi[1]:.{digits}g})"
        )
        return f"{value:.{digits}g}{interval}"

    lines = [
        f"# Advice for a budget of {advice['compute']:.3g} FLOPs",
        "",
        f"From the fit `{source}` ({advice['params_kind']} parameters; k = {advice['k']:.3g}; "
        f"{advice['extrapolation_decades']:+.1f} decades from its largest run; its "
        f"extrapolation check: {advice['extrapolation_check']}).",
        "",
        f"- Train **N* = {shown('N_opt', advice['N_opt'])} parameters** on "
        f"**D* = {shown('D_opt', advice['D_opt'])} target tokens**.",
        f"- Expected held-out loss: {shown('loss', advice['loss'], 4)} nats per target.",
    ]
    for name, metric in advice["metrics"].items():
        lines.append(f"- Expected {name}: {metric['value']:.4f} ({metric['form']}).")
    if "shape" in advice:
        shape = advice["shape"]
        lines.append(
            f"- Nearest ladder shape: {shape['label']} ({shape['params']:.3g} parameters, "
            f"{shape['params_vs_optimal']:.2f}x N*), trained for {shape['tokens']:.3g} tokens."
            + (f" {shape['note']}." if "note" in shape else "")
        )
    if "data" in advice:
        data = advice["data"]
        lines.append(
            f"- Data: {data['unique_tokens']:.3g} unique target tokens, {data['epochs']:.2f} "
            f"epochs: {data['note']}."
        )
    if "data_constrained" in advice:
        lines.append(_constrained_line(advice["data_constrained"]))
    return "\n".join(lines) + "\n"


def _constrained_line(constrained: Mapping[str, Any]) -> str:
    if not constrained["used"]:
        return f"- Data-constrained law not used: {constrained['reason']}."
    optimal = constrained["optimal"]
    return (
        f"- Data-constrained law (R* = {constrained['R_star']:.3g} repetitions): "
        f"at N*, D* above it predicts {constrained['loss_at_plain_allocation']:.4g} nats; with "
        f"only these unique tokens the optimum is N = {optimal['N_opt']:.3g}, D = "
        f"{optimal['D_opt']:.3g} ({optimal['epochs']:.2f} epochs, worth "
        f"{optimal['effective_tokens']:.3g} fresh tokens), loss {optimal['loss']:.4g}."
    )

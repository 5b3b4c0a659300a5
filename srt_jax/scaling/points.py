"""The table of points a scaling law is fitted to: one row per run, with its curve.

Units: parameters N (total and non-embedding), trained target tokens D, training FLOPs C,
held-out loss in nats per token. Ranking metrics are fractions in [0, 1]. Every loader in
:mod:`srt_jax.scaling.loaders` returns a :class:`ScalingPoints`; every fit reads one.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from srt_jax.errors import DataError

ParamsKind = Literal["total", "non_embedding"]


@dataclass(frozen=True)
class Curve:
    """One run's evaluation curve, ordered by training progress; every array has shape [evals].

    ``tokens`` and ``flops`` are cumulative trained target tokens and training FLOPs at
    each evaluation, ``loss`` the held-out loss there and ``metrics`` ranking metrics.
    """

    step: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    metrics: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {len(a) for a in (self.step, self.tokens, self.flops, self.loss)}
        lengths |= {len(a) for a in self.metrics.values()}
        if len(lengths) != 1:
            raise DataError(f"a curve's arrays differ in length: {sorted(lengths)}")
        for name in ("tokens", "flops"):
            values = np.asarray(getattr(self, name))
            if np.any(np.diff(values) < 0) or not np.all(values > 0):
                raise DataError(f"a curve's {name} must be positive and non-decreasing by step")


@dataclass(frozen=True)
class ScalingPoints:
    """Final results of a set of runs (arrays of shape [runs]) and their curves.

    Attributes:
      run_id: run identifiers (unique per run in the source; a bootstrap sample repeats them).
      n_total, n_non_embedding: parameter counts (NaN where the source has none).
      tokens: trained target tokens D.
      compute: training FLOPs C.
      loss: held-out loss at the end of training (nats/token).
      metrics: ranking metrics at the end of training, name -> [runs].
      unique_tokens: unique target tokens U of each run's training data (one epoch; D / U
        is the epochs trained), NaN where the source does not say; None: no source said.
      curves: per run its :class:`Curve` or None, aligned with the arrays.
      source: where the points came from; notes: what the loader skipped or assumed.
    """

    run_id: np.ndarray
    n_total: np.ndarray
    n_non_embedding: np.ndarray
    tokens: np.ndarray
    compute: np.ndarray
    loss: np.ndarray
    metrics: Mapping[str, np.ndarray] = field(default_factory=dict)
    unique_tokens: np.ndarray | None = None
    curves: tuple[Curve | None, ...] = ()
    source: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        size = len(self.run_id)
        arrays = {
            "n_total": self.n_total,
            "n_non_embedding": self.n_non_embedding,
            "tokens": self.tokens,
            "compute": self.compute,
            "loss": self.loss,
            **{f"metric {name}": v for name, v in self.metrics.items()},
            **({} if self.unique_tokens is None else {"unique_tokens": self.unique_tokens}),
        }
        for name, values in arrays.items():
            if len(values) != size:
                raise DataError(f"{self.source}: column {name} has {len(values)} rows, not {size}")
        if self.curves and len(self.curves) != size:
            raise DataError(f"{self.source}: {len(self.curves)} curves for {size} runs")
        for name in ("tokens", "compute", "loss"):
            bad = ~(np.isfinite(arrays[name]) & (arrays[name] > 0))
            if bad.any():
                runs = ", ".join(str(r) for r in self.run_id[bad][:5])
                raise DataError(
                    f"{self.source}: {name} must be finite and positive; not so for run(s) {runs}"
                )

    @classmethod
    def from_columns(
        cls,
        run_id: Sequence[str],
        n_total: Sequence[float],
        n_non_embedding: Sequence[float],
        tokens: Sequence[float],
        compute: Sequence[float],
        loss: Sequence[float],
        *,
        metrics: Mapping[str, Sequence[float]] | None = None,
        unique_tokens: Sequence[float] | None = None,
        curves: Sequence[Curve | None] = (),
        source: str = "",
        notes: Sequence[str] = (),
    ) -> ScalingPoints:
        """Build from plain sequences (converted to float64 / str arrays); ``unique_tokens``
        is kept only if some run has a value."""
        unique = None if unique_tokens is None else np.asarray(unique_tokens, np.float64)
        if unique is not None and not np.isfinite(unique).any():
            unique = None
        return cls(
            run_id=np.asarray(run_id, dtype=str),
            n_total=np.asarray(n_total, np.float64),
            n_non_embedding=np.asarray(n_non_embedding, np.float64),
            tokens=np.asarray(tokens, np.float64),
            compute=np.asarray(compute, np.float64),
            loss=np.asarray(loss, np.float64),
            metrics={k: np.asarray(v, np.float64) for k, v in (metrics or {}).items()},
            unique_tokens=unique,
            curves=tuple(curves),
            source=source,
            notes=tuple(notes),
        )

    def __len__(self) -> int:
        return len(self.run_id)

    @property
    def has_curves(self) -> bool:
        """Whether at least one run has an evaluation curve."""
        return any(c is not None for c in self.curves)

    def params(self, kind: ParamsKind) -> np.ndarray:
        """Parameter counts N [runs] of the chosen kind; an error if any is missing."""
        values = self.n_total if kind == "total" else self.n_non_embedding
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            runs = ", ".join(str(r) for r in self.run_id[bad][:5])
            raise DataError(
                f"{self.source}: no positive {kind} parameter count for run(s) {runs} "
                f"(choose the other --params kind or add the column)"
            )
        return values

    def flops_per_param_token(self, kind: ParamsKind) -> np.ndarray:
        """C / (N D) per run [runs]: the FLOPs each parameter spends on each trained token."""
        return self.compute / (self.params(kind) * self.tokens)

    def at_best_checkpoint(self) -> ScalingPoints:
        """Each run taken at its lowest-loss evaluation (C, D, loss, metrics from the curve).

        Runs without a curve keep their final values. This is the "best validation
        checkpoint" protocol; the default everywhere else is the end of training.
        """
        tokens, compute, loss = self.tokens.copy(), self.compute.copy(), self.loss.copy()
        metrics = {k: v.copy() for k, v in self.metrics.items()}
        for i, curve in enumerate(self.curves):
            if curve is None:
                continue
            best = int(np.argmin(curve.loss))
            tokens[i], compute[i], loss[i] = curve.tokens[best], curve.flops[best], curve.loss[best]
            for name in metrics.keys() & curve.metrics.keys():
                metrics[name][i] = curve.metrics[name][best]
        return dataclasses.replace(
            self,
            tokens=tokens,
            compute=compute,
            loss=loss,
            metrics=metrics,
            notes=(*self.notes, "each run taken at its lowest-loss evaluation"),
        )

    def without_highest_loss(self, count: int) -> ScalingPoints:
        """All runs but the ``count`` with the highest loss (as Epoch AI's Chinchilla refit)."""
        if count <= 0:
            return self
        if count >= len(self):
            raise DataError(f"{self.source}: cannot drop {count} of {len(self)} runs")
        keep = np.sort(np.argsort(self.loss, kind="stable")[:-count])
        return dataclasses.replace(
            self.take(keep), notes=(*self.notes, f"dropped the {count} highest-loss run(s)")
        )

    def take(self, indices: np.ndarray) -> ScalingPoints:
        """The runs at ``indices`` (repeats allowed: a bootstrap sample), curves included."""
        indices = np.asarray(indices, int)
        return ScalingPoints(
            run_id=self.run_id[indices],
            n_total=self.n_total[indices],
            n_non_embedding=self.n_non_embedding[indices],
            tokens=self.tokens[indices],
            compute=self.compute[indices],
            loss=self.loss[indices],
            metrics={k: v[indices] for k, v in self.metrics.items()},
            unique_tokens=None if self.unique_tokens is None else self.unique_tokens[indices],
            curves=tuple(self.curves[i] for i in indices) if self.curves else (),
            source=self.source,
            notes=self.notes,
        )


def skipped_note(reasons: Counter) -> str:
    """One line for the notes: how many runs a loader skipped, by reason."""
    listing = ", ".join(f"{count} with {reason}" for reason, count in reasons.items())
    return f"skipped {sum(reasons.values())} run(s): {listing}"

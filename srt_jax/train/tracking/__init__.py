"""Experiment trackers: a run's figures also logged to TensorBoard and/or MLflow.

``train.trackers: [tensorboard, mlflow]`` (optional extras ``srt-jax[tensorboard]``,
``srt-jax[mlflow]``; default none). The training loop hands :class:`Trackers` every
``metrics.jsonl`` line it writes and, at the end, the summary; what each tracker makes of
them is in :mod:`.tensorboard_tracker` and :mod:`.mlflow_tracker`, the names and values in
:mod:`.records`. The run directory stays the record: trackers only copy it.

A tracker never fails a run: the first error of a tracker (an unreachable tracking server,
a locked store, a full disk) prints one warning naming it, and the run goes on without
that tracker. A tracker whose package is not installed is a :class:`ConfigError` before the
run starts, naming the extra to install.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from srt_jax.config import RunConfig
from srt_jax.errors import ConfigError, first_line
from srt_jax.train.curves import curves_figure, load_run
from srt_jax.train.run_dir import CONFIG_FILE, SUMMARY_FILE
from srt_jax.train.tracking.records import (
    FinalRecord,
    ScalarStream,
    final_scalars,
    protocol_tags,
    summary_params,
)

PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}
"""Tracker -> the module it needs (installed by the extra of the tracker's name)."""
FIGURE_NAME = "curves"
"""The learning-curve figure a tracked run writes into its directory (PNG and SVG)."""


class Tracker(Protocol):
    """What the run asks of one tracker."""

    name: str

    def log_scalars(self, step: int, values: dict[str, float]) -> None: ...

    def log_final(self, final: FinalRecord) -> None: ...

    def close(self, status: str) -> None: ...


def check_installed(config: RunConfig) -> None:
    """Raise a ConfigError naming the extra of each chosen tracker whose package is missing."""
    for name in config.train.trackers:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(
                f"train.trackers includes {name!r}, but {PACKAGES[name]} is not installed: "
                f"pip install 'srt-jax[{name}]'",
                key="train.trackers",
            )


def _factory(name: str) -> Callable[[RunConfig, Path, str], Tracker]:
    if name == "mlflow":
        from srt_jax.train.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker
    from srt_jax.train.tracking.tensorboard_tracker import TensorBoardTracker

    return TensorBoardTracker


class Trackers:
    """The chosen trackers of one training session (see the module docstring)."""

    def __init__(self, config: RunConfig, run_dir: Path, run_id: str) -> None:
        self.run_dir = run_dir
        self.stream = ScalarStream(config.train.batch_size)
        self.active: list[Tracker] = []
        for name in config.train.trackers:
            tracker = self._guarded(name, lambda n=name: _factory(n)(config, run_dir, run_id))
            if tracker is not None:
                self.active.append(tracker)

    def _guarded(self, name: str, action: Callable[[], Any]) -> Any:
        """``action()``; on an error, warn once and drop tracker ``name``."""
        try:
            return action()
        except Exception as err:  # a tracker must never fail the run
            self.active = [t for t in self.active if t.name != name]
            print(
                f"srt-jax: warning: the {name} tracker failed ({type(err).__name__}: "
                f"{first_line(err)}); the run goes on without it",
                file=sys.stderr,
                flush=True,
            )
            return None

    def record(self, line: dict[str, Any]) -> None:
        """Log one ``metrics.jsonl`` line."""
        if not self.active:
            return
        step, values = self.stream.scalars(line)
        for tracker in list(self.active):
            self._guarded(tracker.name, lambda t=tracker: t.log_scalars(step, values))

    def finish(self, summary: dict[str, Any]) -> None:
        """Log a finished run's final figures, parameters, tags and files, and close."""
        if not self.active:
            return
        figure, _ = curves_figure([load_run(self.run_dir)], self.run_dir, name=FIGURE_NAME)
        final = FinalRecord(
            step=int(summary["steps"]),
            scalars=final_scalars(summary),
            params=summary_params(summary),
            tags=protocol_tags(summary),
            figure=figure,
            artifacts=(self.run_dir / CONFIG_FILE, self.run_dir / SUMMARY_FILE),
        )
        for tracker in list(self.active):
            self._guarded(tracker.name, lambda t=tracker: t.log_final(final))
        self.close("done")

    def close(self, status: str) -> None:
        """Close every tracker, marking its run ``status`` (done, failed, interrupted)."""
        for tracker in list(self.active):
            self._guarded(tracker.name, lambda t=tracker: t.close(status))
        self.active = []

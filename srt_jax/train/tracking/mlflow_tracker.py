"""The MLflow tracker: one MLflow run per srt-jax run, in a local SQLite store by default.

Where: ``train.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///RUN_DIR/mlflow.db`` (a sweep sets ``sqlite:///ROOT/mlflow.db`` for all its runs);
artifacts go where the store's experiment puts them (for a new SQLite store: beside it, in
``mlartifacts/``). The experiment is ``train.tracking_experiment`` (default ``srt-jax``; a
sweep's runs share ``srt-jax sweep NAME``), created when missing.

What: the resolved config as parameters (dotted keys), the run id, dataset and backbone as
tags (``srt_jax.run_id``: how a store written by srt-jax is recognised), every
``metrics.jsonl`` line as metrics at its optimiser step, and at the end the summary's N, D
and C as parameters, the test figures (``test/...``), the protocol as tags
(``protocol.*``), and ``config.yaml``, ``summary.json`` and the learning-curve figure as
artifacts. The MLflow run id is kept in ``RUN_DIR/tracking.json``, so a resumed session
continues the same MLflow run.

An HTTP tracking server is given ``$MLFLOW_HTTP_REQUEST_MAX_RETRIES`` = 2 and
``$MLFLOW_HTTP_REQUEST_TIMEOUT`` = 10 s unless they are set, so an unreachable server costs
the run seconds, not minutes, before it is dropped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from srt_jax.config import RunConfig, flat_dict, to_dict
from srt_jax.data.sources import file_lock
from srt_jax.train.run_dir import write_atomic
from srt_jax.train.tracking.records import FinalRecord

DEFAULT_EXPERIMENT = "srt-jax"
STATE_FILE = "tracking.json"
BATCH_LIMIT = 100
"""Parameters or metrics per ``log_batch`` call (MLflow's limit for parameters)."""


def tracking_uri(config: RunConfig, run_dir: Path) -> str:
    """The tracking URI of a run (see the module docstring)."""
    return (
        config.train.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (SQLAlchemy's form: ``PATH`` relative,
    or absolute when it starts with ``/``); None for any other store."""
    parsed = urlparse(uri)
    return Path(parsed.path[1:]) if parsed.scheme == "sqlite" and parsed.path[1:] else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store while its tables and experiment are
    created (the workers of a sweep open one store at once); no lock for other stores."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    with file_lock(database):
        yield


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), BATCH_LIMIT):
        yield items[start : start + BATCH_LIMIT]


class MlflowTracker:
    """Logs one srt-jax run to MLflow (see the module docstring)."""

    name = "mlflow"

    def __init__(self, config: RunConfig, run_dir: Path, run_id: str) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.run_dir = run_dir
        self.uri = tracking_uri(config, run_dir)
        experiment = config.train.tracking_experiment or DEFAULT_EXPERIMENT
        state_path = run_dir / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        with store_lock(self.uri):  # the client creates a new store's tables
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                database = sqlite_path(self.uri)
                artifacts = None if database is None else database.parent / "mlartifacts"
                experiment_id = self.client.create_experiment(
                    experiment,
                    artifact_location=None if artifacts is None else artifacts.resolve().as_uri(),
                )
        if state.get("uri") == self.uri and state.get("experiment") == experiment:
            self.mlflow_run = state["mlflow_run"]
            self.client.update_run(self.mlflow_run, status="RUNNING")
            return
        tags = {
            "srt_jax.run_id": run_id,
            "srt_jax.run_dir": str(run_dir.resolve()),
            "dataset": config.data.dataset,
            "backbone": config.model.backbone,
        }
        run = self.client.create_run(experiment_id, tags=tags, run_name=run_id)
        self.mlflow_run = run.info.run_id
        params = [Param(k, str(v)) for k, v in flat_dict(to_dict(config)).items()]
        for chunk in _chunks(params):
            self.client.log_batch(self.mlflow_run, params=chunk)
        state = {"uri": self.uri, "experiment": experiment, "mlflow_run": self.mlflow_run}
        write_atomic(state_path, json.dumps(state, indent=1) + "\n")

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        for chunk in _chunks(metrics):
            self.client.log_batch(self.mlflow_run, metrics=chunk)

    def log_final(self, final: FinalRecord) -> None:
        from mlflow.entities import Param, RunTag

        self.log_scalars(final.step, final.scalars)
        self.client.log_batch(
            self.mlflow_run,
            params=[Param(k, v) for k, v in final.params.items()],
            tags=[RunTag(k, v) for k, v in final.tags.items()],
        )
        for path in (final.figure, *final.artifacts):
            self.client.log_artifact(self.mlflow_run, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(
            self.mlflow_run, status={"done": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        )

"""The run directory of one training run (its contract: docs/architecture.md, "Run directory").

::

    RUN_DIR/
      config.yaml     the fully resolved RunConfig (every field, defaults included)
      metrics.jsonl   one JSON object per log event: {"kind": "train" | "eval", "step", ...}
      checkpoints/    orbax checkpoints (srt_jax.train.checkpoint)
      summary.json    final figures and status (running / done / failed), written atomically

A run directory belongs to one config: opening it with another config is an error that
names the differing keys. After a resume the metrics lines past the restored step are
dropped, so the file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from srt_jax.config import RunConfig, build_config, dump_config, flat_dict, read_yaml, to_dict
from srt_jax.errors import ConfigError, DataError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # e.g. a full disk: name the file
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """``key: old -> new`` for every dotted key of the run's identity (what the config hash
    covers: not the trackers) whose value differs."""
    a, b = flat_dict(to_dict(old, for_hash=True)), flat_dict(to_dict(new, for_hash=True))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a | b) if a.get(k) != b.get(k)]


class RunDirectory:
    """Paths and files of one run directory (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.summary_path = self.path / SUMMARY_FILE
        self.checkpoint_dir = self.path / CHECKPOINT_DIR

    # ------------------------------------------------------------------ config

    def read_config(self) -> RunConfig:
        """The run's resolved config (errors name the file and line)."""
        raw, lines = read_yaml(self.config_path)
        return build_config(RunConfig, raw, lines, source=str(self.config_path))

    def check_config(self, config: RunConfig) -> None:
        """Check that the directory holds no run, or a run of ``config``.

        Raises:
          ConfigError: the directory holds a run of another config (the keys named).
        """
        if not self.config_path.exists():
            return
        existing = self.read_config()
        differences = config_differences(existing, config)
        if differences:
            raise ConfigError(
                f"{self.path} holds a run of another config ({'; '.join(differences)}); "
                "use another --out directory or the same config"
            )

    def claim(self, config: RunConfig) -> None:
        """Write ``config.yaml`` unless it is there (after :meth:`check_config`)."""
        if not self.config_path.exists():
            write_atomic(self.config_path, dump_config(config))

    # ------------------------------------------------------------------ metrics

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed to the OS at once)."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:  # e.g. a full disk: name the file
            raise OSError(err.errno, err.strerror, str(self.metrics_path)) from err

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl`` (empty when there is none). A last line without
        its newline that is not valid JSON is a write cut short (a kill, a full disk) and is
        left out; any other bad line is an error naming it."""
        if not self.metrics_path.exists():
            return []
        text = self.metrics_path.read_text()
        lines = text.split("\n")
        records = []
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if line_no == len(lines):  # unterminated: a torn last write
                    break
                raise DataError(f"{self.metrics_path}:{line_no}: not valid JSON ({err})") from None
        return records

    def truncate_metrics(self, step: int) -> None:
        """Keep only the records of steps <= ``step`` (what a resume from ``step`` keeps)."""
        kept = [r for r in self.read_metrics() if r["step"] <= step]
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    # ------------------------------------------------------------------ summary

    def read_summary(self) -> dict[str, Any] | None:
        """The parsed ``summary.json``, or None when it does not exist."""
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace ``summary.json`` atomically."""
        write_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")


class FollowerRunDirectory(RunDirectory):
    """A run directory that another process writes: the processes of a multi-process run
    other than process 0 read its config and train from its checkpoints, and write none of
    its files (:mod:`srt_jax.train.distributed`)."""

    def claim(self, config: RunConfig) -> None:
        """Nothing: process 0 writes ``config.yaml``."""

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Nothing: process 0 writes ``metrics.jsonl``."""

    def truncate_metrics(self, step: int) -> None:
        """Nothing: process 0 truncates ``metrics.jsonl``."""

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Nothing: process 0 writes ``summary.json``."""

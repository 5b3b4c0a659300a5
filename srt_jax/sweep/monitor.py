"""The progress display of a running sweep, read from its registry and run directories.

The bar counts analytic training FLOPs (finished runs count whole, running runs by the
``flops`` of the last line of their ``metrics.jsonl``), so its ETA weighs big runs by their
cost; beside it: runs done / running / failed / pending and the trained tokens per second
since the display started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from srt_jax.progress import progress_bar
from srt_jax.sweep.registry import STATUSES, Registry
from srt_jax.train.run_dir import METRICS_FILE


def last_progress(metrics_path: Path) -> tuple[float, float]:
    """(tokens, flops) of the last complete line of a run's metrics.jsonl ((0, 0) if none)."""
    try:
        with open(metrics_path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return 0.0, 0.0
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
            return float(record["tokens"]), float(record["flops"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0.0, 0.0


class SweepMonitor:
    """A progress bar over the sweep's FLOPs with run counts and tokens/s (see module doc)."""

    def __init__(self, registry: Registry, *, disable: bool = False) -> None:
        self.registry = registry
        runs = registry.runs()
        self.bar = progress_bar(
            sum(r["C"] or 0.0 for r in runs), f"sweep {registry.name()}", "FLOP", disable=disable
        )
        self._start = time.monotonic()
        self._shown_at = -float("inf")
        self._tokens_at_start: float | None = None

    def update(self) -> dict[str, int]:
        """Refresh the display; return the counts per status."""
        counts = dict.fromkeys(STATUSES, 0)
        flops = tokens = 0.0
        for run in self.registry.runs():
            counts[run["status"]] += 1
            if run["status"] == "done":
                flops += run["C"] or 0.0
                tokens += run["D"] or 0.0
            elif run["status"] != "pending":
                run_tokens, run_flops = last_progress(
                    self.registry.root / run["run_dir"] / METRICS_FILE
                )
                flops += (run["C"] or 0.0) if run["status"] == "failed" else run_flops
                tokens += run_tokens
        if self._tokens_at_start is None:  # work of earlier sessions: not in the rate or ETA
            self._tokens_at_start = tokens
            self.bar.initial = min(flops, self.bar.total or flops)
        rate = (tokens - self._tokens_at_start) / max(time.monotonic() - self._start, 1e-9)
        self.bar.n = min(flops, self.bar.total or flops)
        self.bar.set_postfix_str(
            f"done {counts['done']} running {counts['running']} failed {counts['failed']} "
            f"pending {counts['pending']}, {rate:,.0f} tok/s",
            refresh=False,
        )
        finished = counts["pending"] == counts["running"] == 0  # close() draws that line
        if self.bar.disable or finished:
            return counts
        if time.monotonic() - self._shown_at >= self.bar.mininterval:  # a log line every ~10 s
            self.bar.refresh()
            self._shown_at = time.monotonic()
        return counts

    def close(self) -> None:
        """Final figures and close the bar, which shows them once."""
        self._shown_at = time.monotonic()  # no redraw in update: the close draws the last line
        self.update()
        self.bar.close()

"""Progress display for long work: a tqdm bar on a terminal, periodic lines in logs.

On a terminal the bar redraws in place. When stderr is not a terminal (a pipe, a log file,
CI, subprocess workers) the same bar is written as whole lines — one at the start, one at
most every ``log_interval_s`` seconds (default 10) with rate and ETA, one at the end — each
ending in a newline, never a carriage return.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm


class LineWriter:
    """A file-like wrapper for tqdm's output in logs: each bar redraw (``\\r`` + text +
    padding) becomes one line ``text\\n``; empty writes (tqdm clearing a bar, or ending one
    with a bare newline) write nothing."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    total: float | None,
    desc: str,
    unit: str = "it",
    *,
    log_interval_s: float = 10.0,
    disable: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm progress bar over ``total`` units (None when unknown), rate and ETA shown; see
    the module docstring for its two modes (``sys.stderr.isatty()`` chooses)."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=interactive,
        mininterval=0.5 if interactive else log_interval_s,
        maxinterval=10.0 if interactive else log_interval_s,
        ascii=not interactive,
        disable=disable,
        file=sys.stderr if interactive else LineWriter(sys.stderr),
        **kwargs,
    )

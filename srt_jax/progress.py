"""Progress display for long work: a tqdm bar on a terminal, periodic lines in logs.

On a terminal the bar redraws in place; when stderr is not a terminal (CI, log files,
subprocess workers) it prints a full line with rate and ETA at most every ``log_interval_s``.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(
    total: float | None,
    desc: str,
    unit: str = "it",
    *,
    log_interval_s: float = 30.0,
    disable: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm progress bar over ``total`` units (None when unknown), rate and ETA shown."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=interactive,
        mininterval=0.5 if interactive else log_interval_s,
        maxinterval=max(10.0, log_interval_s) if not interactive else 10.0,
        ascii=not interactive,
        disable=disable,
        file=sys.stderr,
        **kwargs,
    )

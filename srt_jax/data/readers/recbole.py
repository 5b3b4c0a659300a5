"""RecBole atomic ``.inter`` files: tab separated, header fields ``name:type``; columns
``user_id``, ``item_id``, ``timestamp`` and ``rating`` unless named otherwise."""

from __future__ import annotations

from pathlib import Path

from srt_jax.data.readers.base import Columns, ReadOptions
from srt_jax.data.readers.text import TextLayout
from srt_jax.errors import DataError


def recbole_layout(path: Path, first: str, options: ReadOptions) -> TextLayout:
    """The layout of a RecBole atomic file from its header line ``first``."""
    fields = first.split("\t")
    if not all(":" in name for name in fields):
        raise DataError(
            f"{path}: not a RecBole atomic file: the header fields must be "
            f"name:type separated by tabs; got {first[:80]!r}"
        )
    names = tuple(name.split(":", 1)[0] for name in fields)
    rating = options.rating_col or ("rating" if "rating" in names else None)
    columns = Columns(
        options.user_col or "user_id",
        options.item_col or "item_id",
        options.time_col or "timestamp",
        rating,
    )
    return TextLayout("recbole atomic .inter", "\t", names, columns, header=True)

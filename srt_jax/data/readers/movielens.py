"""MovieLens ratings: ``u.data`` (tab, no header), ``ratings.dat`` (``::``) and
``ratings.csv`` (with or without the header ``userId,movieId,rating,timestamp``), told
apart by the first line."""

from __future__ import annotations

import re
from pathlib import Path

from srt_jax.data.readers.base import Columns
from srt_jax.data.readers.checks import NUMBER
from srt_jax.data.readers.text import TextLayout
from srt_jax.errors import DataError


def movielens_layout(path: Path, first: str) -> TextLayout:
    """The layout of a MovieLens ratings file from its ``first`` line."""
    default = ("user_id", "item_id", "rating", "timestamp")
    columns = Columns("user_id", "item_id", "timestamp", "rating")
    if "::" in first:
        return TextLayout(
            "movielens ratings.dat (::)", "\t", default, columns, header=False, double_colon=True
        )
    if "\t" in first:
        if ":" in first.split("\t")[0]:
            raise DataError(
                f"{path}: a RecBole atomic file (header {first[:60]!r}); read it "
                f"with --format recbole"
            )
        return TextLayout("movielens u.data (tab)", "\t", default, columns, header=False)
    if "," in first:
        fields = first.split(",")
        if re.fullmatch(NUMBER, fields[0]):
            return TextLayout("movielens ratings.csv", ",", default, columns, header=False)
        named = Columns("userId", "movieId", "timestamp", "rating")
        return TextLayout("movielens ratings.csv (header)", ",", tuple(fields), named, header=True)
    raise DataError(
        f"{path}: not a MovieLens ratings file (expected u.data, ratings.dat or "
        f"ratings.csv); its first line is {first[:80]!r}"
    )

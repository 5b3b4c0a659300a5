"""Named model-shape ladders that sweep specs reference by name (``shapes: srt15``).

A shape is a mapping of ``model.*`` config keys; keys a shape leaves out keep the sweep's
base value. Ladders:

- ``srt15``: the 15 transformer shapes of SRT's Amazon sweep (Zivic et al. 2024), every
  distinct ``(n_layers, hidden_size, n_heads, inner_size)`` in the authors' MLflow database
  (``tests/data/srt_mlruns.sqlite.bz2``, params of experiment
  ``amazon-scaling-law-rand-neg-2``): layers 1-24 x hidden 32-256, heads 1-4, and a
  feed-forward width equal to the hidden size (``inner_size``).
- ``tiny``: four shapes of a few thousand parameters for tests and quick demos.
- ``small``: four shapes (d_model 8-48) for the quickstart on MovieLens-100K, chosen so
  that its IsoFLOP profiles have their minimum inside the ladder (d_model 16 is best at
  2.5e11 and 6e11 FLOPs).
- ``mamba_tiny``, ``mamba_small``: the ``tiny`` and ``small`` widths and depths as Mamba4Rec
  backbones (each shape sets ``backbone: mamba``; the ``mamba`` section keeps the sweep's
  base values, Mamba4Rec's defaults unless set), so one IsoFLOP design can hold both
  backbones (``shapes: [small, mamba_small]``).
"""

from __future__ import annotations

from typing import Any

Shape = dict[str, Any]

# (n_layers, d_model, n_heads, d_ff) as logged by SRT's runs (n_layers, hidden_size,
# n_heads, inner_size), ordered by hidden size then depth.
_SRT15 = (
    (1, 32, 1, 32),
    (2, 32, 1, 32),
    (1, 64, 1, 64),
    (2, 64, 1, 64),
    (2, 64, 2, 64),
    (4, 64, 2, 64),
    (4, 64, 4, 64),
    (8, 64, 4, 64),
    (2, 128, 2, 128),
    (4, 128, 2, 128),
    (8, 128, 2, 128),
    (8, 128, 4, 128),
    (8, 256, 4, 256),
    (16, 256, 4, 256),
    (24, 256, 4, 256),
)

# (n_layers, d_model, n_heads); the Mamba ladders take the layers and widths
_TINY = ((1, 8, 1), (1, 16, 1), (2, 16, 2), (2, 24, 2))
_SMALL = ((1, 8, 1), (1, 16, 1), (1, 32, 1), (2, 48, 2))


def _transformer(shapes: tuple[tuple[int, int, int], ...]) -> tuple[Shape, ...]:
    return tuple({"n_layers": n, "d_model": d, "n_heads": h} for n, d, h in shapes)


def _mamba(shapes: tuple[tuple[int, int, int], ...]) -> tuple[Shape, ...]:
    return tuple({"backbone": "mamba", "n_layers": n, "d_model": d} for n, d, _ in shapes)


LADDERS: dict[str, tuple[Shape, ...]] = {
    "srt15": tuple(
        {"n_layers": layers, "d_model": d, "n_heads": heads, "d_ff": d_ff}
        for layers, d, heads, d_ff in _SRT15
    ),
    "tiny": _transformer(_TINY),
    "small": _transformer(_SMALL),
    "mamba_tiny": _mamba(_TINY),
    "mamba_small": _mamba(_SMALL),
}

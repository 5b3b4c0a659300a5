"""Synthetic interaction logs with a known loss floor, streamed into a sequence store.

- :mod:`.options`: :class:`GeneratorOptions`, the generator's options and their checks.
- :mod:`.generator`: :class:`SyntheticGenerator`, the latent-state model (Zipf popularity,
  drifting interest, long-term preference, item-to-item transitions), its vectorised chunk
  sampler and the oracle loss, the cross-entropy of its own next-item distribution.
- :mod:`.synthesize`: :func:`synthesize_store`, which writes a whole log as a store.
"""

from srt_jax.data.synthetic.generator import ChunkResult, SyntheticGenerator, _alias_table
from srt_jax.data.synthetic.options import GeneratorOptions, generator_options
from srt_jax.data.synthetic.synthesize import synthesize_store

__all__ = [
    "ChunkResult",
    "GeneratorOptions",
    "SyntheticGenerator",
    "_alias_table",
    "generator_options",
    "synthesize_store",
]

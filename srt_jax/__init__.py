"""srt-jax: scaling-law experiments on sequential recommenders in JAX/Flax NNX."""

__version__ = "0.1.0"

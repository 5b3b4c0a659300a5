"""Shared pytest setup: JAX on the CPU, small thread pools, deterministic tmp data."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

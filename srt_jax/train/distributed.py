"""Multi-process runs: one ``srt-jax train`` process per host (or per accelerator), one
global device mesh (``jax.distributed``).

Start the same command in every process with three environment variables, JAX's own names:

- ``JAX_COORDINATOR_ADDRESS``: ``HOST:PORT`` of process 0 (which serves it);
- ``JAX_NUM_PROCESSES``: the number of processes P;
- ``JAX_PROCESS_ID``: this process's index, 0 .. P - 1.

:func:`initialize_from_env` then calls ``jax.distributed.initialize`` before JAX is used
(CPU processes exchange their collectives over gloo). ``jax.devices()`` lists every
process's devices, so the run's mesh (:func:`srt_jax.train.mesh.data_mesh`) spans them all.

What each process does:

- **The same batches.** Every process runs the run's sampler, a pure function of (seed,
  step), so every process holds the same global batch of step k; each places on its own
  devices only its rows of it (:func:`place`), so a P-process run trains exactly
  the batches, and reduces exactly the sums, of a one-process run with the same global
  batch.
- **One writer.** Process 0 writes the run directory (``metrics.jsonl``, ``summary.json``,
  the trackers, the progress bar); the others compute the same figures and write nothing
  there (:func:`is_writer`). Checkpoints are written together through orbax, which stores
  every array once, and every process restores its part of them, so a killed multi-process
  run resumes like a one-process run.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Sharding

from srt_jax.errors import ConfigError

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str, environ: dict[str, str]) -> int:
    value = environ.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={value!r} is invalid: expected an integer (multi-process runs set "
            f"{ENV_ADDRESS}, {ENV_PROCESSES} and {ENV_PROCESS_ID})"
        ) from None


def distributed_settings(environ: dict[str, str] | None = None) -> tuple[str, int, int] | None:
    """``(coordinator address, processes, process id)`` from the environment, or None when
    ``JAX_NUM_PROCESSES`` is unset (one process).

    Raises:
      ConfigError: a variable is missing or not a valid value, naming it.
    """
    environ = dict(os.environ if environ is None else environ)
    if environ.get(ENV_PROCESSES) is None:
        return None
    processes = _env_int(ENV_PROCESSES, environ)
    process_id = _env_int(ENV_PROCESS_ID, environ)
    address = environ.get(ENV_ADDRESS, "")
    if ":" not in address:
        raise ConfigError(
            f"{ENV_ADDRESS}={address!r} is invalid: expected HOST:PORT of process 0 "
            f"({ENV_PROCESSES}={processes} is set)"
        )
    if processes < 1 or not 0 <= process_id < processes:
        raise ConfigError(
            f"{ENV_PROCESS_ID}={process_id} is invalid with {ENV_PROCESSES}={processes}: "
            f"expected 0 .. {processes - 1}"
        )
    return address, processes, process_id


def initialize_from_env() -> bool:
    """Join the multi-process run the environment describes (:func:`distributed_settings`);
    False when it describes none. Call before anything else uses JAX."""
    settings = distributed_settings()
    if settings is None:
        return False
    address, processes, process_id = settings
    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=address, num_processes=processes, process_id=process_id
        )
    return True


def is_writer() -> bool:
    """Whether this process writes the run directory (process 0; the only one alone)."""
    return jax.process_index() == 0


def place(tree: Any, shardings: Any, *, may_alias: bool | None = None) -> Any:
    """``tree`` (host values, or arrays of this process's devices: the same in every
    process) as global arrays laid out by ``shardings`` (one sharding, or a tree of them):
    ``jax.device_put`` in one process; in several, each process fills only its own
    devices' shards. PRNG key arrays keep their type."""
    if isinstance(shardings, Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings, may_alias=may_alias)
    return jax.tree.map(_global_array, tree, shardings)


def _global_array(value: Any, sharding: Sharding) -> jax.Array:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(value), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

"""Starting a run from another run's parameters (``train.init_from: RUN_DIR``): the entry of
every fine-tuning stage (ORPO after next-item training, a longer schedule, a new catalog).

:func:`init_from_run` rebuilds the source run's model from its ``config.yaml`` (no split,
sampler or evaluator), restores its best-validation checkpoint (the latest one when it was
never validated; :func:`~srt_jax.train.checkpoint.best_step`) — the parameters to evaluate
(schedule-free's averaged ones) — and writes them into the new run's freshly built model:

- every parameter must exist in both models with the same shape (same backbone, width,
  depth, ``max_len`` for position tables, ...); anything else is a ConfigError naming the
  differing parameters;
- except the item rows of ID item tables (``IdEncoder.table_VxD``, input and output), which
  are aligned by **original item id** (``item_ids.npy`` of both stores): a new-run item the
  source knew gets the source's row, an item it did not know keeps its fresh initialisation,
  and source items the new store lacks are dropped. Row 0 (padding) is copied.
- A hashed item encoder hashes item *indices*, so its table moves only between stores whose
  items have the same indices (the same catalog); otherwise it is a ConfigError.

The optimiser state is not carried over: the new run's optimiser and schedule start fresh.
The source is named in the new run's config (so in its run id) and, with the checkpoint
used and the item counts, in ``summary.json``'s ``init_from`` and the protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from srt_jax.config import RunConfig, config_hash
from srt_jax.data.sources import open_dataset
from srt_jax.data.store import SequenceStore
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model
from srt_jax.train.checkpoint import Checkpoints, best_step, checkpoint_params
from srt_jax.train.run_dir import RunDirectory
from srt_jax.train.step import TrainStep

ITEM_ROWS = "table_VxD"
"""The name of a parameter whose rows are item indices (:class:`~srt_jax.models.
item_encoders.IdEncoder`)."""
_KEY = "train.init_from"


@dataclass(frozen=True)
class InitRecord:
    """Where a run's initial parameters came from.

    Attributes:
      run_dir: the source run directory; run_id: its config hash.
      step: the checkpoint's step; checkpoint: which checkpoint it is, in words.
      items_matched: new-run items whose rows came from the source (by original id).
      items_new: new-run items the source did not know (fresh rows).
      items_dropped: source items the new store does not have.
    """

    run_dir: str
    run_id: str
    step: int
    checkpoint: str
    items_matched: int
    items_new: int
    items_dropped: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _error(message: str) -> ConfigError:
    return ConfigError(f"{_KEY}: {message}", key=_KEY)


def source_rows(source_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """int64 [n_target_items + 1]: the source row of each new-run item index by original id
    (-1: unknown to the source); entry 0 (padding) is 0."""
    where = {str(item): row for row, item in enumerate(source_ids.tolist()) if row > 0}
    rows = np.array([where.get(str(item), -1) for item in target_ids.tolist()], np.int64)
    rows[0] = 0
    return rows


def init_from_run(
    model: nnx.Module, config: RunConfig, store: SequenceStore, mesh: Mesh
) -> InitRecord:
    """Write the best parameters of the run in ``config.train.init_from`` into ``model``
    (built for ``config`` on ``store``), as the module docstring says. Writes nothing in
    the source run directory.

    Raises:
      ConfigError: no run there, no checkpoint, another backbone, or parameters whose
        shapes differ other than by the catalog.
    """
    run = RunDirectory(config.train.init_from)
    if not run.config_path.is_file():
        raise _error(f"{run.path} is not a run directory (no {run.config_path.name})")
    source = run.read_config()
    if source.model.backbone != config.model.backbone:
        raise _error(
            f"{run.path} is a {source.model.backbone} run, but model.backbone is "
            f"{config.model.backbone!r}"
        )
    if not run.checkpoint_dir.is_dir() or not any(run.checkpoint_dir.iterdir()):
        raise _error(f"{run.checkpoint_dir}: no checkpoint to initialise from")
    source_store = open_dataset(source.data, progress=False)
    source_model = build_model(
        source.model, source_store.n_items, source.data.max_len, nnx.Rngs(source.train.seed)
    )
    train_step = TrainStep(source_model, source.train, total_tokens=1, mesh=mesh)
    checkpoints = Checkpoints(run.checkpoint_dir, source.train.keep_checkpoints)
    try:
        step, which = best_step(checkpoints, "initialise from")
        params = checkpoint_params(train_step, checkpoints, step)
    finally:
        checkpoints.close()
    rows = source_rows(source_store.item_ids(), store.item_ids())
    same_items = bool(
        source_store.n_items == store.n_items and np.all(rows == np.arange(len(rows)))
    )
    if config.model.item_encoder == "hashed" and not same_items:
        raise _error(
            f"{run.path} was trained on another catalog, and a hashed item encoder hashes "
            "item indices, so its table cannot be aligned by item id"
        )
    target = nnx.state(model, nnx.Param)
    nnx.update(model, _aligned(target, params, rows, run.path))
    matched = int(np.count_nonzero(rows[1:] >= 0))
    return InitRecord(
        run_dir=str(run.path),
        run_id=config_hash(source),
        step=step,
        checkpoint=which,
        items_matched=matched,
        items_new=store.n_items - matched,
        items_dropped=source_store.n_items - matched,
    )


def _aligned(target: nnx.State, source: nnx.State, rows: np.ndarray, where: Any) -> nnx.State:
    """``target`` with every leaf replaced by ``source``'s (item rows aligned by ``rows``);
    ``where`` names the source run in errors."""
    source_leaves = {jax.tree_util.keystr(p): v for p, v in _leaves(source)}
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    differing, new_leaves = [], []
    for path, fresh in paths_leaves:
        name = jax.tree_util.keystr(path)
        saved = source_leaves.pop(name, None)
        if saved is None:
            differing.append(f"{name} is not in the source model")
            new_leaves.append(fresh)
            continue
        saved = np.asarray(saved)
        if name.endswith(f"'{ITEM_ROWS}']") and saved.shape[1:] == fresh.shape[1:]:
            leaf = np.array(fresh)
            known = rows >= 0
            leaf[known] = saved[rows[known]]
            new_leaves.append(leaf.astype(fresh.dtype))
        elif saved.shape != fresh.shape:
            differing.append(f"{name} is {saved.shape} there, {fresh.shape} here")
            new_leaves.append(fresh)
        else:
            new_leaves.append(saved.astype(fresh.dtype))
    differing += [f"{name} is not in this model" for name in source_leaves]
    if differing:
        more = f"; and {len(differing) - 3} more" if len(differing) > 3 else ""
        raise _error(
            f"the model of {where} does not match this run's ({'; '.join(differing[:3])}{more}):"
            " fine-tuning needs the same backbone and shape"
        )
    return jax.tree_util.tree_unflatten(treedef, new_leaves)


def _leaves(state: nnx.State) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_flatten_with_path(state)[0]

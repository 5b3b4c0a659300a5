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
- and the rows of feature-token tables (``FeaturesEncoder.feature_table_OxD``), which are
  aligned by **token string** (``feature_vocab.json`` of both stores): that is how a model
  pre-trained on one catalog moves to another that shares (part of) its feature vocabulary
  (SRT's transfer). A token the source did not know keeps its fresh row.
- A hashed item encoder hashes item *indices*, so its table moves only between stores whose
  items have the same indices (the same catalog); otherwise it is a ConfigError. A
  ``features`` encoder needs a source that had one too.

The optimiser state is not carried over: the new run's optimiser and schedule start fresh.
The source is named in the new run's config (so in its run id) and, with the checkpoint
used, the item and token counts and the source's own size and training compute (its
``summary.json``: parameters, trained tokens, FLOPs — what a transfer study plots downstream
quality against), in ``summary.json``'s ``init_from`` and the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from srt_jax.models.factory import build_model, model_item_features
from srt_jax.train.checkpoint import Checkpoints, best_step, checkpoint_params
from srt_jax.train.item_shards import ITEM_ROWS
from srt_jax.train.run_dir import RunDirectory
from srt_jax.train.step import TrainStep

TOKEN_ROWS = "feature_table_OxD"
"""The name of a parameter whose rows are feature tokens (:class:`~srt_jax.models.
item_encoders.FeaturesEncoder`)."""
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
      tokens_matched, tokens_new: feature tokens of the new store the source knew / did not
        (None without a features item encoder).
      parent_params, parent_params_non_embedding, parent_tokens, parent_flops: the source
        run's parameter counts, trained tokens and training FLOPs (None when it has no
        summary).
    """

    run_dir: str
    run_id: str
    step: int
    checkpoint: str
    items_matched: int
    items_new: int
    items_dropped: int
    tokens_matched: int | None = None
    tokens_new: int | None = None
    parent_params: int | None = None
    parent_params_non_embedding: int | None = None
    parent_tokens: int | None = None
    parent_flops: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _error(message: str) -> ConfigError:
    return ConfigError(f"{_KEY}: {message}", key=_KEY)


def source_rows(source_ids: Sequence[Any], target_ids: Sequence[Any]) -> np.ndarray:
    """int64 [len(target_ids)]: the source row of each new-run row (item index by original
    id, or token index by token string; -1: unknown to the source); entry 0 (padding) is 0."""
    where = {str(item): row for row, item in enumerate(source_ids) if row > 0}
    rows = np.array([where.get(str(item), -1) for item in target_ids], np.int64)
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
    uses_features = config.model.item_encoder.startswith("features")
    if uses_features and not source.model.item_encoder.startswith("features"):
        raise _error(
            f"{run.path} has no feature vocabulary (its model.item_encoder is "
            f"{source.model.item_encoder!r}), so model.item_encoder = "
            f"{config.model.item_encoder!r} cannot start from it"
        )
    source_store = open_dataset(source.data, progress=False)
    source_model = build_model(
        source.model,
        source_store.n_items,
        source.data.max_len,
        nnx.Rngs(source.train.seed),
        item_features=model_item_features(source.model, source_store),
    )
    train_step = TrainStep(source_model, source.train, total_tokens=1, mesh=mesh)
    checkpoints = Checkpoints(run.checkpoint_dir, source.train.keep_checkpoints)
    try:
        step, which = best_step(checkpoints, "initialise from")
        params = checkpoint_params(train_step, checkpoints, step)
    finally:
        checkpoints.close()
    rows = {ITEM_ROWS: source_rows(source_store.item_ids().tolist(), store.item_ids().tolist())}
    same_items = bool(
        source_store.n_items == store.n_items
        and np.all(rows[ITEM_ROWS] == np.arange(len(rows[ITEM_ROWS])))
    )
    if config.model.item_encoder.endswith("hashed") and not same_items:
        raise _error(
            f"{run.path} was trained on another catalog, and a hashed item encoder hashes "
            "item indices, so its table cannot be aligned by item id"
        )
    tokens = {}
    if uses_features:
        vocab = store.item_features().vocab
        rows[TOKEN_ROWS] = source_rows(source_store.item_features().vocab, vocab)
        known = int(np.count_nonzero(rows[TOKEN_ROWS][1:] >= 0))
        tokens = {"tokens_matched": known, "tokens_new": len(vocab) - 1 - known}
    target = nnx.state(model, nnx.Param)
    nnx.update(model, _aligned(target, params, rows, run.path))
    matched = int(np.count_nonzero(rows[ITEM_ROWS][1:] >= 0))
    parent = run.read_summary() or {}
    return InitRecord(
        run_dir=str(run.path),
        run_id=config_hash(source),
        step=step,
        checkpoint=which,
        items_matched=matched,
        items_new=store.n_items - matched,
        items_dropped=source_store.n_items - matched,
        **tokens,
        parent_params=parent.get("params_total"),
        parent_params_non_embedding=parent.get("params_non_embedding"),
        parent_tokens=parent.get("train_tokens"),
        parent_flops=parent.get("train_flops"),
    )


def _aligned(
    target: nnx.State, source: nnx.State, rows: dict[str, np.ndarray], where: Any
) -> nnx.State:
    """``target`` with every leaf replaced by ``source``'s (the rows of a parameter named
    like a key of ``rows`` aligned by that map); ``where`` names the source run in errors."""
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
        keys = {getattr(entry, "key", None) for entry in path}
        aligned = [key for key in rows if key in keys]
        if aligned and saved.shape[1:] == fresh.shape[1:]:
            leaf = np.array(fresh)
            known = rows[aligned[0]] >= 0
            leaf[known] = saved[rows[aligned[0]][known]]
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

"""The jitted training step, written for a ``data x items`` device mesh.

Following flax's ``examples/gemma`` (NNX): the model is split once into its static graph
definition, its parameters (the :class:`nnx.Param` state, which is trained) and the rest
of its state (dropout RNG streams, unused because every call gets its own key); the step
merges them back inside ``jax.jit(step, in_shardings=..., out_shardings=...,
donate_argnums=0)``. The batch is sharded along ``data`` (its leading axis), parameters
and optimiser state are replicated except the item tables and their optimiser state, which
``train.item_shards`` splits by rows along ``items`` (:mod:`srt_jax.train.item_shards`), and
the train state's buffers are donated, so the update is in place. One CPU device is a 1 x 1
mesh (:mod:`srt_jax.train.mesh`).

Randomness: the dropout and negative-sampling keys of step ``k`` are ``fold_in(key(seed),
k)`` split in two, so a run is a pure function of its config and seed and a resumed run
draws exactly the keys it would have drawn. The seed's key, the peak learning rate and the
run's progress through its token budget are arguments of the step, not constants baked into
it, so same-shaped runs of a sweep reuse one compiled step (and JAX's persistent cache).

Loss and gradient are the exact mean over the global batch (the sum of per-position losses
over all shards divided by the number of counted positions).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from srt_jax.config import TrainConfig
from srt_jax.data.sampler import Batch
from srt_jax.train.adaptive_batch import (
    accumulate,
    empty_accumulator,
    half_gradients,
)
from srt_jax.train.distributed import place
from srt_jax.train.item_shards import (
    item_table_rows,
    pad_item_tables,
    state_shardings,
    unpad_item_tables,
)
from srt_jax.train.losses import compute_loss
from srt_jax.train.mesh import ITEMS_AXIS, batch_sharding, check_divisible, replicated
from srt_jax.train.optim import make_optimizer
from srt_jax.train.orpo import orpo_term, rejected_items
from srt_jax.train.transfer import backbone_mask, gate, pull_to_init, unfreeze_points

BATCH_FIELDS = ("inputs", "targets", "mask")
PACKED_FIELDS = ("segments", "slots")
BATCH_DTYPES = {
    "inputs": jnp.int32,
    "targets": jnp.int32,
    "mask": jnp.bool_,
    "ratings": jnp.float32,
    "segments": jnp.int32,
    "slots": jnp.int32,
}
ORPO_METRICS = ("orpo", "log_odds_ratio")
"""Per-step figures of ``train.objective = orpo``: the mean odds-ratio term and log odds
ratio over the step's pairs."""

TrainState = dict[str, Any]
"""``{"params": nnx.State, "opt_state": optax state}`` — what a step updates and a
checkpoint holds."""


class TrainStep:
    """The jitted, donated, sharded step of one run.

    Args:
      model: the freshly built model (its parameters are the initial ones; a backbone with
        a ``hidden_lr_scale`` attribute, the μP transformer, gets it as AdamW's step
        multiplier on its kernels).
      train_cfg: loss, optimiser and seed.
      total_tokens: the run's token budget (the schedule's length).
      mesh: the device mesh (:func:`srt_jax.train.mesh.data_mesh`).
      n_layers: the model's blocks (``train.transfer``'s progressive unfreezing counts them).
      packed: batches carry ``segments`` and ``slots`` (``data.pack``,
        :mod:`srt_jax.data.packing`), which the model reads as segment ids and positions.
      item_log_q: ``[n_items + 1]`` log probabilities of popularity negatives, or None.
      rejected_log_q: the same for ORPO's ``popularity`` rejected items, or None.

    Call ``step(state, batch, step_index, tokens_seen, accumulation=1)`` with the device
    batch of :meth:`put_batch` (``accumulation``: with ``train.adaptive_batch``, the
    micro-batches per update, :mod:`srt_jax.train.adaptive_batch`, whose ``noise_g2`` and
    ``noise_trace`` then join the metrics; without it every call updates). It returns
    ``(new_state, metrics)`` where metrics are device scalars:
    ``loss_sum`` and ``count`` (sum of per-position next-item losses and counted
    positions), ``grad_norm`` (before clipping), ``lr`` (used by this step), ``loss_finite``
    and ``grad_finite`` (bools), and the figures named in :attr:`metric_keys`: the
    optimiser's own (:meth:`~srt_jax.train.optim.Optimizer.diagnostics`) and, with
    ``train.objective = orpo``, :data:`ORPO_METRICS`. The gradient is that of the mean
    next-item loss plus ``train.orpo.weight`` x the mean odds-ratio term over the pairs
    (:mod:`srt_jax.train.orpo`; its draw uses its own key, so the next-item loss sees the
    same negatives under either objective). :meth:`eval_params` gives the parameters to
    evaluate of a train state.
    """

    def __init__(
        self,
        model: nnx.Module,
        train_cfg: TrainConfig,
        *,
        total_tokens: int,
        mesh: Mesh,
        n_layers: int = 0,
        item_log_q: np.ndarray | None = None,
        rejected_log_q: np.ndarray | None = None,
        packed: bool = False,
    ) -> None:
        model.train()
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self.mesh = mesh
        self.item_rows = item_table_rows(params)
        padded = self.item_rows is not None and train_cfg.item_shards > 1
        params = pad_item_tables(params, train_cfg.item_shards) if padded else params
        self.optimizer = make_optimizer(train_cfg, getattr(model, "hidden_lr_scale", 1.0))
        self.tx = self.optimizer.tx
        self._initial_params = params
        self.total_tokens = total_tokens
        orpo = train_cfg.orpo
        self.batch_fields = BATCH_FIELDS
        if orpo is not None and orpo.rejected == "disliked":
            self.batch_fields = (*self.batch_fields, "ratings")
        if packed:
            self.batch_fields = (*self.batch_fields, *PACKED_FIELDS)
        self.metric_keys = self.optimizer.metric_keys + (ORPO_METRICS if orpo else ())
        transfer = train_cfg.transfer
        constants = {
            "rest": rest,
            "item_log_q": item_log_q,
            "rejected_log_q": rejected_log_q,
            "key": jax.random.key(train_cfg.seed),
            "peak_lr": np.float32(self.optimizer.peak or 0.0),
        }
        if transfer is not None:  # the parameters' unfreeze points; θ₀ and its mask
            constants["unfreeze_at"] = unfreeze_points(params, transfer, n_layers)
            if transfer.l2_to_init:
                constants["anchor"] = params
                constants["anchor_mask"] = backbone_mask(params)
        self._constants = place(constants, state_shardings(constants, mesh))
        loss_mesh = mesh if mesh.shape[ITEMS_AXIS] > 1 else None
        optimizer = self.optimizer
        self.adaptive = train_cfg.adaptive_batch is not None

        adaptive = train_cfg.adaptive_batch

        def loss_fn(
            params: nnx.State,
            batch: dict[str, jax.Array],
            dropout_key: jax.Array,
            loss_key: jax.Array,
            constants: dict[str, Any],
        ) -> tuple[jax.Array, dict[str, jax.Array]]:
            if padded:  # the model sees the catalog's V rows of its item tables
                params = unpad_item_tables(params, self.item_rows)
            net = nnx.merge(self.graphdef, params, constants["rest"])
            hidden_BxLxD = net(
                batch["inputs"],
                batch.get("slots"),
                segments_BxL=batch.get("segments"),
                rngs=nnx.Rngs(dropout=dropout_key),
            )
            table_VxD = net.item_table()
            loss_sum, count = compute_loss(
                hidden_BxLxD,
                table_VxD,
                batch["targets"],
                batch["mask"],
                train_cfg=train_cfg,
                key=loss_key,
                item_log_q=constants["item_log_q"],
                mesh=loss_mesh,
            )
            loss = loss_sum / jnp.maximum(count, 1.0)
            figures = {"loss_sum": loss_sum, "count": count}
            if orpo is None:
                return loss, figures
            rejected_BxL, pairs_BxL = rejected_items(
                orpo,
                jax.random.fold_in(loss_key, 1),
                batch["targets"],
                batch["mask"],
                table_VxD.shape[0] - 1,
                ratings_BxL=batch.get("ratings"),
                log_q_V=constants["rejected_log_q"],
            )
            term = orpo_term(
                hidden_BxLxD,
                table_VxD,
                batch["targets"],
                rejected_BxL,
                pairs_BxL,
                hard=orpo.rejected == "hard",
            )
            pairs = jnp.maximum(term.pairs, 1.0)
            figures["orpo"] = term.loss_sum / pairs
            figures["log_odds_ratio"] = term.ratio_sum / pairs
            return loss + orpo.weight * figures["orpo"], figures

        def step(
            state: TrainState,
            batch: dict[str, jax.Array],
            constants: dict[str, Any],
            step_index: jax.Array,
            progress: jax.Array,
            accumulation: jax.Array,
        ) -> tuple[TrainState, dict[str, jax.Array]]:
            dropout_key, loss_key = jax.random.split(
                jax.random.fold_in(constants["key"], step_index)
            )
            params = state["params"]

            def batch_loss(p: nnx.State) -> tuple[jax.Array, dict[str, jax.Array]]:
                return loss_fn(p, batch, dropout_key, loss_key, constants)

            lr = optimizer.learning_rate(constants["peak_lr"], progress)

            def update(grads: nnx.State, opt_state: Any) -> tuple[nnx.State, Any]:
                opt_state = optimizer.set_learning_rate(opt_state, lr)
                if transfer is not None:
                    grads = gate(grads, constants["unfreeze_at"], progress)
                line_search = {}
                if optimizer.line_search:  # the same batch and keys: f_k of srt_jax.train.usgm
                    line_search = {
                        "value": loss,
                        "value_fn": lambda p: batch_loss(p)[0],
                        "grad": grads,
                    }
                updates, opt_state = self.tx.update(grads, opt_state, params, **line_search)
                if transfer is not None:
                    if transfer.l2_to_init:
                        updates = pull_to_init(
                            updates,
                            params,
                            constants["anchor"],
                            constants["anchor_mask"],
                            lr,
                            transfer.l2_to_init,
                        )
                    updates = gate(updates, constants["unfreeze_at"], progress)
                return optax.apply_updates(params, updates), opt_state

            if adaptive is None:
                (loss, figures), grads = jax.value_and_grad(batch_loss, has_aux=True)(params)
                new_params, opt_state = update(grads, state["opt_state"])
                new_state = {"params": new_params, "opt_state": opt_state}
            else:
                loss, figures, grads, noise = half_gradients(
                    lambda p, b, d, k: loss_fn(p, b, d, k, constants),
                    params,
                    batch,
                    dropout_key,
                    loss_key,
                )
                figures = {**figures, **noise}
                new_state = accumulate(state, grads, figures["count"], accumulation, update)
            grad_norm = optax.tree.norm(grads)
            metrics = {
                **figures,
                "grad_norm": grad_norm,
                "loss_finite": jnp.isfinite(loss),
                "grad_finite": jnp.isfinite(grad_norm),
                **({} if lr is None else {"lr": jnp.asarray(lr, jnp.float32)}),
                **optimizer.diagnostics(new_state["opt_state"]),
            }
            return new_state, metrics

        self._state_shardings = state_shardings(
            jax.eval_shape(self._fresh_state, self._initial_params), mesh
        )
        rep, state_sharding = replicated(mesh), self._state_shardings
        constants_sharding = jax.tree.map(lambda x: x.sharding, self._constants)
        self._jitted = jax.jit(
            step,
            in_shardings=(state_sharding, batch_sharding(mesh), constants_sharding, rep, rep, rep),
            out_shardings=(state_sharding, rep),
            donate_argnums=0,
        )
        self._compiled: dict[int, Any] = {}  # batch rows -> the step compiled for them

    def init_state(self) -> TrainState:
        """The initial train state (a copy of the model's parameters, fresh optimiser),
        replicated; each call gives new buffers (the step donates them)."""
        return place(
            self._fresh_state(self._initial_params), self._state_shardings, may_alias=False
        )

    def _fresh_state(self, params: nnx.State) -> TrainState:
        state = {"params": params, "opt_state": self.tx.init(params)}
        if self.adaptive:
            state["accum"] = empty_accumulator(params)
        return state

    def eval_params(self, state: TrainState) -> nnx.State:
        """The parameters of ``state`` to evaluate (rank, held-out loss, serve): its params,
        or schedule-free's averaged ones (:meth:`~srt_jax.train.optim.Optimizer.eval_params`).
        Every evaluation of a train state or checkpoint goes through here."""
        params = self.optimizer.eval_params(state["opt_state"], state["params"])
        return params if self.item_rows is None else unpad_item_tables(params, self.item_rows)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state (a restore target)."""
        shapes = jax.eval_shape(self._fresh_state, self._initial_params)
        return jax.tree.map(
            lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            shapes,
            self._state_shardings,
        )

    def put_batch(self, batch: Batch) -> dict[str, jax.Array]:
        """The batch's inputs, targets and mask (and the targets' ratings, when the objective
        reads them) on the mesh, sharded along the batch axis."""
        arrays = {name: getattr(batch, name) for name in self.batch_fields}
        if "ratings" in arrays and arrays["ratings"] is None:
            raise ValueError("train.orpo.rejected = disliked needs batches with ratings")
        return place(arrays, batch_sharding(self.mesh))

    def compile(self, batch_size: int, max_len: int, packed_rows: int | None = None) -> float:
        """Compile the step ahead of time for ``[batch_size, max_len]`` batches (and, with
        packing, ``[packed_rows, max_len]`` ones); seconds."""
        check_divisible(batch_size, self.mesh, "train.batch_size")
        start = time.perf_counter()
        scalar_i, scalar_f = (
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.float32),
        )
        for rows in dict.fromkeys([batch_size, packed_rows or batch_size]):
            batch = {
                name: jax.ShapeDtypeStruct((rows, max_len), dtype)
                for name, dtype in BATCH_DTYPES.items()
                if name in self.batch_fields
            }
            self._compiled[rows] = self._jitted.lower(
                self.abstract_state(), batch, self._constants, scalar_i, scalar_f, scalar_i
            ).compile()
        return time.perf_counter() - start

    def memory_bytes(self) -> dict[str, int]:
        """XLA's memory plan of the compiled step (after :meth:`compile`), in bytes:
        ``arguments`` (state, batch, constants), ``outputs``, ``temporaries`` (activations
        and workspace) and ``peak`` (their sum less the donated buffers it reuses)."""
        if not self._compiled:
            raise RuntimeError("compile() the step before asking for its memory plan")
        plan = self._compiled[max(self._compiled)].memory_analysis()  # the unpacked shape
        sizes = {
            "arguments": int(plan.argument_size_in_bytes),
            "outputs": int(plan.output_size_in_bytes),
            "temporaries": int(plan.temp_size_in_bytes),
        }
        sizes["peak"] = sum(sizes.values()) - int(plan.alias_size_in_bytes)
        return sizes

    def __call__(
        self,
        state: TrainState,
        batch: dict[str, jax.Array],
        step_index: int,
        tokens_seen: int,
        accumulation: int = 1,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        fn = self._compiled.get(batch["inputs"].shape[0], self._jitted)
        return fn(
            state,
            batch,
            self._constants,
            np.int32(step_index),
            np.float32(tokens_seen / self.total_tokens),
            np.int32(accumulation),
        )

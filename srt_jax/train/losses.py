"""Next-item losses over every non-pad position of a batch.

Every loss returns ``(loss_sum, count)``: the sum of per-position losses over positions where
``mask`` is true and the number of those positions (both float32 scalars), so that means over
data-parallel shards are exact (``sum(loss_sum) / sum(count)``). Items are scored with the
model's output table ``item_table_VxD`` (V = n_items + 1, row 0 = padding, never a candidate)
as ``score(position, item) = hidden · table[item]``.

* ``full_softmax`` — cross-entropy over the n_items real items (row 0 excluded), scored in
  cache-sized chunks of positions with the gradient computed in the same pass, so the
  ``[positions, n_items]`` logits never exist whole.
* ``sampled_softmax`` — softmax over the target and K negatives shared by the whole batch,
  with the logQ correction (every candidate's score minus its log sampling probability, as
  TensorFlow's ``sampled_softmax_loss``); negatives equal to a position's target are masked.
* ``bce`` — original SASRec: one negative per position, ``-log σ(s⁺) - log(1 - σ(s⁻))``.
* ``gbce`` — gSASRec's generalised BCE with K shared negatives and calibration t.

Negatives are drawn with replacement, uniformly over items 1..n_items or in proportion to
popularity (``log_q_from_counts``), from a ``jax.random`` key.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from srt_jax.config import TrainConfig
from srt_jax.train.item_shards import pad_rows
from srt_jax.train.mesh import DATA_AXIS, ITEMS_AXIS

MAX_CHUNK_LOGITS = 2**20
"""Full softmax scores positions in chunks of at most this many logits (4 MiB of float32,
cache-sized) when the batch allows; see :func:`full_softmax_loss`."""


# --------------------------------------------------------------------------- sampling


def uniform_log_q(n_items: int) -> jax.Array:
    """Log sampling probabilities ``[n_items + 1]`` of uniform negatives (row 0: -inf)."""
    return jnp.full(n_items + 1, -math.log(n_items)).at[0].set(-jnp.inf)


def log_q_from_counts(counts_V: jax.Array) -> jax.Array:
    """Log probabilities ``[V]`` of popularity negatives: q_i ∝ counts_i + 1, q_0 = 0.

    Add-one smoothing keeps every item samplable and its log Q finite, so the logQ
    correction of a target never seen in the counts is defined.

    Args:
      counts_V: occurrences of every item index (length n_items + 1; entry 0 is ignored).
    """
    weights_V = (jnp.asarray(counts_V, jnp.float32) + 1.0).at[0].set(0.0)
    return jnp.log(weights_V) - jnp.log(weights_V.sum())


def sample_negatives(key: jax.Array, log_q_V: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Item indices of ``shape`` drawn with replacement with probabilities ``exp(log_q_V)``."""
    return jax.random.choice(key, log_q_V.shape[0], shape, p=jnp.exp(log_q_V)).astype(jnp.int32)


# --------------------------------------------------------------------------- losses


def _masked_sum(loss_N: jax.Array, mask_N: jax.Array) -> tuple[jax.Array, jax.Array]:
    return (jnp.where(mask_N, loss_N, 0.0).sum(dtype=jnp.float32), mask_N.sum(dtype=jnp.float32))


def _flatten(
    hidden_BxLxD: jax.Array, targets_BxL: jax.Array, mask_BxL: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Positions as rows; targets of masked-out positions become item 1 (any valid item)."""
    mask_N = mask_BxL.reshape(-1)
    targets_N = jnp.where(mask_N, targets_BxL.reshape(-1), 1)
    return hidden_BxLxD.reshape(-1, hidden_BxLxD.shape[-1]), targets_N, mask_N


def scores(h_NxD: jax.Array, items_XxD: jax.Array) -> jax.Array:
    """``h @ items.T`` in the hidden's dtype with float32 results, ``[N, X]``."""
    return jnp.einsum(
        "nd,xd->nx", h_NxD, items_XxD.astype(h_NxD.dtype), preferred_element_type=jnp.float32
    )


def target_scores(h_NxD: jax.Array, table_VxD: jax.Array, items_N: jax.Array) -> jax.Array:
    """``h_n · table[items_n]`` per position, float32 ``[N]``."""
    rows_NxD = jnp.take(table_VxD, items_N, axis=0).astype(h_NxD.dtype)
    return jnp.einsum("nd,nd->n", h_NxD, rows_NxD, preferred_element_type=jnp.float32)


def chunk_length(B: int, L: int, n_items: int, max_chunk_logits: int = MAX_CHUNK_LOGITS) -> int:
    """The largest divisor ``l`` of L with ``B x l x n_items <= max_chunk_logits`` (at least
    1): positions per chunk when scoring the whole catalog chunk by chunk."""
    fits = [l for l in range(1, L + 1) if L % l == 0 and B * l * n_items <= max_chunk_logits]
    return max(fits, default=1)


def to_chunks(x_BxL: jax.Array, chunk_len: int) -> jax.Array:
    """``[B, L, ...]`` -> ``[Q, T, ...]``: Q = L / chunk_len chunks of T = B x chunk_len
    positions (all rows, ``chunk_len`` consecutive positions each)."""
    B, L = x_BxL.shape[:2]
    n_chunks = L // chunk_len
    x = x_BxL.reshape(B, n_chunks, chunk_len, *x_BxL.shape[2:]).swapaxes(0, 1)
    return x.reshape(n_chunks, B * chunk_len, *x_BxL.shape[2:])


def from_chunks(x_QxT: jax.Array, B: int) -> jax.Array:
    """The inverse of :func:`to_chunks` for a batch of ``B`` rows."""
    n_chunks, T = x_QxT.shape[:2]
    x = x_QxT.reshape(n_chunks, B, T // B, *x_QxT.shape[2:]).swapaxes(0, 1)
    return x.reshape(B, n_chunks * (T // B), *x_QxT.shape[2:])


def full_softmax_loss(
    hidden_BxLxD: jax.Array,
    item_table_VxD: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    *,
    max_chunk_logits: int = MAX_CHUNK_LOGITS,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy of the target among all n_items items, summed over masked positions.

    The n_items logits of a position are scored against rows 1..n_items of the table. They
    are never materialised for the whole batch: positions are processed in chunks of
    ``B x l`` (all rows, ``l`` consecutive positions, ``l`` the largest divisor of L with at
    most ``max_chunk_logits`` logits per chunk, at least 1) by a ``lax.scan`` over the
    sequence axis, and the gradients are computed in the same pass (a fused linear
    cross-entropy with a ``custom_vjp``), so memory is O(B l n_items) and the logits stay in
    cache. The batch axis is never split, so a data-parallel sharding of B is kept.

    With a ``mesh`` whose ``items`` axis has S > 1 devices (``train.item_shards``), the
    table is split by rows over ``items`` (padded to a multiple of S) and each device
    scores only its rows for its ``data`` shard of the batch (``jax.shard_map``): the
    log-sum-exp and the target's logit are combined across ``items`` (a max and a sum), the
    hidden states' gradient is summed across ``items`` and each device keeps the gradient
    of its own rows, so no device holds more than ``ceil(V / S)`` rows or their logits.
    """
    B, L, _ = hidden_BxLxD.shape
    count = mask_BxL.sum(dtype=jnp.float32)
    weights_BxL = mask_BxL.astype(jnp.float32)
    if mesh is None or mesh.shape[ITEMS_AXIS] == 1:
        chunk_len = chunk_length(B, L, item_table_VxD.shape[0] - 1, max_chunk_logits)
        labels_BxL = jnp.where(mask_BxL, targets_BxL - 1, 0)
        loss_sum = _cross_entropy_sum(
            None, chunk_len, hidden_BxLxD, item_table_VxD[1:], labels_BxL, weights_BxL
        )
        return loss_sum, count
    V = item_table_VxD.shape[0]
    shards = mesh.shape[ITEMS_AXIS]
    table_XxD = pad_rows(item_table_VxD, shards)
    chunk_len = chunk_length(
        B // mesh.shape[DATA_AXIS], L, table_XxD.shape[0] // shards, max_chunk_logits
    )
    labels_BxL = jnp.where(mask_BxL, targets_BxL, 1)
    layout = ShardedRows(mesh, V)
    loss_sum = _cross_entropy_sum(
        layout, chunk_len, hidden_BxLxD, table_XxD, labels_BxL, weights_BxL
    )
    return loss_sum, count


@dataclass(frozen=True)
class ShardedRows:
    """An item table of ``rows`` rows (V, padding row 0 included) padded to a multiple of
    the ``items`` axis of ``mesh`` and split by rows over it; row 0 and the padding rows are
    never candidates."""

    mesh: Mesh
    rows: int


@dataclass(frozen=True)
class _Rows:
    """The rows of the table one device scores: ``first`` is the global row of its row 0;
    ``valid_X`` marks candidate rows (None: all); ``axis`` names the mesh axis the other
    rows lie on (None: the device has them all)."""

    first: jax.Array | int = 0
    valid_X: jax.Array | None = None
    axis: str | None = None

    def total(self, x: jax.Array) -> jax.Array:
        return x if self.axis is None else jax.lax.psum(x, self.axis)

    def logsumexp(self, logits_TxC: jax.Array) -> jax.Array:
        if self.axis is None:
            return jax.nn.logsumexp(logits_TxC, axis=1)
        top_T = jax.lax.pmax(logits_TxC.max(axis=1), self.axis)
        return top_T + jnp.log(self.total(jnp.exp(logits_TxC - top_T[:, None]).sum(axis=1)))


def _cross_entropy_chunks(
    chunk_len: int,
    h_BxLxD: jax.Array,
    items_CxD: jax.Array,
    labels_BxL: jax.Array,
    weights_BxL: jax.Array,
    with_grads: bool,
    rows: _Rows,
) -> tuple[jax.Array, ...]:
    """Σ weight x (logsumexp(logits) - logits[label]) over chunks of ``chunk_len`` positions.

    ``items_CxD`` are the rows this device scores: the C real items on one device, or on
    an ``items`` mesh its shard of the padded table (X rows, of which ``rows.valid_X``
    are items); ``rows`` says where they lie in the catalog (labels are catalog rows,
    ``labels - rows.first`` local ones); a
    ``lax.scan`` runs over Q = L / chunk_len chunks of T = B x chunk_len positions each.
    With ``with_grads`` also returns the per-position losses and the gradients of the sum
    with respect to ``h`` and ``items``.
    """
    B = h_BxLxD.shape[0]
    C = items_CxD.shape[0]
    by_chunk = functools.partial(to_chunks, chunk_len=chunk_len)

    def unchunk(x_QxT: jax.Array) -> jax.Array:
        return from_chunks(x_QxT, B)

    def chunk(carry: tuple[jax.Array, ...], xs: tuple[jax.Array, ...]):
        h_TxD, labels_T, weights_T = xs
        logits_TxC = scores(h_TxD, items_CxD)
        if rows.valid_X is not None:
            logits_TxC = jnp.where(rows.valid_X, logits_TxC, -jnp.inf)
        lse_T = rows.logsumexp(logits_TxC)
        local_T = labels_T - rows.first
        here_T = (local_T >= 0) & (local_T < C)
        picked_T = jnp.take_along_axis(logits_TxC, jnp.clip(local_T, 0, C - 1)[:, None], axis=1)
        loss_T = lse_T - rows.total(jnp.where(here_T, picked_T[:, 0], 0.0))
        loss_sum = carry[0] + (weights_T * loss_T).sum()
        if not with_grads:
            return (loss_sum,), None
        dlogits_TxC = weights_T[:, None] * (
            jnp.exp(logits_TxC - lse_T[:, None]) - jax.nn.one_hot(local_T, C, dtype=jnp.float32)
        )
        dlogits_TxC = dlogits_TxC.astype(h_TxD.dtype)
        dh_TxD = jnp.einsum(
            "tc,cd->td",
            dlogits_TxC,
            items_CxD.astype(h_TxD.dtype),
            preferred_element_type=jnp.float32,
        )
        ditems_CxD = carry[1] + jnp.einsum(
            "tc,td->cd", dlogits_TxC, h_TxD, preferred_element_type=jnp.float32
        )
        return (loss_sum, ditems_CxD), (loss_T, rows.total(dh_TxD).astype(h_TxD.dtype))

    init = (jnp.zeros((), jnp.float32),)
    if with_grads:
        init = (*init, jnp.zeros(items_CxD.shape, jnp.float32))
    xs = (by_chunk(h_BxLxD), by_chunk(labels_BxL), by_chunk(weights_BxL))
    carry, per_chunk = jax.lax.scan(chunk, init, xs)
    if not with_grads:
        return carry
    loss_QxT, dh_QxTxD = per_chunk
    return carry[0], unchunk(loss_QxT), unchunk(dh_QxTxD), carry[1].astype(items_CxD.dtype)


def _chunks(
    layout: ShardedRows | None, chunk_len: int, *args: jax.Array, with_grads: bool
) -> tuple[jax.Array, ...]:
    """:func:`_cross_entropy_chunks` on one device (``layout`` None) or on every device of
    ``layout.mesh``, each with its ``data`` shard of the positions and ``items`` shard of
    the table; the loss and the table's gradient are summed over ``data``."""
    if layout is None:
        return _cross_entropy_chunks(chunk_len, *args, with_grads=with_grads, rows=_Rows())

    def local(h_BxLxD, shard_XxD, labels_BxL, weights_BxL):
        C = shard_XxD.shape[0]
        first = jax.lax.axis_index(ITEMS_AXIS) * C
        row_C = first + jnp.arange(C)
        rows = _Rows(first, (row_C >= 1) & (row_C < layout.rows), ITEMS_AXIS)
        out = _cross_entropy_chunks(
            chunk_len, h_BxLxD, shard_XxD, labels_BxL, weights_BxL, with_grads, rows
        )
        if not with_grads:
            return (jax.lax.psum(out[0], DATA_AXIS),)
        loss_sum, loss_BxL, dh_BxLxD, dshard_XxD = out
        return (
            jax.lax.psum(loss_sum, DATA_AXIS),
            loss_BxL,
            dh_BxLxD,
            jax.lax.psum(dshard_XxD, DATA_AXIS),
        )

    batch, table = PartitionSpec(DATA_AXIS), PartitionSpec(ITEMS_AXIS)
    out_specs = (PartitionSpec(), batch, batch, table) if with_grads else (PartitionSpec(),)
    return jax.shard_map(
        local,
        mesh=layout.mesh,
        in_specs=(batch, table, batch, batch),
        out_specs=out_specs,
        check_vma=False,  # the sums above make the outputs what out_specs say
    )(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _cross_entropy_sum(layout, chunk_len, h_BxLxD, items_CxD, labels_BxL, weights_BxL):
    args = (h_BxLxD, items_CxD, labels_BxL, weights_BxL)
    return _chunks(layout, chunk_len, *args, with_grads=False)[0]


def _cross_entropy_sum_fwd(layout, chunk_len, h_BxLxD, items_CxD, labels_BxL, weights_BxL):
    args = (h_BxLxD, items_CxD, labels_BxL, weights_BxL)
    loss_sum, loss_BxL, dh_BxLxD, ditems_CxD = _chunks(layout, chunk_len, *args, with_grads=True)
    return loss_sum, (loss_BxL, dh_BxLxD, ditems_CxD)


def _cross_entropy_sum_bwd(layout, chunk_len, residuals, g):
    loss_BxL, dh_BxLxD, ditems_CxD = residuals
    return (g.astype(dh_BxLxD.dtype) * dh_BxLxD, g * ditems_CxD, None, g * loss_BxL)


_cross_entropy_sum.defvjp(_cross_entropy_sum_fwd, _cross_entropy_sum_bwd)


def sampled_softmax_loss(
    hidden_BxLxD: jax.Array,
    item_table_VxD: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    negatives_K: jax.Array,
    log_q_V: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Sampled softmax with logQ correction over the target and K shared negatives.

    Per position: ``-log softmax(s - log Q)[target]`` over the candidates {target} ∪
    negatives, where ``s`` are scores, ``Q`` the sampling probabilities ``exp(log_q_V)``
    (finite for every real item), and negatives equal to the target are left out.
    """
    h_NxD, targets_N, mask_N = _flatten(hidden_BxLxD, targets_BxL, mask_BxL)
    pos_N = target_scores(h_NxD, item_table_VxD, targets_N) - log_q_V[targets_N]
    neg_NxK = scores(h_NxD, jnp.take(item_table_VxD, negatives_K, axis=0)) - log_q_V[negatives_K]
    neg_NxK = jnp.where(negatives_K[None, :] == targets_N[:, None], -jnp.inf, neg_NxK)
    logits_Nx1K = jnp.concatenate([pos_N[:, None], neg_NxK], axis=1)
    return _masked_sum(jax.nn.logsumexp(logits_Nx1K, axis=1) - pos_N, mask_N)


def bce_loss(
    hidden_BxLxD: jax.Array,
    item_table_VxD: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    negatives_BxL: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """SASRec's binary cross-entropy with one negative per position.

    Per position: ``softplus(-s⁺) + softplus(s⁻)`` (= ``-log σ(s⁺) - log(1 - σ(s⁻))``);
    the negative term is dropped where the negative equals the target.
    """
    h_NxD, targets_N, mask_N = _flatten(hidden_BxLxD, targets_BxL, mask_BxL)
    negatives_N = negatives_BxL.reshape(-1)
    pos_N = target_scores(h_NxD, item_table_VxD, targets_N)
    neg_N = target_scores(h_NxD, item_table_VxD, negatives_N)
    loss_N = jax.nn.softplus(-pos_N) + jnp.where(
        negatives_N == targets_N, 0.0, jax.nn.softplus(neg_N)
    )
    return _masked_sum(loss_N, mask_N)


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's β = α (t (1 - 1/α) + 1/α) with sampling rate α = k / (n_items - 1)."""
    alpha = n_negatives / (n_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(
    hidden_BxLxD: jax.Array,
    item_table_VxD: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    negatives_K: jax.Array,
    *,
    t: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised BCE of gSASRec (Petrov & Macdonald, RecSys 2023) with K shared negatives.

    Per position: ``-log σ(s⁺)^β - Σ_k log(1 - σ(s⁻_k))`` = ``β softplus(-s⁺) + Σ_k
    softplus(s⁻_k)``, with β from :func:`gbce_beta` (k = K, n_items = V - 1); negatives equal
    to the target are left out. Limits: t = 0 gives β = 1 (plain BCE with K negatives);
    t = 1 gives β = α; K = n_items - 1 gives α = 1 and β = 1 for any t.
    """
    h_NxD, targets_N, mask_N = _flatten(hidden_BxLxD, targets_BxL, mask_BxL)
    beta = gbce_beta(negatives_K.shape[0], item_table_VxD.shape[0] - 1, t)
    pos_N = target_scores(h_NxD, item_table_VxD, targets_N)
    neg_NxK = scores(h_NxD, jnp.take(item_table_VxD, negatives_K, axis=0))
    neg_terms_NxK = jnp.where(
        negatives_K[None, :] == targets_N[:, None], 0.0, jax.nn.softplus(neg_NxK)
    )
    return _masked_sum(beta * jax.nn.softplus(-pos_N) + neg_terms_NxK.sum(axis=1), mask_N)


# --------------------------------------------------------------------------- entry point


def compute_loss(
    hidden_BxLxD: jax.Array,
    item_table_VxD: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    *,
    train_cfg: TrainConfig,
    key: jax.Array,
    item_log_q: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The loss named by ``train_cfg.loss``, as ``(loss_sum, count)`` over masked positions.

    Args:
      hidden_BxLxD: model outputs.
      item_table_VxD: output item table, V = n_items + 1.
      targets_BxL: int32 next items (any value where ``mask`` is false).
      mask_BxL: bool, true at positions that count.
      train_cfg: ``loss``, ``num_negatives`` (K), ``negatives`` and ``gbce_t``.
      key: randomness for negatives (unused by ``full_softmax``).
      item_log_q: ``[V]`` log sampling probabilities, required when ``train_cfg.negatives``
        is ``popularity`` (see :func:`log_q_from_counts`) and refused otherwise.
      mesh: the step's mesh when ``train.item_shards`` > 1: the full softmax is computed
        shard by shard (:func:`full_softmax_loss`); sampled losses gather their candidates'
        rows from the split table as they are.
    """
    if train_cfg.loss == "full_softmax":
        return full_softmax_loss(hidden_BxLxD, item_table_VxD, targets_BxL, mask_BxL, mesh=mesh)
    n_items = item_table_VxD.shape[0] - 1
    log_q_V = _negatives_log_q(train_cfg, n_items, item_log_q)
    if train_cfg.loss == "bce":
        negatives_BxL = sample_negatives(key, log_q_V, targets_BxL.shape)
        return bce_loss(hidden_BxLxD, item_table_VxD, targets_BxL, mask_BxL, negatives_BxL)
    negatives_K = sample_negatives(key, log_q_V, (train_cfg.num_negatives,))
    if train_cfg.loss == "sampled_softmax":
        return sampled_softmax_loss(
            hidden_BxLxD, item_table_VxD, targets_BxL, mask_BxL, negatives_K, log_q_V
        )
    return gbce_loss(
        hidden_BxLxD, item_table_VxD, targets_BxL, mask_BxL, negatives_K, t=train_cfg.gbce_t
    )


def _negatives_log_q(
    train_cfg: TrainConfig, n_items: int, item_log_q: jax.Array | None
) -> jax.Array:
    if train_cfg.negatives == "uniform":
        if item_log_q is not None:
            raise ValueError("item_log_q is only used with train.negatives = popularity")
        return uniform_log_q(n_items)
    if item_log_q is None:
        raise ValueError("train.negatives = popularity needs item_log_q (log_q_from_counts)")
    return item_log_q

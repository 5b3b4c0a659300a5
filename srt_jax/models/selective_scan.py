"""Mamba's selective scan (Gu & Dao 2023) in pure JAX: parallel, chunked and one-step forms.

The recurrence, per row b, channel i and state dimension s (``selective_scan_ref`` of
``mamba_ssm``, zero-order hold for A, Euler for B)::

    dA[t]  = exp(delta[t] * A)            A = -exp(A_log) < 0, so 0 < dA <= 1
    dBu[t] = delta[t] * u[t] * B[t]
    h[t]   = dA[t] * h[t-1] + dBu[t]      h[-1] = 0
    y[t]   = sum_s h[t] * C[t] + D * u[t]

A position with ``delta = 0`` leaves the state exactly as it was (dA = 1, dBu = 0): that is
how the backbone makes padding invisible. ``keep`` (optional, 0 or 1 per position) multiplies
``dA``: ``keep[t] = 0`` forgets ``h[t-1]``, so ``h[t]`` starts afresh at the first position
of a packed window (:mod:`srt_jax.data.packing`).

The pairs ``(dA, dBu)`` compose associatively — ``(a1, b1) then (a2, b2) = (a1 a2,
a2 b1 + b2)`` — so all states come from ``jax.lax.associative_scan`` in O(log L) depth:

* ``parallel``: one associative scan over the whole window. Memory: a few ``B x L x I x S``
  float32 arrays (and their residuals for the backward pass).
* ``chunked``: a sequential ``jax.lax.scan`` over chunks of ``chunk_size`` positions that
  carries the state ``B x I x S`` from chunk to chunk, with an associative scan inside each
  chunk (``chunk_size`` 1 is the plain recurrence). With ``remat`` each chunk is recomputed
  in the backward pass, so memory grows with the chunk (``B x chunk x I x S``) and with L
  only through the ``B x L x I`` inputs. L need not be a multiple of the chunk: the last
  chunk is padded on the right, which no earlier position can see.
* ``sequential``: the plain recurrence, a ``jax.lax.scan`` over positions, with a
  hand-written backward pass (itself a reverse-time linear recurrence, see
  :func:`_sequential_bwd`), several times faster on XLA:CPU than JAX's own derivative of
  the scan. Memory: the ``L x B x I x S`` states, kept for the backward pass.
* :func:`selective_scan_step`: one position given the previous state (serving).

``auto`` chooses by backend: ``sequential`` on CPU (fastest there: see
benchmarks/README.md), ``chunked`` on GPU and TPU (a step per position would launch L small
kernels).

Everything runs in float32 whatever the compute dtype. Shape letters: B rows, L positions,
I channels (Mamba's inner width), S state size, T chunk length, Q number of chunks.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

ScanMode = Literal["auto", "sequential", "chunked", "parallel"]


def _compose(
    earlier: tuple[jax.Array, jax.Array], later: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """``h -> a h + b`` maps composed: ``earlier`` then ``later``."""
    a_early, b_early = earlier
    a_late, b_late = later
    return a_late * a_early, a_late * b_early + b_late


def _discretize(
    u_BxTxI: jax.Array,
    delta_BxTxI: jax.Array,
    A_IxS: jax.Array,
    B_BxTxS: jax.Array,
    keep_BxT: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """``(dA, dBu)``, each ``B x T x I x S`` (see the module docstring)."""
    dA_BxTxIxS = jnp.exp(delta_BxTxI[..., None] * A_IxS)
    if keep_BxT is not None:
        dA_BxTxIxS = dA_BxTxIxS * keep_BxT[:, :, None, None]
    dBu_BxTxIxS = (delta_BxTxI * u_BxTxI)[..., None] * B_BxTxS[:, :, None, :]
    return dA_BxTxIxS, dBu_BxTxIxS


def _scan_chunk(
    h0_BxIxS: jax.Array, inputs: tuple[jax.Array, ...], A_IxS: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """States of one chunk from the state before it; returns (last state, y without D).
    ``inputs``: u, delta, B, C and, optionally, keep (``B x T x 1``)."""
    u_BxTxI, delta_BxTxI, B_BxTxS, C_BxTxS, *keep_BxTx1 = inputs
    dA_BxTxIxS, dBu_BxTxIxS = _discretize(
        u_BxTxI, delta_BxTxI, A_IxS, B_BxTxS, keep_BxTx1[0][..., 0] if keep_BxTx1 else None
    )
    decay_BxTxIxS, h_BxTxIxS = jax.lax.associative_scan(_compose, (dA_BxTxIxS, dBu_BxTxIxS), axis=1)
    h_BxTxIxS = h_BxTxIxS + decay_BxTxIxS * h0_BxIxS[:, None]
    y_BxTxI = jnp.einsum("btis,bts->bti", h_BxTxIxS, C_BxTxS)
    return h_BxTxIxS[:, -1], y_BxTxI


def _decay(delta_BxI: jax.Array, A_IxS: jax.Array, keep_B: jax.Array | None) -> jax.Array:
    """``dA`` of one position, ``B x I x S`` (times ``keep`` when given)."""
    dA_BxIxS = jnp.exp(delta_BxI[..., None] * A_IxS)
    return dA_BxIxS if keep_B is None else dA_BxIxS * keep_B[:, None, None]


def _sequential_states(
    u_LxBxI: jax.Array,
    delta_LxBxI: jax.Array,
    A_IxS: jax.Array,
    B_LxBxS: jax.Array,
    C_LxBxS: jax.Array,
    keep_LxB: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """``(h_LxBxIxS, y_LxBxI)``: every state and read-out of the recurrence (time-major)."""

    def step(h_BxIxS, inputs):
        u_BxI, delta_BxI, B_BxS, C_BxS, *keep_B = inputs
        dA_BxIxS = _decay(delta_BxI, A_IxS, keep_B[0] if keep_B else None)
        h_BxIxS = dA_BxIxS * h_BxIxS + (delta_BxI * u_BxI)[..., None] * B_BxS[:, None, :]
        return h_BxIxS, (h_BxIxS, jnp.sum(h_BxIxS * C_BxS[:, None, :], axis=-1))

    batch, I = u_LxBxI.shape[1:]
    h0_BxIxS = jnp.zeros((batch, I, A_IxS.shape[1]), jnp.float32)
    xs = (u_LxBxI, delta_LxBxI, B_LxBxS, C_LxBxS, *([] if keep_LxB is None else [keep_LxB]))
    _, (h_LxBxIxS, y_LxBxI) = jax.lax.scan(step, h0_BxIxS, xs)
    return h_LxBxIxS, y_LxBxI


@jax.custom_vjp
def _sequential(u_LxBxI, delta_LxBxI, A_IxS, B_LxBxS, C_LxBxS, keep_LxB):
    """The recurrence's read-outs ``y_LxBxI`` without D (time-major inputs; ``keep_LxB``
    None or 0/1 per position)."""
    return _sequential_states(u_LxBxI, delta_LxBxI, A_IxS, B_LxBxS, C_LxBxS, keep_LxB)[1]


def _sequential_fwd(u_LxBxI, delta_LxBxI, A_IxS, B_LxBxS, C_LxBxS, keep_LxB):
    h_LxBxIxS, y_LxBxI = _sequential_states(u_LxBxI, delta_LxBxI, A_IxS, B_LxBxS, C_LxBxS, keep_LxB)
    return y_LxBxI, (u_LxBxI, delta_LxBxI, A_IxS, B_LxBxS, C_LxBxS, keep_LxB, h_LxBxIxS)


def _sequential_bwd(residuals, dy_LxBxI):
    """Gradients of the recurrence from the states of the forward pass.

    With ``dh[t]`` the gradient of the loss with respect to ``h[t]`` (through every later
    position), ``dh[t] = dy[t] C[t] + g[t]`` where ``g[t] = dA[t+1] dh[t+1]`` runs backwards
    in time — one reverse scan. With ``dA[t] dh[t] = g[t-1]``, every parameter gradient is
    a sum of products of ``g``, the states ``h`` and per-position vectors:

        d delta[t] = sum_s (g[t-1] h[t-1] A) + u[t] sum_s (dh[t] B[t])
        d u[t]     = delta[t] sum_s (dh[t] B[t])
        d B[t]     = sum_i dh[t] delta[t] u[t]
        d C[t]     = sum_i h[t] dy[t]
        d A        = sum_{t, b} g[t-1] h[t-1] delta[t]

    The reverse scan forms each position's sums over S or I as it goes (and accumulates
    d A in its carry), so no ``L x B x I x S`` array but the forward states is ever written:
    on XLA:CPU that is about 2.5x faster than reducing stacked ``g`` afterwards, which is
    memory-bound. The ``dy C`` part of ``dh`` is summed separately (it factorises).

    With ``keep``, ``dA[t]`` carries its factor ``keep[t]`` into ``g[t-1]``, and every formula
    above holds as written (``keep`` is data: its gradient is zero).
    """
    u, delta, A_IxS, B_LxBxS, C_LxBxS, keep_LxB, h_LxBxIxS = residuals
    delta_u = delta * u
    delta_next = jnp.concatenate([delta[1:], jnp.zeros_like(delta[:1])], axis=0)  # delta[t+1]

    def step(carry, inputs):
        g_BxIxS, d_A = carry  # g: gradient reaching h[t] from later positions
        dy_BxI, B_BxS, C_BxS, delta_BxI, delta_u_BxI, h_BxIxS, delta_next_BxI, *keep_B = inputs
        gh_BxIxS = g_BxIxS * h_BxIxS  # dA[t+1] dh[t+1] h[t]: position t+1's A-gradient term
        d_A = d_A + jnp.sum(gh_BxIxS * delta_next_BxI[..., None], axis=0)
        sums = (
            jnp.sum(gh_BxIxS * A_IxS, axis=-1),  # -> d delta[t+1]
            jnp.sum(g_BxIxS * B_BxS[:, None, :], axis=-1),  # g part of sum_s dh[t] B[t]
            jnp.sum(g_BxIxS * delta_u_BxI[..., None], axis=1),  # g part of d B[t]
            jnp.sum(h_BxIxS * dy_BxI[..., None], axis=1),  # d C[t]
        )
        dh_BxIxS = g_BxIxS + dy_BxI[..., None] * C_BxS[:, None, :]
        dA_BxIxS = _decay(delta_BxI, A_IxS, keep_B[0] if keep_B else None)
        return (dh_BxIxS * dA_BxIxS, d_A), sums

    inputs = (dy_LxBxI, B_LxBxS, C_LxBxS, delta, delta_u, h_LxBxIxS, delta_next)
    inputs += () if keep_LxB is None else (keep_LxB,)
    carry = (jnp.zeros_like(h_LxBxIxS[0]), jnp.zeros_like(A_IxS))
    (_, d_A), sums = jax.lax.scan(step, carry, inputs, reverse=True)
    gh_A_LxBxI, g_B_LxBxI, g_delta_u_LxBxS, d_C = sums
    dh_B_LxBxI = g_B_LxBxI + dy_LxBxI * jnp.sum(C_LxBxS * B_LxBxS, axis=-1, keepdims=True)
    earlier = jnp.concatenate([jnp.zeros_like(gh_A_LxBxI[:1]), gh_A_LxBxI[:-1]], axis=0)
    d_delta = earlier + u * dh_B_LxBxI
    d_u = delta * dh_B_LxBxI
    d_B = g_delta_u_LxBxS + C_LxBxS * jnp.sum(dy_LxBxI * delta_u, axis=-1, keepdims=True)
    d_keep = None if keep_LxB is None else jnp.zeros_like(keep_LxB)
    return d_u, d_delta, d_A, d_B, d_C, d_keep


_sequential.defvjp(_sequential_fwd, _sequential_bwd)


def resolve_mode(mode: ScanMode) -> ScanMode:
    """``auto`` -> ``sequential`` on CPU, ``chunked`` elsewhere; other modes as given."""
    if mode != "auto":
        return mode
    return "sequential" if jax.default_backend() == "cpu" else "chunked"


def selective_scan(
    u_BxLxI: jax.Array,
    delta_BxLxI: jax.Array,
    A_IxS: jax.Array,
    B_BxLxS: jax.Array,
    C_BxLxS: jax.Array,
    D_I: jax.Array,
    *,
    mode: ScanMode = "auto",
    chunk_size: int = 64,
    remat: bool = False,
    keep_BxL: jax.Array | None = None,
) -> jax.Array:
    """``y_BxLxI`` (float32) of the selective scan from a zero state.

    Args:
      u_BxLxI: the scan's input (after the convolution and SiLU).
      delta_BxLxI: step sizes (>= 0; softplus already applied).
      A_IxS: the (negative) state matrix diagonal, per channel.
      B_BxLxS, C_BxLxS: input and output projections of each position.
      D_I: skip connection weight per channel.
      mode, chunk_size, remat: see the module docstring.
      keep_BxL: 0 where the state restarts (the first position of a packed window), 1
        elsewhere; None: never restarts.
    """
    f32 = jnp.float32
    u, delta, B, C = (x.astype(f32) for x in (u_BxLxI, delta_BxLxI, B_BxLxS, C_BxLxS))
    keep = None if keep_BxL is None else keep_BxL.astype(f32)
    A = A_IxS.astype(f32)
    batch, L, I = u.shape
    h0_BxIxS = jnp.zeros((batch, I, A.shape[1]), f32)
    mode = resolve_mode(mode)
    if mode == "sequential":
        time_major = (x.swapaxes(0, 1) for x in (u, delta, B, C))
        u_LxBxI, delta_LxBxI, B_LxBxS, C_LxBxS = time_major
        keep_LxB = None if keep is None else keep.T
        y_LxBxI = _sequential(u_LxBxI, delta_LxBxI, A, B_LxBxS, C_LxBxS, keep_LxB)
        return y_LxBxI.swapaxes(0, 1) + u * D_I.astype(f32)
    per_position = (u, delta, B, C, *([] if keep is None else [keep[..., None]]))
    if mode == "parallel":
        _, y_BxLxI = _scan_chunk(h0_BxIxS, per_position, A)
        return y_BxLxI + u * D_I.astype(f32)
    T = min(chunk_size, L)
    Q = -(-L // T)

    def chunked(x_BxLxX: jax.Array) -> jax.Array:  # -> Q x B x T x X, zero-padded on the right
        padded = jnp.pad(x_BxLxX, ((0, 0), (0, Q * T - L), (0, 0)))
        return padded.reshape(batch, Q, T, -1).swapaxes(0, 1)

    def body(h_BxIxS: jax.Array, inputs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        return _scan_chunk(h_BxIxS, inputs, A)

    if remat:
        body = jax.checkpoint(body)
    _, y_QxBxTxI = jax.lax.scan(body, h0_BxIxS, tuple(chunked(x) for x in per_position))
    y_BxLxI = y_QxBxTxI.swapaxes(0, 1).reshape(batch, Q * T, I)[:, :L]
    return y_BxLxI + u * D_I.astype(f32)


def selective_scan_step(
    h_BxIxS: jax.Array,
    u_BxI: jax.Array,
    delta_BxI: jax.Array,
    A_IxS: jax.Array,
    B_BxS: jax.Array,
    C_BxS: jax.Array,
    D_I: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One position of the recurrence: ``(h, y_BxI)`` from the previous state (float32)."""
    f32 = jnp.float32
    u, delta = u_BxI.astype(f32), delta_BxI.astype(f32)
    dA_BxIxS = jnp.exp(delta[..., None] * A_IxS.astype(f32))
    dBu_BxIxS = (delta * u)[..., None] * B_BxS.astype(f32)[:, None, :]
    h_BxIxS = dA_BxIxS * h_BxIxS + dBu_BxIxS
    y_BxI = jnp.einsum("bis,bs->bi", h_BxIxS, C_BxS.astype(f32)) + u * D_I.astype(f32)
    return h_BxIxS, y_BxI

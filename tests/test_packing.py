"""Packed windows: placement, invariants (no target lost or duplicated, segments never cross
users), exact per-target equivalence of the transformer's losses, the sampler and the step
with ``data.pack``, and config errors."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srt_jax.config import load_config
from srt_jax.data.packing import (
    first_fit,
    pack_batch,
    packed_or_not,
    padding_share,
    rows_for,
    window_lengths,
)
from srt_jax.data.sampler import WindowSampler
from srt_jax.data.splits import Segments
from srt_jax.errors import ConfigError
from srt_jax.models.factory import build_model

L, B = 12, 16


def _data(lengths, n_items=30, seed=0):
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = np.random.default_rng(seed).integers(1, n_items + 1, offsets[-1]).astype(np.int32)
    return items, Segments(offsets[:-1], offsets[1:], np.arange(len(lengths), dtype=np.int64))


def _sampler(pack=False, lengths=(3, 5, 8, 2, 14, 6, 30, 4, 9, 3), **kwargs):
    items, segments = _data(lengths)
    return WindowSampler(
        items, segments, batch_size=B, max_len=L, seed=1, prefetch=0, pack=pack, **kwargs
    )


def _targets(batch):
    """Sorted (user, history position, target) of every counted target."""
    user = (
        batch.user
        if batch.user.ndim == 2
        else np.broadcast_to(batch.user[:, None], batch.mask.shape)
    )
    keys = np.stack([user[batch.mask], batch.positions[batch.mask], batch.targets[batch.mask]])
    return keys[:, np.lexsort(keys[::-1])]


def test_first_fit_places_longest_first_without_overlap():
    lengths = np.array([5, 0, 7, 3, 5, 2])
    row, column, used = first_fit(lengths, 10)
    assert used == 3 and row[1] == column[1] == -1  # the empty block is not placed
    assert (row[2], column[2]) == (0, 0)  # longest first
    assert (row[0], column[0]) == (1, 0) and (row[4], column[4]) == (1, 5)  # ties in order
    assert (row[3], column[3]) == (0, 7)
    for r in range(used):
        spans = sorted((column[i], column[i] + lengths[i]) for i in np.flatnonzero(row == r))
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert spans[-1][1] <= 10


def test_packed_batches_keep_every_target_once_and_segments_within_one_user():
    sampler = _sampler()
    for k in range(20):
        batch = sampler.batch(k)
        needed = first_fit(window_lengths(batch), L)[2]
        packed = pack_batch(batch, needed)
        assert pack_batch(batch, needed - 1) is None
        assert packed.inputs.shape == (needed, L) and needed < B
        np.testing.assert_array_equal(_targets(packed), _targets(batch))
        assert np.count_nonzero(packed.inputs) == np.count_nonzero(batch.inputs)
        np.testing.assert_array_equal(packed.mask, packed.targets != 0)
        for r in range(needed):
            for s in np.unique(packed.segments[r][packed.segments[r] > 0]):
                cols = np.flatnonzero(packed.segments[r] == s)
                np.testing.assert_array_equal(np.diff(cols), 1)  # one contiguous block
                assert len(np.unique(packed.user[r, cols])) == 1  # of one user
                np.testing.assert_array_equal(np.diff(packed.positions[r, cols]), 1)
                np.testing.assert_array_equal(packed.slots[r, cols], np.arange(L - len(cols), L))
            pad = packed.segments[r] == 0
            assert not packed.inputs[r, pad].any() and (packed.user[r, pad] == -1).all()
        assert padding_share(packed) < padding_share(batch)


def test_a_batch_that_does_not_fit_is_trained_unpacked_with_segments():
    batch = _sampler().batch(0)
    fallback = packed_or_not(batch, 1)
    assert fallback.inputs.shape == (B, L)
    np.testing.assert_array_equal(fallback.segments, batch.inputs != 0)
    np.testing.assert_array_equal(fallback.slots, np.broadcast_to(np.arange(L), (B, L)))


def _window_ends(batch):
    """int [rows, L]: the history position of the last input of each position's window."""
    if batch.segments is None:
        return np.broadcast_to(batch.positions[:, -1:], batch.positions.shape)
    ends = np.zeros_like(batch.positions)
    for r, s in zip(*np.nonzero(batch.segments), strict=True):
        ends[r, s] = batch.positions[r][batch.segments[r] == batch.segments[r, s]].max()
    return ends


def _per_target_losses(model, batch):
    """Sorted ((user, window end, history position), cross-entropy) of every counted target
    (eval mode); a window drawn twice gives its targets twice."""
    segments = None if batch.segments is None else jnp.asarray(batch.segments)
    slots = None if batch.slots is None else jnp.asarray(batch.slots)
    hidden = model(jnp.asarray(batch.inputs), slots, segments_BxL=segments)
    logits = hidden @ model.item_table().T
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch.targets[..., None], -1)[..., 0]
    user = (
        batch.user
        if batch.user.ndim == 2
        else np.broadcast_to(batch.user[:, None], batch.mask.shape)
    )
    m = batch.mask
    keys = zip(user[m], _window_ends(batch)[m], batch.positions[m], strict=True)
    return sorted(
        ((int(u), int(e), int(p)), float(c))
        for (u, e, p), c in zip(keys, np.asarray(ce)[m], strict=True)
    )


MODELS = {
    "pre": [],
    "post": ["model.norm=post"],
    "rope": ["model.positions=rope"],
    "mamba": ["model.backbone=mamba", "model.mamba.d_state=4"],
    "mamba-parallel": [
        "model.backbone=mamba",
        "model.mamba.d_state=4",
        "model.mamba.scan=parallel",
    ],
    "mamba-chunked": [
        "model.backbone=mamba",
        "model.mamba.scan=chunked",
        "model.mamba.chunk_size=5",
    ],
}


def _model(name):
    shape = ["model.d_model=16", "model.n_layers=2", "model.dropout=0.1"]
    cfg = load_config(None, [*shape, *MODELS[name]]).model
    model = build_model(cfg, 30, L, nnx.Rngs(0))
    model.eval()
    return model


@pytest.mark.parametrize("name", MODELS)
def test_packed_losses_equal_unpacked_losses_target_by_target(name):
    model = _model(name)
    sampler = _sampler()
    for k in range(3):
        batch = sampler.batch(k)
        packed = pack_batch(batch, B)
        want, got = _per_target_losses(model, batch), _per_target_losses(model, packed)
        assert [k for k, _ in got] == [k for k, _ in want] and len(got) == batch.n_targets
        np.testing.assert_allclose([c for _, c in got], [c for _, c in want], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["pre", "mamba"])
def test_no_position_reads_another_segment(name):
    model = _model(name)
    packed = pack_batch(_sampler().batch(0), B)
    row = int(np.argmax((packed.segments == 2).any(axis=1)))  # a row with two windows
    first = packed.segments[row] == 1
    changed = packed.inputs.copy()
    changed[row, first] = (changed[row, first] % 30) + 1  # other items in segment 1

    def hidden(inputs):
        return np.asarray(
            model(jnp.asarray(inputs), jnp.asarray(packed.slots), segments_BxL=packed.segments)
        )

    before, after = hidden(packed.inputs), hidden(changed)
    later = packed.segments[row] >= 2
    np.testing.assert_array_equal(before[row, later], after[row, later])
    assert not np.allclose(before[row, first], after[row, first])


def test_the_sampler_packs_what_it_yields_and_trains_the_same_targets():
    plain, packing = _sampler(token_budget=500), _sampler(pack=True, token_budget=500)
    assert packing.packed_rows == rows_for(plain.batch, B) and packing.packed_rows < B
    got, want = list(packing.iter_batches()), list(plain.iter_batches())
    assert len(got) == len(want)
    for packed, batch in zip(got, want, strict=True):
        assert packed.segments is not None and packed.inputs.shape[0] in (packing.packed_rows, B)
        np.testing.assert_array_equal(_targets(packed), _targets(batch))
    assert sum(b.n_targets for b in got) == 500


def test_windows_that_fill_their_rows_are_not_packed():
    full = _sampler(pack=True, lengths=[40] * 10, mode="recent")
    assert full.packed_rows is None
    assert next(iter(full.iter_batches())).segments is None


def test_pack_rows_minimise_the_rows_computed_and_follow_the_devices():
    sampler = _sampler()
    needed = np.array([first_fit(window_lengths(sampler.batch(k)), L)[2] for k in range(64)])

    def cost(r):
        return np.mean(np.where(needed <= r, r, B))

    rows = rows_for(sampler.batch, B)
    assert all(cost(rows) <= cost(r) for r in range(1, B + 1))
    assert cost(rows) < cost(needed.max())  # better than packing for the worst batch
    by_four = rows_for(sampler.batch, B, multiple=4)
    assert by_four % 4 == 0 and all(cost(by_four) <= cost(r) for r in range(4, B + 1, 4))


def test_packing_with_adaptive_batches_is_a_config_error():
    with pytest.raises(ConfigError, match=r"false with train\.adaptive_batch"):
        load_config(None, ["data.pack=true", "train.adaptive_batch.scale=1.0"])


def test_a_packed_run_trains_and_evaluates(tmp_path):
    from srt_jax.train.loop import train

    overrides = [
        "data.dataset=synthetic",
        "data.synthetic.users=60",
        "data.synthetic.items=40",
        "data.synthetic.mean_length=12",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_len=16",
        "data.pack=true",
        "model.d_model=16",
        "model.n_layers=1",
        "train.batch_size=16",
        "train.tokens=3000",
        "train.epochs=null",
        "train.eval_every_tokens=1500",
    ]
    summary = train(load_config(None, overrides), tmp_path / "run", progress=False)
    assert summary["status"] == "done" and np.isfinite(summary["eval"]["loss"])
    assert summary["train_tokens"] == 3000 and summary["packed_rows"] < 16


def test_dataclass_replace_keeps_packing_fields():
    batch = pack_batch(_sampler().batch(0), B)
    truncated = batch.truncated(5)
    assert truncated.n_targets == 5 and truncated.segments is batch.segments
    assert dataclasses.replace(batch).slots is batch.slots

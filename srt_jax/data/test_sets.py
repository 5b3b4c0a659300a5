"""Ranking test sets that look past a user's most recent item (``eval.test_sets``).

Netflix's sliding-window study (Joshi et al. 2024, arXiv 2409.14517) asks whether training
on windows from the whole history teaches a model users' long-term preferences. The
leave-one-out test (the split's ``test`` targets: each training user's last item, called
``recent`` here) cannot show it alone, so a run can also be scored on:

- ``old_windows``: for each held-out user (never trained on) whose history ``[o, o + n)``
  is longer than ``L + 1``, :data:`OLD_WINDOWS_PER_USER` targets (fewer when the older
  part is shorter) drawn without replacement from the older part of the history, i.e.
  before its most recent ``L`` items: target positions in ``[o + 1, o + n - L)``, each
  predicted from the (up to ``L``) items before it. Drawn from ``(split_seed, user)``.
- ``long_history``: the ``recent`` targets of the users whose history before the target is
  longer than ``L`` — those a model reading ``L`` items cannot see whole, where the method
  should matter.

The ``future`` test set of the study is a split, not a test set: ``data.split: temporal``
trains on interactions before a global time ``T`` and tests each user's first interaction
after it (:mod:`srt_jax.data.splits`).
"""

from __future__ import annotations

import numpy as np

from srt_jax.data.splits import Split, Targets
from srt_jax.errors import ConfigError

OLD_WINDOWS_PER_USER = 4
_OLD_WINDOW_STREAM = 0x01D5


def old_window_targets(split: Split, max_len: int, seed: int) -> Targets:
    """The ``old_windows`` targets (module docstring) of ``split``'s held-out users.

    Args:
      split: the run's split (its held-out segments are whole histories).
      max_len: L, the context the model reads.
      seed: ``data.split_seed``.

    Raises:
      ConfigError: no held-out user has a history longer than ``L + 1``.
    """
    users, starts, positions = [], [], []
    for user, start, end in zip(
        split.heldout.user, split.heldout.start, split.heldout.end, strict=True
    ):
        older = np.arange(start + 1, end - max_len)
        if older.size == 0:
            continue
        rng = np.random.default_rng([seed, _OLD_WINDOW_STREAM, int(user)])
        size = min(OLD_WINDOWS_PER_USER, older.size)
        drawn = np.sort(rng.choice(older, size=size, replace=False))
        users.append(np.full(drawn.size, user))
        starts.append(np.full(drawn.size, start))
        positions.append(drawn)
    if not users:
        raise ConfigError(
            f"eval.test_sets includes 'old_windows', but no held-out user has more than "
            f"data.max_len + 1 = {max_len + 1} interactions "
            f"({len(split.heldout)} held-out users; raise data.heldout_users or lower "
            "data.max_len)",
            key="eval.test_sets",
        )
    return Targets(
        np.concatenate(users).astype(np.int64),
        np.concatenate(starts).astype(np.int64),
        np.concatenate(positions).astype(np.int64),
    )


def long_history_targets(targets: Targets, max_len: int) -> Targets:
    """The ``long_history`` subset of ``targets``: those with more than ``L`` items before
    the target.

    Raises:
      ConfigError: no target has.
    """
    keep = targets.target_pos - targets.context_start > max_len
    if not keep.any():
        raise ConfigError(
            f"eval.test_sets includes 'long_history', but no test user has more than "
            f"data.max_len = {max_len} interactions before the target",
            key="eval.test_sets",
        )
    return Targets(targets.user[keep], targets.context_start[keep], targets.target_pos[keep])


def build_test_sets(
    names: tuple[str, ...], split: Split, max_len: int, seed: int
) -> dict[str, Targets]:
    """name -> targets of each test set in ``names`` (see the module docstring)."""
    sets = {}
    for name in names:
        if name == "old_windows":
            sets[name] = old_window_targets(split, max_len, seed)
        else:
            sets[name] = long_history_targets(split.test, max_len)
    return sets


def describe(name: str, targets: Targets, max_len: int) -> str:
    """One line for the protocol: what test set ``name`` is and how many targets it has."""
    users = len(np.unique(targets.user))
    if name == "old_windows":
        return (
            f"{len(targets)} targets of {users} held-out users, up to {OLD_WINDOWS_PER_USER} "
            f"per user drawn before their most recent {max_len} items; context: the "
            f"{max_len} items before the target"
        )
    return f"the test targets of the {users} users with more than {max_len} items before them"

"""Checkpoint keeping: the last k and the best by validation NDCG@10, across processes."""

import numpy as np

from srt_jax.train.checkpoint import BEST_METRIC, Checkpoints


def _save(checkpoints, step, ndcg=None):
    state = {"w": np.full(3, float(step), np.float32)}
    metrics = None if ndcg is None else {BEST_METRIC: ndcg}
    checkpoints.save(step, state, {"step": step}, metrics)


def _steps(directory):
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_best_survives_a_new_manager_and_later_worse_checkpoints(tmp_path):
    """A resumed run opens a new manager: the best of the earlier session must stay kept."""
    first = Checkpoints(tmp_path, keep_last=1)
    _save(first, 1, ndcg=0.30)
    _save(first, 2, ndcg=0.10)
    first.close()
    resumed = Checkpoints(tmp_path, keep_last=1)
    _save(resumed, 3)
    _save(resumed, 4, ndcg=0.20)
    _save(resumed, 5)
    assert _steps(tmp_path) == [1, 5]
    state, loop = resumed.restore(1, {"w": np.zeros(3, np.float32)})
    assert loop == {"step": 1} and float(state["w"][0]) == 1.0
    resumed.close()


def test_a_better_checkpoint_replaces_the_best(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep_last=1)
    _save(checkpoints, 1, ndcg=0.1)
    _save(checkpoints, 2, ndcg=0.3)
    _save(checkpoints, 3)
    checkpoints.close()
    assert _steps(tmp_path) == [2, 3]

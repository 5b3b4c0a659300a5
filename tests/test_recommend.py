"""Serving (srt_jax.serve, ``srt-jax recommend``): top-k from a run's best checkpoint equals a
direct computation, seen-item filtering, incremental events (Mamba's recurrent state equals
re-encoding), JSON and batch output, bad inputs, and checkpoints of another model.

Compiling a training step and an evaluation takes tens of seconds per backbone on a busy
2-core machine, so each run here is written the way the loop writes one — its config, and
orbax checkpoints with loop states — from the model's own initial parameters, perturbed:
step 3 is the best validation checkpoint, step 6 the latest (a worse one), so restoring the
wrong one shows.
"""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from srt_jax.cli import main
from srt_jax.config import load_config
from srt_jax.data.synthetic import synthesize_store
from srt_jax.errors import ConfigError, DataError, TrainingError
from srt_jax.serve import Recommender
from srt_jax.train.build import build_run
from srt_jax.train.checkpoint import BEST_METRIC, Checkpoints
from srt_jax.train.loop_state import LoopState
from srt_jax.train.run_dir import RunDirectory

TINY = [
    "data.max_len=8",
    "model.d_model=16",
    "model.n_layers=1",
    "train.batch_size=16",
    "train.epochs=null",
    "train.tokens=2500",
    "train.keep_checkpoints=1",
    "eval.batch_users=64",
]
BACKBONE = {"transformer": ["model.n_heads=2"], "mamba": ["model.backbone=mamba"]}
BEST, LATEST = 3, 6
N_ITEMS = 40


def item_id(index):
    return 1000 + 3 * int(index)  # original ids unlike indices, so a mix-up shows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "syn"
    synthesize_store(path, users=120, items=N_ITEMS, mean_length=16, seed=0, progress=False)
    item_ids = np.array([-1] + [item_id(i) for i in range(1, N_ITEMS + 1)], np.int64)
    np.save(path / "item_ids.npy", item_ids)
    np.save(path / "user_ids.npy", np.array([f"u{u}" for u in range(120)]))
    return path


def perturbed(params, seed):
    """``params`` plus N(0, 0.3^2) noise, in numpy (eager jax ops would compile per shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: np.asarray(x) + 0.3 * rng.standard_normal(x.shape).astype(x.dtype), params
    )


def write_run(root, store, backbone):
    """A run directory of ``backbone``: its config and two checkpoints, step BEST the best by
    validation NDCG@10 and step LATEST the latest. Returns ``(path, best params, parts)``."""
    config = load_config(None, [*TINY, f"data.dataset={store}", *BACKBONE[backbone]])
    run = RunDirectory(root / backbone)
    run.claim(config)
    parts = build_run(config, progress=False)
    state = parts.step.init_state()
    checkpoints = Checkpoints(run.checkpoint_dir, keep_last=1)
    best_params = perturbed(state["params"], seed=BEST)
    best = None
    for step, params, ndcg in (
        (BEST, best_params, 0.5),
        (LATEST, perturbed(state["params"], seed=LATEST), 0.1),
    ):
        record = {"step": step, "tokens": 100 * step, "loss": 3.0, "metrics": {BEST_METRIC: ndcg}}
        best = best or record
        loop = LoopState(step=step, tokens=100 * step, best=best, last_eval=record)
        checkpoints.save(step, {**state, "params": params}, loop.to_json(), {BEST_METRIC: ndcg})
    checkpoints.close()
    return run.path, best_params, parts


@pytest.fixture(scope="module")
def runs(tmp_path_factory, store):
    root = tmp_path_factory.mktemp("runs")
    return {backbone: write_run(root, store, backbone) for backbone in BACKBONE}


@pytest.fixture(scope="module")
def recs(runs):
    return {backbone: Recommender.from_run_dir(runs[backbone][0]) for backbone in BACKBONE}


def direct_scores(rec, params, history, *, full=False):
    """Scores of every item: the model's hidden state at the last position of the
    (left-padded) window, times the item table — no serving code involved."""
    read = history if full else history[-rec.max_len :]
    window = np.zeros((1, max(rec.max_len, len(read))), np.int32)
    window[0, window.shape[1] - len(read) :] = read
    return np.array(_last_scores(rec._graphdef, params, rec._rest, window))


@jax.jit(static_argnums=0)
def _last_scores(graphdef, params, rest, window_1xL):
    net = nnx.merge(graphdef, params, rest)
    return net(window_1xL)[0, -1] @ net.item_table().T


def snapshot(path):
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*"))


def run_cli(capsys, argv):
    status = main(["recommend", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


# --------------------------------------------------------------------------- the library


@pytest.mark.parametrize("backbone", list(BACKBONE))
def test_top_k_equals_the_restored_models_scores_at_the_best_checkpoint(recs, runs, backbone):
    rec, (_, best_params, _) = recs[backbone], runs[backbone]
    assert rec.step == BEST and f"step {BEST}" in rec.checkpoint
    history, part = rec.user_history("u7")
    assert "training part" in part and len(history) > rec.max_len
    state = rec.encode(history)
    assert state.context == rec.max_len
    top = rec.top_k(state, 5)
    expected = direct_scores(rec, best_params, history)
    expected[0] = -np.inf
    order = np.argsort(-expected, kind="stable")[:5]
    np.testing.assert_array_equal(top.indices, order)
    np.testing.assert_allclose(top.scores, expected[order], rtol=1e-5, atol=1e-5)
    assert top.ids == [item_id(i) for i in order]


def test_a_users_history_is_the_training_part_or_a_held_out_users_whole_history(recs):
    rec = recs["transformer"]
    store, split = rec.store, rec.split
    user = int(split.train.user[0])
    history, part = rec.user_history(f"u{user}")
    start, end = store.offsets[user], store.offsets[user + 1]
    np.testing.assert_array_equal(history, store.items[start : end - 2])  # leave-one-out
    assert "before its valid/test targets" in part
    held = int(split.heldout.user[0])
    history, part = rec.user_history(f"u{held}")
    np.testing.assert_array_equal(history, store.history(held))
    assert "held-out" in part


def test_seen_filtering_excludes_the_history_and_nothing_else(recs):
    rec = recs["mamba"]
    history = rec.item_indices([item_id(i) for i in (3, 5, 5, 9, 12)])
    state = rec.encode(history)
    everything = rec.top_k(state, N_ITEMS + 5, exclude=state.seen)
    assert sorted(everything.indices) == sorted(set(range(1, N_ITEMS + 1)) - {3, 5, 9, 12})
    unfiltered = rec.top_k(state, N_ITEMS)
    assert sorted(unfiltered.indices) == list(range(1, N_ITEMS + 1))  # never item 0
    kept = [i for i in unfiltered.indices if i not in {3, 5, 9, 12}]
    np.testing.assert_array_equal(everything.indices, kept)  # same order otherwise


def test_mamba_new_events_carry_the_state_and_equal_re_encoding(recs, runs):
    rec = recs["mamba"]
    history, _ = rec.user_history("u7")
    new = rec.item_indices([item_id(i) for i in (4, 17, 4, 30)])
    full = Recommender.from_run_dir(runs["mamba"][0], full_history=True)
    state = rec.encode(history)
    for n, item in enumerate(new, 1):
        state = rec.observe(state, item)
        extended = np.concatenate([history[-rec.max_len :], new[:n]])
        again = full.encode(extended)
        assert state.context == again.context == rec.max_len + n  # the window, then events
        np.testing.assert_allclose(state.hidden, again.hidden, rtol=1e-6, atol=1e-6)
    top, top_again = rec.top_k(state, 5, state.seen), full.top_k(again, 5, state.seen)
    np.testing.assert_array_equal(top.indices, top_again.indices)
    np.testing.assert_allclose(top.scores, top_again.scores, rtol=1e-6, atol=1e-6)
    # and the recurrent state equals the parallel forward over the extended history
    expected = direct_scores(rec, runs["mamba"][1], extended, full=True)
    np.testing.assert_allclose(rec.top_k(state, 3).scores, np.sort(expected[1:])[::-1][:3], 1e-4)


def test_transformer_new_events_re_encode_the_last_max_len(recs):
    rec = recs["transformer"]
    history, _ = rec.user_history("u7")
    state = rec.observe(rec.observe(rec.encode(history), 4), 17)
    again = rec.encode(np.concatenate([history, [4, 17]]))
    assert state.context == again.context == rec.max_len
    np.testing.assert_allclose(state.hidden, again.hidden, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(state.seen, np.concatenate([history, [4, 17]]))


def test_batches_equal_one_history_at_a_time(recs):
    rec = recs["transformer"]
    histories = [rec.user_history(f"u{u}")[0] for u in range(5)] + [np.array([3])]
    rec.batch_rows = 4  # two batches, the second padded
    try:
        many = rec.recommend_many(histories, 4, filter_seen=True)
    finally:
        rec.batch_rows = 64
    for history, top in zip(histories, many, strict=True):
        one = rec.top_k(rec.encode(history), 4, exclude=history)
        np.testing.assert_array_equal(top.indices, one.indices)
        np.testing.assert_allclose(top.scores, one.scores, rtol=1e-5, atol=1e-6)


def test_library_errors_name_the_bad_input(recs):
    rec = recs["transformer"]
    with pytest.raises(DataError, match=r"item ids '7', 'x' are not in the run's catalog"):
        rec.item_indices([item_id(1), "7", "x"])
    with pytest.raises(DataError, match=r"user id 'u9999' is not a user"):
        rec.user_history("u9999")
    with pytest.raises(DataError, match="empty history"):
        rec.encode(np.array([], np.int32))


# --------------------------------------------------------------------------- the command


def test_cli_json_lines_per_event(capsys, runs):
    status, out, err = run_cli(
        capsys,
        [
            runs["mamba"][0],
            "--user=u7",
            "--json",
            "--top-k=4",
            "--filter-seen",
            f"--then={item_id(4)},{item_id(17)}",
        ],
    )
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["after"] for r in records] == [None, item_id(4), item_id(17)]
    assert [r["context"] for r in records] == [8, 9, 10]
    first = records[0]
    assert set(first) == {"user", "history", "events", "context", "after", "top_k"}
    assert first["user"] == "u7" and "training part" in first["history"]
    assert records[2]["events"] == first["events"] + 2
    for record in records:
        assert len(record["top_k"]) == 4
        assert all(set(e) == {"item", "score"} for e in record["top_k"])
        assert all(isinstance(e["item"], int) and e["item"] > 1000 for e in record["top_k"])
    scores = [e["score"] for e in first["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert item_id(4) not in [e["item"] for e in records[1]["top_k"]]  # seen by then


def test_cli_text_output(capsys, runs):
    status, out, _ = run_cli(capsys, [runs["transformer"][0], f"--items={item_id(3)}", "--top-k=2"])
    assert status == 0
    lines = out.splitlines()
    assert "transformer" in lines[0] and f"step {BEST}" in lines[0]
    assert "1 events" in lines[1] and lines[2].split() == ["rank", "item", "score"]
    assert len(lines) == 5


def test_cli_batch_file_one_json_line_per_history(capsys, runs, recs, tmp_path):
    path = tmp_path / "histories.txt"
    path.write_text(
        f"alice\t{item_id(1)},{item_id(2)} {item_id(3)}\n\n{item_id(9)}\nbob\t{item_id(5)}\n"
    )
    status, out, err = run_cli(
        capsys, [runs["transformer"][0], "--histories", path, "--top-k=3", "--filter-seen"]
    )
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["line"], r["label"], r["events"]) for r in records] == [
        (1, "alice", 3),
        (3, None, 1),
        (4, "bob", 1),
    ]
    rec = recs["transformer"]
    for record, history in zip(records, ([1, 2, 3], [9], [5]), strict=True):
        one = rec.top_k(rec.encode(np.array(history)), 3, exclude=np.array(history))
        assert [e["item"] for e in record["top_k"]] == one.ids
        np.testing.assert_allclose([e["score"] for e in record["top_k"]], one.scores, rtol=1e-5)


@pytest.mark.parametrize(
    ("which", "args", "message"),
    [
        ("transformer", ["--user=u9999"], "user id 'u9999' is not a user of the run's store"),
        ("transformer", ["--items=1003,7"], "item id '7' is not in the run's catalog"),
        ("transformer", ["--items=1003", "--then=1006,8"], "--then: item id '8' is not in"),
        ("transformer", ["--items= , "], "empty history"),
        ("transformer", ["--items=1003", "--full-history"], "--full-history needs a recurrent"),
        ("mamba", ["--histories", "FILE"], "histories.txt:2: item id 'zz' is not in the run's"),
        ("mamba", ["--histories", "FILE", "--then=1003"], "--then applies to --user or --items"),
        ("empty", ["--items=1003"], "no checkpoint to recommend from"),
        ("mixed", ["--items=1003"], "the saved parameters do not match the run's model"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    capsys, runs, tmp_path, which, args, message
):
    histories = tmp_path / "histories.txt"
    histories.write_text("1003 1006\nlabel\t1003 zz\n")
    run_dir = tmp_path / which
    if which in BACKBONE:
        run_dir = runs[which][0]
    else:  # a mamba config without checkpoints, or with the transformer's
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text((runs["mamba"][0] / "config.yaml").read_text())
        if which == "mixed":
            source = runs["transformer"][0] / "checkpoints" / str(BEST)
            target = run_dir / "checkpoints" / str(BEST)
            for path in source.rglob("*"):
                if path.is_file():
                    (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                    (target / path.relative_to(source)).write_bytes(path.read_bytes())
    before = snapshot(run_dir)
    argv = [run_dir, *(str(histories) if a == "FILE" else a for a in args)]
    status, out, err = run_cli(capsys, argv)
    assert status == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(run_dir) == before
    if which == "mixed":
        assert f"checkpoint {run_dir / 'checkpoints' / str(BEST)}" in err
        status = main(["eval", str(run_dir)])  # srt-jax eval goes through the same check
        assert status == 2 and message in capsys.readouterr().err


def test_restoring_another_backbones_checkpoint_names_it(runs):
    transformer_dir = runs["transformer"][0] / "checkpoints"
    mamba_parts = runs["mamba"][2]
    checkpoints = Checkpoints(transformer_dir, keep_last=1)
    try:
        with pytest.raises(TrainingError) as caught:
            checkpoints.restore(BEST, mamba_parts.step.abstract_state())
    finally:
        checkpoints.close()
    message = str(caught.value)
    assert f"checkpoint {transformer_dir.absolute() / str(BEST)}" in message
    assert "do not match the run's model" in message
    assert "not in the checkpoint: params." in message and "not in the model: params." in message


def test_full_history_is_refused_for_the_transformer_before_building(runs, monkeypatch):
    import srt_jax.serve as serve

    monkeypatch.setattr(serve, "restore_best", lambda *a, **k: pytest.fail("built the run"))
    with pytest.raises(ConfigError, match="needs a recurrent backbone"):
        Recommender.from_run_dir(runs["transformer"][0], full_history=True)

"""The SQLite run registry: atomic claims across processes, heartbeats, attempts, retries."""

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from srt_jax.cli import main
from srt_jax.commands.sweep import format_status
from srt_jax.errors import DataError
from srt_jax.sweep.registry import NewRun, Registry


def new_runs(n: int) -> list[NewRun]:
    return [
        NewRun(
            f"run{i:02d}", {"train": {"seed": i}}, 100 + i, 50 + i, 1000 * (i + 1), 1e9 * (i + 1)
        )
        for i in range(n)
    ]


def make_registry(root: Path, n: int = 3) -> Registry:
    registry = Registry(root, create=True)
    registry.set_name("test")
    registry.add_runs(new_runs(n))
    return registry


def test_adding_runs_is_idempotent_and_a_root_holds_one_sweep(tmp_path):
    registry = make_registry(tmp_path, 3)
    assert registry.add_runs(new_runs(5)) == 2
    runs = registry.runs()
    assert [r["run_id"] for r in runs] == [f"run{i:02d}" for i in range(5)]
    assert [r["position"] for r in runs] == list(range(5))
    assert runs[1]["config"] == {"train": {"seed": 1}} and runs[1]["run_dir"] == "runs/run01"
    assert (runs[1]["N"], runs[1]["N_non_embedding"], runs[1]["D"]) == (101, 51, 2000)
    assert registry.counts() == {"pending": 5, "running": 0, "done": 0, "failed": 0}
    with pytest.raises(DataError, match="holds sweep 'test', not 'other'"):
        registry.set_name("other")
    with pytest.raises(DataError, match="no sweep registry"):
        Registry(tmp_path / "nowhere")
    assert Registry(tmp_path).path.read_bytes()[:16] == b"SQLite format 3\x00"


def test_a_registry_appears_with_its_tables_and_leaves_no_staging_file(tmp_path):
    Registry(tmp_path, create=True).close()
    names = {path.name for path in tmp_path.iterdir()}
    assert not [name for name in names if ".creating-" in name]
    with Registry(tmp_path) as reader:
        assert reader.runs() == [] and reader.counts()["pending"] == 0
    with Registry(tmp_path, create=True) as again:  # an existing registry is opened as it is
        again.set_name("kept")
    with (
        Registry(tmp_path, create=True) as reopened,
        pytest.raises(DataError, match="holds sweep 'kept'"),
    ):
        reopened.set_name("other")


def test_claims_follow_position_and_only_the_holder_records_the_outcome(tmp_path):
    registry = make_registry(tmp_path)
    first = registry.claim("a", heartbeat_timeout=60, max_attempts=3)
    second = registry.claim("b", heartbeat_timeout=60, max_attempts=3)
    assert (first.run_id, second.run_id, first.attempt) == ("run00", "run01", 1)
    assert first.run_dir == tmp_path / "runs" / "run00"
    assert not registry.complete("run00", "b", {"x": 1})  # b does not hold run00
    assert registry.complete("run00", "a", {"x": 1})
    assert not registry.complete("run00", "a", {"x": 2})  # already done
    assert registry.fail("run01", "b", "boom")
    counts = registry.counts()
    assert (counts["done"], counts["failed"], counts["pending"]) == (1, 1, 1)
    runs = {r["run_id"]: r for r in registry.runs()}
    assert runs["run00"]["summary"] == {"x": 1} and runs["run01"]["error"] == "boom"
    assert [e["event"] for e in registry.events("run00")] == ["claim", "done"]


def test_an_expired_heartbeat_lets_another_worker_take_the_run(tmp_path):
    registry = make_registry(tmp_path, 1)
    assert registry.claim("a", heartbeat_timeout=0.2, max_attempts=3).run_id == "run00"
    assert registry.claim("b", heartbeat_timeout=0.2, max_attempts=3) is None
    assert registry.heartbeat(["run00"], "a") == []
    time.sleep(0.3)
    claim = registry.claim("b", heartbeat_timeout=0.2, max_attempts=3)
    assert claim.run_id == "run00" and claim.attempt == 2
    assert registry.heartbeat(["run00"], "a") == ["run00"]  # a has lost it
    assert not registry.complete("run00", "a", {})
    assert registry.complete("run00", "b", {})
    events = registry.events("run00")
    assert [e["event"] for e in events] == ["claim", "reclaim", "done"]
    assert "heartbeat of a expired" in events[1]["detail"]


def test_a_run_whose_workers_keep_dying_fails_after_max_attempts(tmp_path):
    registry = make_registry(tmp_path, 1)
    for worker in ("a", "b"):
        assert registry.claim(worker, heartbeat_timeout=0.05, max_attempts=2) is not None
        time.sleep(0.1)
    assert registry.claim("c", heartbeat_timeout=0.05, max_attempts=2) is None
    (run,) = registry.runs()
    assert run["status"] == "failed" and "gave up after 2 attempts" in run["error"]
    assert registry.unfinished() == 0


def test_retry_failed_and_release(tmp_path):
    registry = make_registry(tmp_path, 2)
    registry.claim("a", heartbeat_timeout=60, max_attempts=3)
    registry.fail("run00", "a", "nan loss")
    assert registry.retry_failed() == 1
    run = registry.runs()[0]
    assert (run["status"], run["attempts"], run["error"]) == ("pending", 0, None)
    claim = registry.claim("b", heartbeat_timeout=60, max_attempts=3)
    assert claim.run_id == "run00"
    assert registry.release("run00", "b", "shutting down")
    run = registry.runs()[0]
    assert (run["status"], run["attempts"], run["worker"]) == ("pending", 0, None)
    assert [e["event"] for e in registry.events("run00")][-3:] == ["retry", "claim", "release"]


def test_release_after_a_crash_counts_the_attempt(tmp_path):
    """The Ray executor gives back the run of a dead task with its attempt counted."""
    registry = make_registry(tmp_path, 1)
    first = registry.claim("a", heartbeat_timeout=60, max_attempts=2)
    assert registry.release("run00", "a", "ray task failed", attempt_counts=True)
    run = registry.runs()[0]
    assert (run["status"], run["attempts"], run["worker"]) == ("pending", 1, None)
    second = registry.claim("a", heartbeat_timeout=60, max_attempts=2)
    assert (first.attempt, second.attempt) == (1, 2)


def _claim_all(root: str, worker: str, start, queue) -> None:
    start.wait()
    claimed = []
    with Registry(root) as registry:
        while True:
            claim = registry.claim(worker, heartbeat_timeout=600, max_attempts=3)
            if claim is None:
                break
            claimed.append(claim.run_id)
            time.sleep(0.005)  # let the others in between
            registry.complete(claim.run_id, worker, {"by": worker})
    queue.put((worker, claimed))


def test_concurrent_processes_claim_each_run_exactly_once(tmp_path):
    make_registry(tmp_path, 20).close()
    context = multiprocessing.get_context("spawn")
    start, queue = context.Event(), context.Queue()
    procs = [
        context.Process(target=_claim_all, args=(str(tmp_path), f"w{i}", start, queue))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    start.set()
    results = dict(queue.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    claimed = [run_id for runs in results.values() for run_id in runs]
    assert sorted(claimed) == [f"run{i:02d}" for i in range(20)]
    with Registry(tmp_path) as registry:
        assert registry.counts()["done"] == 20
        for run in registry.runs():
            assert (
                run["summary"]["by"] in results and run["run_id"] in results[run["summary"]["by"]]
            )
        assert sum(e["event"] == "claim" for e in registry.events()) == 20


def test_status_lists_runs_and_the_skipped_combinations_with_their_reason(tmp_path):
    registry = make_registry(tmp_path, 2)
    reason = "D = 10 tokens is below min_tokens 50"
    registry.set_skipped([({"model.d_model": 64}, 1e9, 10, reason)])
    text = format_status(registry)
    assert text.startswith("sweep test in ") and "0 done, 0 running, 2 pending, 0 failed" in text
    assert "run00" in text and "run01" in text
    assert (
        f"skipped (1 combinations that cannot run):\n  C=1e+09 model.d_model=64: {reason}" in text
    )


def test_a_damaged_or_foreign_registry_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    (root / "registry.sqlite").write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(DataError, match="the sweep registry is damaged"):
        Registry(root)
    assert main(["sweep", "status", "--root", str(root)]) == 2
    assert "registry.sqlite: the sweep registry is damaged" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / "registry.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DataError, match="not a sweep registry"):
        Registry(other)


def test_a_registry_locked_past_the_timeout_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "root"
    Registry(root, create=True).close()
    monkeypatch.setattr(Registry, "LOCK_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(root / "registry.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = r"stayed locked by another process for 0\.2 s"
        with pytest.raises(DataError, match=locked), Registry(root) as registry:
            registry.set_name("x")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

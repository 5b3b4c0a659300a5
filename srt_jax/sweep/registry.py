"""The run registry of one sweep: a SQLite database (WAL mode) at ``<root>/registry.sqlite``.

Table ``runs``: one row per run (``run_id`` = config hash, so a config is in a sweep once)
with its resolved ``config`` (JSON), ``run_dir`` (relative to the root), ``status`` (pending /
running / done / failed), ``attempts`` (claims so far), the claiming ``worker`` and its
``heartbeat`` (unix seconds), ``started`` / ``finished`` times, ``error`` text, the run's
``summary`` (JSON), its plan figures ``N``, ``N_non_embedding``, ``D`` (tokens), ``C``
(FLOPs), ``budget`` (the IsoFLOP budget it was sized for) and ``position`` (claim order).
Table ``events`` logs every claim, reclaim, release, completion and failure; table ``meta``
holds the sweep's name; table ``skipped`` the plan's infeasible combinations.

Workers claim a run atomically: ``BEGIN IMMEDIATE`` (one writer at a time), pick the first
run (by position) that is pending or running with a heartbeat older than the claimer's
timeout, and mark it running under the claimer's name. A worker that keeps its heartbeat
fresh keeps its run; one that dies loses it after the timeout, and the run is claimed again
(its run directory resumes from the last checkpoint). A run whose worker died
``max_attempts`` times is marked failed. Completion and failure are recorded only by the
worker that holds the run, so a run is done exactly once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srt_jax.errors import DataError

REGISTRY_FILE = "registry.sqlite"
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    config TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat REAL,
    started REAL,
    finished REAL,
    error TEXT,
    summary TEXT,
    N INTEGER,
    N_non_embedding INTEGER,
    D INTEGER,
    C REAL,
    budget REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    run_id TEXT NOT NULL,
    event TEXT NOT NULL,
    worker TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS skipped (
    position INTEGER PRIMARY KEY,
    assignments TEXT NOT NULL,
    budget REAL,
    D INTEGER,
    reason TEXT NOT NULL
);
"""


def _create_atomically(path: Path) -> None:
    """Write an empty registry (every table) beside ``path`` and link it into place.

    A reader never sees ``path`` without its tables; of two creators racing, the first
    link wins and the second leaves the first's database as it is.
    """
    staging = path.with_name(f"{path.name}.creating-{os.getpid()}")
    staging.unlink(missing_ok=True)
    db = sqlite3.connect(staging, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
    finally:
        db.close()
    try:
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        staging.unlink()


@dataclass(frozen=True)
class NewRun:
    """A run to add: its id, resolved config (plain dict) and plan figures."""

    run_id: str
    config: dict[str, Any]
    n_params: int
    n_non_embedding: int
    tokens: int
    flops: float
    budget: float | None = None


@dataclass(frozen=True)
class Claim:
    """A run a worker now holds."""

    run_id: str
    config: dict[str, Any]
    run_dir: Path
    attempt: int


class Registry:
    """A connection to the registry of the sweep at ``root`` (one per thread).

    A registry that another process keeps locked past :attr:`LOCK_TIMEOUT_S`, or whose file
    is damaged or not a registry, is a :class:`DataError` naming it.
    """

    LOCK_TIMEOUT_S = 60.0

    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.path = self.root / REGISTRY_FILE
        if not create and not self.path.is_file():
            raise DataError(
                f"{self.root}: no sweep registry here ({REGISTRY_FILE} is missing); "
                "start the sweep with `srt-jax sweep run SPEC`"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if create and not self.path.is_file():
            _create_atomically(self.path)
        timeout = self.LOCK_TIMEOUT_S
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            if create:
                self._db.executescript(_SCHEMA)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as err:
            raise self._error(err) from None
        if not {"runs", "events", "meta"} <= tables:
            raise DataError(
                f"{self.path}: not a sweep registry (it has no runs, events and meta tables)"
            )

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _error(self, err: sqlite3.DatabaseError) -> DataError:
        """A clear error for a locked or damaged registry database."""
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            return DataError(
                f"{self.path}: the sweep registry stayed locked by another process for "
                f"{self.LOCK_TIMEOUT_S:g} s ({err}); wait for it, or stop it"
            )
        return DataError(
            f"{self.path}: the sweep registry is damaged ({err}); the runs' directories "
            "under runs/ are intact: move the registry aside and run the sweep's spec again "
            "to register them anew (finished runs return their summaries at once)"
        )

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database's write lock at once (waiting up to
        :attr:`LOCK_TIMEOUT_S` for another writer)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as err:
            raise self._error(err) from None
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(self, run_id: str, event: str, worker: str | None, detail: str = "") -> None:
        self._db.execute(
            "INSERT INTO events (time, run_id, event, worker, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), run_id, event, worker, detail),
        )

    # ------------------------------------------------------------------ sweep set-up

    def name(self) -> str | None:
        """The sweep name recorded at creation (None before :meth:`set_name`)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
        return None if row is None else row["value"]

    def set_name(self, name: str) -> None:
        """Record the sweep's name; a root belongs to one sweep (DataError otherwise)."""
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('name', ?)", (name,))
            elif row["value"] != name:
                raise DataError(
                    f"{self.root} holds sweep {row['value']!r}, not {name!r}: give the sweep "
                    "its own --root"
                )

    def add_runs(self, runs: Iterable[NewRun]) -> int:
        """Add runs not yet registered (by run id); return how many were new."""
        added = 0
        with self._write() as db:
            position = db.execute("SELECT COALESCE(MAX(position), -1) FROM runs").fetchone()[0]
            for run in runs:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO runs (run_id, position, config, run_dir, N, "
                    "N_non_embedding, D, C, budget) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.run_id,
                        position + 1,
                        json.dumps(run.config, sort_keys=True),
                        f"runs/{run.run_id}",
                        run.n_params,
                        run.n_non_embedding,
                        run.tokens,
                        run.flops,
                        run.budget,
                    ),
                )
                if cursor.rowcount:
                    position += 1
                    added += 1
        return added

    def set_skipped(self, skipped: Iterable[tuple[dict[str, Any], float | None, int, str]]) -> None:
        """Replace the list of infeasible combinations (assignments, budget, D, reason)."""
        with self._write() as db:
            db.execute("DELETE FROM skipped")
            db.executemany(
                "INSERT INTO skipped (position, assignments, budget, D, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                [(i, json.dumps(a), b, d, r) for i, (a, b, d, r) in enumerate(skipped)],
            )

    # ------------------------------------------------------------------ workers

    def claim(self, worker: str, *, heartbeat_timeout: float, max_attempts: int) -> Claim | None:
        """Atomically take the next pending run, or a running one whose heartbeat expired.

        Runs whose heartbeat expired after ``max_attempts`` claims are marked failed first.
        Returns None when nothing can be claimed now.
        """
        now = time.time()
        expired = now - heartbeat_timeout
        with self._write() as db:
            dead = db.execute(
                "SELECT run_id, worker, attempts FROM runs WHERE status = 'running' "
                "AND heartbeat < ? AND attempts >= ?",
                (expired, max_attempts),
            ).fetchall()
            for row in dead:
                error = (
                    f"gave up after {row['attempts']} attempts: the worker holding the run "
                    f"({row['worker']}) stopped sending heartbeats each time"
                )
                db.execute(
                    "UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE run_id = ?",
                    (error, now, row["run_id"]),
                )
                self._event(row["run_id"], "failed", row["worker"], error)
            row = db.execute(
                "SELECT run_id, status, worker, config, run_dir, attempts FROM runs "
                "WHERE status = 'pending' OR (status = 'running' AND heartbeat < ?) "
                "ORDER BY position LIMIT 1",
                (expired,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', worker = ?, heartbeat = ?, started = ?, "
                "attempts = attempts + 1, error = NULL WHERE run_id = ?",
                (worker, now, now, row["run_id"]),
            )
            if row["status"] == "running":
                detail = f"heartbeat of {row['worker']} expired"
                self._event(row["run_id"], "reclaim", worker, detail)
            else:
                self._event(row["run_id"], "claim", worker)
        return Claim(
            run_id=row["run_id"],
            config=json.loads(row["config"]),
            run_dir=self.root / row["run_dir"],
            attempt=row["attempts"] + 1,
        )

    def heartbeat(self, run_ids: Iterable[str], worker: str) -> list[str]:
        """Refresh the heartbeat of runs ``worker`` holds; return those it no longer holds."""
        lost = []
        now = time.time()
        with self._write() as db:
            for run_id in run_ids:
                cursor = db.execute(
                    "UPDATE runs SET heartbeat = ? WHERE run_id = ? AND worker = ? "
                    "AND status = 'running'",
                    (now, run_id, worker),
                )
                if not cursor.rowcount:
                    lost.append(run_id)
        return lost

    def complete(self, run_id: str, worker: str, summary: dict[str, Any]) -> bool:
        """Record run ``run_id`` done with ``summary``; False if ``worker`` no longer holds it."""
        return self._finish(run_id, worker, "done", None, summary)

    def fail(self, run_id: str, worker: str, error: str, summary: dict | None = None) -> bool:
        """Record run ``run_id`` failed with ``error``; False if ``worker`` no longer holds it."""
        return self._finish(run_id, worker, "failed", error, summary)

    def _finish(
        self, run_id: str, worker: str, status: str, error: str | None, summary: dict | None
    ) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, error = ?, summary = ?, finished = ? "
                "WHERE run_id = ? AND worker = ? AND status = 'running'",
                (
                    status,
                    error,
                    None if summary is None else json.dumps(summary),
                    time.time(),
                    run_id,
                    worker,
                ),
            )
            if cursor.rowcount:
                self._event(run_id, status, worker, error or "")
        return bool(cursor.rowcount)

    def release(
        self, run_id: str, worker: str, reason: str, *, attempt_counts: bool = False
    ) -> bool:
        """Give a held run back (pending): on shutdown the attempt is not counted; when the
        process running it died (``attempt_counts``) it is, so ``max_attempts`` applies."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = 'pending', worker = NULL, heartbeat = NULL, "
                "attempts = MAX(attempts - ?, 0) WHERE run_id = ? AND worker = ? "
                "AND status = 'running'",
                (0 if attempt_counts else 1, run_id, worker),
            )
            if cursor.rowcount:
                self._event(run_id, "release", worker, reason)
        return bool(cursor.rowcount)

    def retry_failed(self) -> int:
        """Make every failed run pending again with its attempts reset; return how many."""
        with self._write() as db:
            failed = [
                r["run_id"]
                for r in db.execute("SELECT run_id FROM runs WHERE status = 'failed'").fetchall()
            ]
            db.execute(
                "UPDATE runs SET status = 'pending', attempts = 0, worker = NULL, "
                "heartbeat = NULL, error = NULL WHERE status = 'failed'"
            )
            for run_id in failed:
                self._event(run_id, "retry", None)
        return len(failed)

    # ------------------------------------------------------------------ reading

    def counts(self) -> dict[str, int]:
        """Number of runs per status (every status present, 0 if none)."""
        counts = dict.fromkeys(STATUSES, 0)
        for row in self._db.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def unfinished(self) -> int:
        """Runs that are pending or running."""
        counts = self.counts()
        return counts["pending"] + counts["running"]

    def runs(self) -> list[dict[str, Any]]:
        """Every run as a dict of its columns (config and summary parsed), in claim order."""
        rows = self._db.execute("SELECT * FROM runs ORDER BY position").fetchall()
        result = []
        for row in rows:
            record = dict(row)
            record["config"] = json.loads(record["config"])
            record["summary"] = json.loads(record["summary"]) if record["summary"] else None
            result.append(record)
        return result

    def skipped(self) -> list[dict[str, Any]]:
        """The plan's infeasible combinations (assignments, budget, D, reason)."""
        rows = self._db.execute("SELECT * FROM skipped ORDER BY position").fetchall()
        return [{**dict(r), "assignments": json.loads(r["assignments"])} for r in rows]

    def events(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The event log (all runs, or one), oldest first."""
        if run_id is None:
            rows = self._db.execute("SELECT * FROM events ORDER BY id").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [dict(r) for r in rows]

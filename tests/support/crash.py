"""Crash-safety harness: run a command in a subprocess, SIGKILL it at a random moment, recover, compare state.

A ``Scenario`` says how to prepare a state home, which command to crash, and how to finish the work after the kill
(the same command again by default). ``crash_trial`` runs one kill and recovery; ``read_state`` and
``state_differences`` are the one comparison of a namespace (index and record store) with a clean run's.
Nothing here imports Prefect; lancedb is imported only when a state is read.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragline.records import Metadata

STAGE_BEFORE_RUN = "before the run opened"
STAGE_OPEN_NOTHING_RECORDED = "run open, nothing recorded yet"
STAGE_PENDING = "pending rows written, not committed"
STAGE_COMMITTED_TOMBSTONES = "committed, stale ids not yet deleted"
STAGE_AFTER_COMMIT = "after commit"
STAGE_FINISHED = "run had already finished"


class CrashHarnessError(RuntimeError):
    """A command that had to succeed (a clean run, a recovery) failed."""


@dataclass(frozen=True)
class IndexState:
    """A namespace as the index and the record store hold it, without run ids and timestamps."""

    vectors: dict[str, np.ndarray]
    metadata: dict[str, Metadata]
    documents: dict[str, tuple[object, ...]]
    """doc_id → (source, uri, title, content_hash, config_hash, model_id, chunk_count) of live documents."""
    chunks: dict[str, tuple[object, ...]]
    """chunk_id → (doc_id, position, text_hash, token_count, text, metadata) of live chunks."""
    pending_rows: int
    tombstones: int
    open_runs: int


def read_state(home: Path, namespace: str) -> IndexState:
    """Read ``namespace`` from the LanceDB index and the SQLite record store under ``home``."""
    from ragline.stores.lancedb_store import LanceDBStore

    store = LanceDBStore(home / "lancedb")
    fetched = store.fetch(list(store.list_ids(namespace=namespace)), namespace=namespace)
    db = sqlite3.connect(home / "records.sqlite")
    try:

        def rows(sql: str) -> list[tuple[object, ...]]:
            return db.execute(sql, (namespace,)).fetchall()

        documents = {
            r[0]: r[1:]
            for r in rows(
                "SELECT doc_id, source, uri, title, content_hash, config_hash, model_id, chunk_count FROM documents "
                "WHERE namespace = ? AND state = 'live'"
            )
        }
        chunks = {
            r[0]: (*r[1:6], json.loads(str(r[6])))
            for r in rows(
                "SELECT chunk_id, doc_id, position, text_hash, token_count, text, metadata_json FROM chunks "
                "WHERE namespace = ? AND state = 'live'"
            )
        }
        pending = rows(
            "SELECT (SELECT COUNT(*) FROM chunks WHERE namespace = ?1 AND state = 'pending') + "
            "(SELECT COUNT(*) FROM documents WHERE namespace = ?1 AND state = 'pending')"
        )[0][0]
        tombstones = rows("SELECT COUNT(*) FROM tombstones WHERE namespace = ?")[0][0]
        open_runs = rows("SELECT COUNT(*) FROM runs WHERE namespace = ? AND status = 'running'")[0][0]
    finally:
        db.close()
    return IndexState(
        vectors={i: np.asarray(r.values, dtype=np.float32) for i, r in fetched.items()},
        metadata={i: r.metadata for i, r in fetched.items()},
        documents=documents,
        chunks=chunks,
        pending_rows=int(pending),  # type: ignore[call-overload]
        tombstones=int(tombstones),  # type: ignore[call-overload]
        open_runs=int(open_runs),  # type: ignore[call-overload]
    )


def state_differences(actual: IndexState, expected: IndexState, atol: float = 1e-5) -> list[str]:
    """Every way ``actual`` differs from ``expected`` (empty when equal): ids, vectors (allclose), metadata,
    live documents and chunks, and any pending rows, tombstones or open runs left behind."""
    problems: list[str] = []
    for what, got, want in (
        ("index ids", actual.vectors, expected.vectors),
        ("live documents", actual.documents, expected.documents),
        ("live chunks", actual.chunks, expected.chunks),
    ):
        if missing := sorted(set(want) - set(got)):
            problems.append(f"{what} missing: {missing[:5]} ({len(missing)})")
        if extra := sorted(set(got) - set(want)):
            problems.append(f"{what} extra: {extra[:5]} ({len(extra)})")
    common = sorted(set(actual.vectors) & set(expected.vectors))
    if bad := [i for i in common if not np.allclose(actual.vectors[i], expected.vectors[i], atol=atol)]:
        problems.append(f"vectors differ: {bad[:5]} ({len(bad)})")
    if bad := [i for i in common if actual.metadata[i] != expected.metadata[i]]:
        problems.append(f"index metadata differs: {bad[:5]} ({len(bad)})")
    for what, got_rows, want_rows in (
        ("documents", actual.documents, expected.documents),
        ("chunks", actual.chunks, expected.chunks),
    ):
        if bad := sorted(k for k in set(got_rows) & set(want_rows) if got_rows[k] != want_rows[k]):
            problems.append(f"live {what} differ: {bad[:5]} ({len(bad)})")
    for what, count in (
        ("pending rows", actual.pending_rows),
        ("tombstones", actual.tombstones),
        ("open runs", actual.open_runs),
    ):
        if count:
            problems.append(f"{count} {what} left")
    return problems


def kill_stage(home: Path, namespace: str, runs_before: int) -> str:
    """Where a killed run stopped, read from the record store's journal (one of the ``STAGE_*`` names)."""
    path = home / "records.sqlite"
    if not path.exists():
        return STAGE_BEFORE_RUN
    db = sqlite3.connect(path)
    try:
        try:
            runs = db.execute(
                "SELECT run_id, status FROM runs WHERE namespace = ? ORDER BY started_at", (namespace,)
            ).fetchall()
        except sqlite3.OperationalError:  # killed before the schema was created
            return STAGE_BEFORE_RUN
        if len(runs) <= runs_before:
            return STAGE_BEFORE_RUN
        run_id, status = runs[-1]
        if status == "running":
            pending = db.execute(
                "SELECT COUNT(*) FROM documents WHERE run_id = ? AND state = 'pending'", (run_id,)
            ).fetchone()[0]
            return STAGE_PENDING if pending else STAGE_OPEN_NOTHING_RECORDED
        tombstones = db.execute("SELECT COUNT(*) FROM tombstones WHERE namespace = ?", (namespace,)).fetchone()[0]
        return STAGE_COMMITTED_TOMBSTONES if tombstones else STAGE_AFTER_COMMIT
    finally:
        db.close()


def run_count(home: Path, namespace: str) -> int:
    """How many runs the record store under ``home`` has journaled for ``namespace`` (0 if it has none)."""
    path = home / "records.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM runs WHERE namespace = ?", (namespace,)).fetchone()[0])
    except sqlite3.OperationalError:  # killed before the schema was created
        return 0
    finally:
        db.close()


# --- running and killing commands ------------------------------------------------------------------------------


def ragline_command(*args: str) -> list[str]:
    """The ``ragline`` CLI as a command for this interpreter (independent of console-script installs)."""
    return [sys.executable, "-m", "ragline.cli", *args]


def run_to_completion(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 600) -> float:
    """Run ``command``; its wall time in seconds. Raises ``CrashHarnessError`` with its output's tail on failure."""
    start = time.perf_counter()
    done = subprocess.run(
        list(command), env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise CrashHarnessError(f"{' '.join(command)} exited with {done.returncode}:\n{tail}")
    return time.perf_counter() - start


def run_and_kill(command: Sequence[str], delay_s: float, *, env: Mapping[str, str], cwd: Path) -> bool:
    """Start ``command`` and SIGKILL it after ``delay_s`` seconds; False if it had finished by then."""
    process = subprocess.Popen(
        list(command), env=dict(env), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=delay_s)
        return False
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return True


# --- scenarios and trials --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A run to crash: how to prepare its starting home, the command (``{home}`` is replaced), and how to finish
    the work after a kill (by default: the same command again, to completion)."""

    name: str
    namespace: str
    command: Sequence[str]
    prepare: Callable[[Path], None]
    finish: Callable[[Path], None] | None = None

    def command_for(self, home: Path) -> list[str]:
        return [part.replace("{home}", str(home)) for part in self.command]


@dataclass(frozen=True)
class Baseline:
    """A scenario's clean run: how long it took and the state it left."""

    seconds: float
    state: IndexState


@dataclass(frozen=True)
class TrialResult:
    """One kill and recovery: when the kill landed, where the run was, and how the recovered state differs."""

    scenario: str
    delay_s: float
    killed: bool
    stage: str
    differences: list[str] = field(default_factory=list)


def clean_baseline(scenario: Scenario, home: Path, *, env: Mapping[str, str], cwd: Path) -> Baseline:
    """Prepare ``home`` and run the scenario's command there without interruption."""
    scenario.prepare(home)
    seconds = run_to_completion(scenario.command_for(home), env=env, cwd=cwd)
    return Baseline(seconds, read_state(home, scenario.namespace))


def crash_trial(
    scenario: Scenario, home: Path, delay_s: float, baseline: Baseline, *, env: Mapping[str, str], cwd: Path
) -> TrialResult:
    """Prepare ``home``, kill the command after ``delay_s``, finish the work, and compare with the baseline."""
    scenario.prepare(home)
    runs_before = run_count(home, scenario.namespace)
    killed = run_and_kill(scenario.command_for(home), delay_s, env=env, cwd=cwd)
    stage = kill_stage(home, scenario.namespace, runs_before) if killed else STAGE_FINISHED
    if scenario.finish is not None:
        scenario.finish(home)
    else:
        run_to_completion(scenario.command_for(home), env=env, cwd=cwd)
    differences = state_differences(read_state(home, scenario.namespace), baseline.state)
    return TrialResult(scenario.name, delay_s, killed, stage, differences)

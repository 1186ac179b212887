"""Backfills on the real local embedder, LanceDB and SQLite: partitions, the ledger, failures, and resuming after
a SIGKILL of the real ``ragline backfill`` process."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.errors import ValidationFailed
from ragline.indexing.backfill import (
    BackfillResult,
    backfill_spec,
    index_partition,
    partitions,
    run_backfill,
)
from ragline.recordstore.sqlite import open_sqlite_record_store
from ragline.sources import JsonlSource
from ragline.stores.base import VectorRecord
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.conftest import CRANFIELD
from tests.support.backends import API_KEY, INDEX
from tests.support.crash import ragline_command, read_state, state_differences

NS = "test"
REPO = Path(__file__).resolve().parents[1]


def cranfield_jsonl(tmp_path: Path, documents: int) -> Path:
    """The first ``documents`` Cranfield records as a JSONL file (source name ``cran``)."""
    path = tmp_path / "cran.jsonl"
    with open(CRANFIELD / "corpus.jsonl", encoding="utf-8") as corpus:
        path.write_text("".join(line for _, line in zip(range(documents), corpus)), encoding="utf-8")
    return path


def backfill(c: Components, path: Path, **kwargs: object) -> BackfillResult:
    source = JsonlSource(path)
    return run_backfill(c, source, backfill_spec(c, source, path), **kwargs)


@pytest.fixture
def partitioned(config: RaglineConfig, embedder) -> Iterator[Components]:
    c = build_components(config.model_copy(update={"backfill_partition_size": 5}), embedder=embedder)
    yield c
    c.close()


def test_partitions_follow_the_source_order_and_fingerprint_their_items(tmp_path: Path) -> None:
    source = JsonlSource(cranfield_jsonl(tmp_path, 12))
    parts = list(partitions(source, 5))
    assert [len(p.items) for p in parts] == [5, 5, 2]
    assert [i.doc_id for p in parts for i in p.items] == [i.doc_id for i in source.items()]
    assert [p.fingerprint("s") for p in parts] == [p.fingerprint("s") for p in partitions(source, 5)]
    assert len({p.fingerprint("s") for p in parts}) == 3
    assert parts[0].fingerprint("s") != parts[0].fingerprint("another chunker")


def test_each_partition_is_a_committed_run_and_a_rerun_skips_them_all(partitioned: Components, tmp_path: Path) -> None:
    c = partitioned
    path = cranfield_jsonl(tmp_path, 12)
    seen: list[float] = []
    first = backfill(c, path, on_progress=lambda r: seen.append(r.progress))
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    ledger = c.records.backfills.ledger(first.backfill_id)
    assert [(r.partition_index, r.status, r.items) for r in ledger] == [(0, "done", 5), (1, "done", 5), (2, "done", 2)]
    assert [c.records.journal.run_status(r.run_id) for r in ledger] == ["committed"] * 3
    assert sum(r.embeddings_computed + r.embeddings_cached for r in ledger) == sum(r.chunks_written for r in ledger)
    # incremental cleanup: no partition deleted another's documents
    assert c.records.journal.live_document_count(NS) == 12
    assert (
        c.store.describe_namespace(NS).vector_count
        == c.records.journal.live_chunk_count(NS)
        == first.stats.chunks_written
    )

    runs_before = len(c.records.journal.last_runs(NS, limit=100))
    again = backfill(c, path)
    assert again.backfill_id == first.backfill_id
    assert [o.skipped for o in again.outcomes] == [True, True, True]
    assert (again.stats.embeddings_computed, again.stats.chunks_written) == (0, 0)
    assert len(c.records.journal.last_runs(NS, limit=100)) == runs_before  # no run was even opened
    assert c.records.backfills.ledger(first.backfill_id) == ledger


def test_changed_partition_is_redone_alone(partitioned: Components, tmp_path: Path) -> None:
    c = partitioned
    path = cranfield_jsonl(tmp_path, 12)
    backfill(c, path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[6])
    record["text"] += " an added sentence about boundary layers ."
    lines[6] = json.dumps(record) + "\n"
    path.write_text("".join(lines), encoding="utf-8")

    result = backfill(c, path)
    assert [o.skipped for o in result.outcomes] == [True, False, True]
    stats = result.stats
    assert (stats.documents_changed, stats.documents_unchanged, stats.documents_new) == (1, 4, 0)
    assert 0 < stats.embeddings_computed <= stats.chunks_written
    chunk_ids = c.records.journal.live_chunk_ids(NS, prefix=f"cran/{record['_id']}#")
    assert any("an added sentence" in row.text for row in c.records.journal.chunk_rows(NS, chunk_ids).values())


def test_a_backfill_resumed_with_another_chunker_redoes_every_partition(
    partitioned: Components, tmp_path: Path, embedder
) -> None:
    path = cranfield_jsonl(tmp_path, 12)
    backfill(partitioned, path)
    before = partitioned.records.journal.live_chunk_count(NS)
    finer = build_components(partitioned.config.model_copy(update={"chunk_size": 32, "chunk_overlap": 4}), embedder)
    result = backfill(finer, path)
    assert [o.skipped for o in result.outcomes] == [False, False, False]
    assert result.stats.documents_changed == 12 and finer.records.journal.live_chunk_count(NS) > before
    assert [o.skipped for o in backfill(finer, path).outcomes] == [True, True, True]
    finer.close()


def test_failed_partition_is_rolled_back_marked_and_redone_on_resume(partitioned: Components, tmp_path: Path) -> None:
    c = partitioned
    path = cranfield_jsonl(tmp_path, 12)
    stray = VectorRecord("stray#0", np.eye(1, c.embedder.dimension, dtype=np.float32)[0], {"x": "y"})

    def drift_after_first(result: BackfillResult) -> None:
        if len(result.outcomes) == 1:  # index drift the record store does not know: the next reconciliation fails
            c.store.upsert([stray], namespace=NS)

    with pytest.raises(ValidationFailed, match="reconciliation"):
        backfill(c, path, on_progress=drift_after_first)
    spec_id = backfill_spec(c, JsonlSource(path), path).backfill_id
    ledger = c.records.backfills.ledger(spec_id)
    assert [(r.partition_index, r.status) for r in ledger] == [(0, "done"), (1, "failed")]
    assert "ValidationFailed" in (ledger[1].error or "")
    assert c.records.journal.live_document_count(NS) == 5 and c.records.journal.unfinished_runs(NS) == []

    c.store.delete(namespace=NS, ids=["stray#0"])
    resumed = backfill(c, path)
    assert [(o.index, o.skipped) for o in resumed.outcomes] == [(0, True), (1, False), (2, False)]
    assert [r.status for r in c.records.backfills.ledger(spec_id)] == ["done"] * 3
    assert c.records.journal.live_document_count(NS) == 12


def test_partition_runs_through_ingest_with_incremental_cleanup(partitioned: Components, tmp_path: Path) -> None:
    c = partitioned
    path = cranfield_jsonl(tmp_path, 12)
    source = JsonlSource(path)
    spec = backfill_spec(c, source, path)
    parts = list(partitions(source, spec.partition_size))
    index_partition(c, spec, parts[1])
    index_partition(c, spec, parts[0])  # a later partition run never removes an earlier one's documents
    assert c.records.journal.live_document_count(NS) == 10


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> CliRunner:
    """The CLI with the session's model folder and no Prefect server."""
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return CliRunner()


def test_cli_backfills_prints_each_partition_and_shows_the_ledger(runner: CliRunner, tmp_path: Path) -> None:
    home, path = str(tmp_path / "home"), str(cranfield_jsonl(tmp_path, 7))
    args = ["backfill", path, "--home", home, "-n", NS, "--partition-size", "5", "--no-flow"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "partition 1/2 done" in first.output and "partition 2/2 done" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("skipped: done earlier") == 2
    assert "0 embeddings computed" in again.output
    status = runner.invoke(app, ["backfill", "--status", "--home", home, "-n", NS])
    assert status.exit_code == 0 and "2/2" in status.output and status.output.count("done") >= 2
    mistyped = runner.invoke(app, ["backfill", "--status", "--home", home, "-n", NS + "x"])
    assert mistyped.exit_code == 2 and f"namespace '{NS}x' holds no index (namespaces: {NS})" in mistyped.output
    other = runner.invoke(app, ["backfill", str(tmp_path), "--status", "--home", home, "-n", NS])
    assert other.exit_code == 2 and f"no backfill of namespace {NS} reads {tmp_path.resolve()}" in other.output
    records = open_sqlite_record_store(Path(home) / "records.sqlite")
    records.backfills.fail_partition(records.backfills.of_namespace(NS)[0].backfill_id, 1, "KeyboardInterrupt: ")
    records.close()
    failed = runner.invoke(app, ["backfill", "--status", "--home", home, "-n", NS])
    assert failed.exit_code == 0 and "partition 1: KeyboardInterrupt" in failed.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["backfill", str(tmp_path / "empty"), "--home", home, "-n", NS, "--no-flow"])
    assert empty.exit_code == 0 and f"warning: {tmp_path / 'empty'} holds no documents" in empty.output
    missing = runner.invoke(app, ["backfill", str(tmp_path / "nowhere"), "--home", home, "--no-flow"])
    assert missing.exit_code == 2 and "does not exist" in missing.output

    on_lancedb = runner.invoke(app, [*args[:5], "exported", *args[6:], "--export-parquet", str(tmp_path / "out")])
    assert on_lancedb.exit_code == 2 and "but the store is LanceDB" in on_lancedb.output


def test_cli_exports_bulk_import_files_on_pinecone(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home, path = str(tmp_path / "home"), str(cranfield_jsonl(tmp_path, 7))
    args = ["backfill", path, "--home", home, "--partition-size", "5", "--no-flow"]
    with LoopbackPinecone(api_key=API_KEY) as server:
        server.create_index(INDEX, dimension=384)
        monkeypatch.setenv("RAGLINE_STORE", "pinecone")
        monkeypatch.setenv("PINECONE_API_KEY", API_KEY)
        monkeypatch.setenv("RAGLINE_PINECONE_HOST", server.url)
        monkeypatch.setenv("RAGLINE_PINECONE_INDEX", INDEX)
        out = tmp_path / "import"
        exported = runner.invoke(app, [*args, "-n", "exported", "--export-parquet", str(out)])
        assert exported.exit_code == 0, exported.output
        assert sorted(p.name for p in (out / "exported").iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
        assert runner.invoke(app, [*args, "-n", NS]).exit_code == 0
        refused = runner.invoke(app, [*args, "-n", NS, "--export-parquet", str(tmp_path / "again")])
        assert refused.exit_code == 2 and "needs a new namespace" in refused.output


def _ledger(home: Path) -> tuple[dict[int, tuple[str, str | None]], int]:
    """Partition → (status, run id) from the ledger, and the pending chunk rows, read like an outside observer."""
    db = sqlite3.connect(f"file:{home / 'records.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        ledger = {
            r[0]: (r[1], r[2]) for r in db.execute("SELECT partition_index, status, run_id FROM backfill_partitions")
        }
        pending = db.execute("SELECT COUNT(*) FROM chunks WHERE state = 'pending'").fetchone()[0]
        return ledger, int(pending)
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}, 0
    finally:
        db.close()


@pytest.mark.slow
def test_sigkilled_backfill_resumes_to_exactly_a_clean_run(
    config: RaglineConfig, embedder, models_dir: Path, tmp_path: Path
) -> None:
    path = cranfield_jsonl(tmp_path, 60)
    home = tmp_path / "killed"
    command = ragline_command(
        "backfill", str(path), "--home", str(home), "-n", NS, "--partition-size", "15", "--no-flow"
    )
    env = {**os.environ, "RAGLINE_MODEL_CACHE_DIR": str(models_dir), "RAGLINE_BATCH_SIZE": "4"}

    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while True:  # kill once a partition is done and the next one has pending (uncommitted) rows
        ledger, pending = _ledger(home) if (home / "records.sqlite").exists() else ({}, 0)
        statuses = [status for status, _ in ledger.values()]
        if "done" in statuses and "running" in statuses and pending:
            break
        assert process.poll() is None, f"backfill ended before it could be killed: {process.stderr.read()!r}"
        assert time.monotonic() < deadline, "no partition finished within 180 s"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    process.stderr.close()
    ledger, _ = _ledger(home)
    done_before = {i: run_id for i, (status, run_id) in ledger.items() if status == "done"}
    assert done_before and len(done_before) < 4
    db = sqlite3.connect(home / "records.sqlite")
    crashed = [r[0] for r in db.execute("SELECT run_id FROM runs WHERE status = 'running'")]
    db.close()

    resumed = subprocess.run(command, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("skipped: done earlier") == len(done_before)
    ledger, pending = _ledger(home)
    assert [status for _, (status, _) in sorted(ledger.items())] == ["done"] * 4 and pending == 0
    assert {i: ledger[i][1] for i in done_before} == done_before  # the finished partitions were not run again
    db = sqlite3.connect(home / "records.sqlite")
    runs = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    crashed_now = {db.execute("SELECT status FROM runs WHERE run_id = ?", (r,)).fetchone()[0] for r in crashed}
    redone = db.execute(
        "SELECT SUM(embeddings_computed) FROM backfill_partitions WHERE partition_index NOT IN "
        f"({','.join(map(str, done_before))})"
    ).fetchone()[0]
    db.close()
    # the interrupted partition's open run was rolled back by recovery (unless the kill landed right after its
    # commit: then its redo found every document unchanged and committed an empty run)
    assert crashed_now <= {"rolled_back"}
    assert runs == ({"committed": 4, "rolled_back": 1} if crashed else {"committed": 5})
    computed = int(re.search(r"(\d+) embeddings\s+computed", resumed.stdout)[1])
    assert computed == redone  # everything embedded on resume belongs to the partitions it redid

    clean = build_components(
        config.model_copy(update={"home": tmp_path / "clean", "backfill_partition_size": 15}), embedder=embedder
    )
    backfill(clean, path)
    clean.close()
    killed_state, clean_state = read_state(home, NS), read_state(tmp_path / "clean", NS)
    assert len(clean_state.vectors) > 60
    assert state_differences(killed_state, clean_state) == []

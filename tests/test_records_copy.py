"""`ragline records copy`: a namespace ingested on SQLite moves to PostgreSQL with every part's rows and the vectors
its chunks need; ingest and query then run on PostgreSQL with nothing re-embedded. Real SQLite, real PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.indexing.pipeline import IngestResult, ingest
from ragline.records import QuarantineRecord
from ragline.recordstore.postgres.store import PostgresRecordStore
from ragline.recordstore.rows import PARTITION_COUNTS, EvaluationRow
from ragline.recordstore.sqlite import SQLiteRecordStore
from ragline.recordstore.transfer import export_namespace
from ragline.retrieval import search
from ragline.sources import open_source
from tests.conftest import SAMPLE, PostgresSchema

NS = "test"
QUERIES = ("how are chunk ids built?", "what does reconciliation repair?", "prefect schedules")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The sample corpus plus one file the pipeline quarantines."""
    root = tmp_path / "corpus"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.jsonl", "*.tsv"))
    (root / "broken.txt").write_bytes(b"\x00\x01 binary")
    return root


def run(c: Components, root: Path) -> IngestResult:
    return ingest(c, open_source(root))


def top_ids(c: Components, namespace: str = NS) -> list[list[str]]:
    return [
        [hit.chunk_id for hit in search(c, query, namespace=namespace, mode=mode, top_k=5).hits]
        for query in QUERIES
        for mode in ("dense", "hybrid")
    ]


def copy(config: RaglineConfig, postgres: PostgresSchema, *args: str) -> str:
    result = CliRunner().invoke(
        app,
        ["records", "copy", "--home", str(config.home), "--to", postgres.url, "--schema", postgres.schema, *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def same_rows(config: RaglineConfig, postgres: PostgresSchema, namespace: str = NS) -> bool:
    source = SQLiteRecordStore(config.record_store_path)
    target = PostgresRecordStore(postgres.url, postgres.schema)
    try:
        return export_namespace(source, namespace) == export_namespace(target, namespace)
    finally:
        source.close()
        target.close()


def test_a_namespace_moves_to_postgres_and_runs_there_with_nothing_re_embedded(
    config: RaglineConfig, pg_config: RaglineConfig, postgres: PostgresSchema, embedder: HashingEmbedder, corpus: Path
) -> None:
    home = build_components(config, embedder=embedder)
    first = run(home, corpus)
    assert first.stats.documents_quarantined == 1 and first.stats.embeddings_computed > 0
    home.records.backfills.open("bf-1", NS, "corpus", str(corpus), 10, None, 1)
    home.records.backfills.start_partition("bf-1", 0, "fp", 10)
    home.records.backfills.finish_partition("bf-1", 0, first.run_id, dict.fromkeys(PARTITION_COUNTS, 1))
    home.records.journal.bind_namespace_model(f"{NS}--v2", embedder.model_id, embedder.dimension)
    home.records.aliases.switch(NS, f"{NS}--v2", expected_target=NS, actor="me", detail="passes")
    home.records.aliases.roll_back(NS, actor="me")
    evaluated = EvaluationRow("e1", 1.7e9, "sample", NS, "dense", 10, True, {"nDCG@10": 0.5, "p50 ms": 3.0})
    home.records.evaluations.append([evaluated])
    before = top_ids(home)
    home.close()

    output = copy(config, postgres, "-n", NS)
    assert f"namespace {NS}: copied" in output
    assert same_rows(config, postgres)  # every part: runs, documents, chunks, quarantine, signatures, backfills
    target = PostgresRecordStore(postgres.url, postgres.schema)
    assert [e.action for e in target.aliases.history(NS)] == ["rollback", "promote"]
    rollback, promotion = target.aliases.history(NS)
    assert rollback.detail == f"undoes promotion #{promotion.event_id}" and promotion.undone_at is not None
    assert [q.reason for q in target.quarantine.for_run(first.run_id)] == ["binary file"]
    assert target.evaluations.rows() == [evaluated]  # the nightly check's baseline moves with it
    there = EvaluationRow("e2", 1.8e9, "sample", NS, "dense", 10, True, {"nDCG@10": 0.6})
    target.evaluations.append([there])  # an evaluation run on PostgreSQL after the copy
    target.close()
    assert f"namespace {NS}: already there" in copy(config, postgres, "-n", NS)  # still idempotent
    assert f"namespace {NS}: already there" in copy(config, postgres, "-n", NS, "--replace")
    target = PostgresRecordStore(postgres.url, postgres.schema)
    assert target.evaluations.rows() == [evaluated, there]  # merged, never replaced
    target.close()

    shared = build_components(pg_config, embedder=embedder)  # same home: the same LanceDB index
    live = shared.records.journal.chunk_rows(NS, shared.records.journal.live_chunk_ids(NS))
    hashes = [row.text_hash for row in live.values()]
    assert len(live) == first.stats.chunks_written and set(shared.cache.get_many(embedder.model_id, hashes)) == set(
        hashes
    )
    assert top_ids(shared) == before
    again = run(shared, corpus)
    assert again.stats.embeddings_computed == 0 and again.stats.chunks_written == 0
    assert again.stats.documents_unchanged == first.stats.documents_seen - 1
    (corpus / "guides" / "quarantine.md").write_text("# Quarantine\n\nBad inputs wait in quarantine.\n")
    changed = run(shared, corpus)
    assert changed.stats.documents_changed == 1 and changed.stats.embeddings_computed <= 1
    assert shared.records.journal.run_status(changed.run_id) == "committed"
    shared.close()


def test_copy_is_idempotent_and_refuses_to_overwrite_different_records(
    config: RaglineConfig, postgres: PostgresSchema, embedder: HashingEmbedder, corpus: Path
) -> None:
    home = build_components(config, embedder=embedder)
    run(home, corpus)
    home.records.journal.bind_namespace_model(f"{NS}--v2", embedder.model_id, embedder.dimension)
    home.records.aliases.switch(NS, f"{NS}--v2", expected_target=NS, actor="me", detail="passes")
    assert "points at a namespace the target lacks" in copy(config, postgres, "-n", NS)
    everything = copy(config, postgres)  # every namespace of the home: the alias's target comes along
    assert f"namespace {NS}: already there" in everything and f"namespace {NS}--v2: copied" in everything
    assert "lacks" not in everything
    assert f"namespace {NS}: already there" in copy(config, postgres, "-n", NS)
    home.records.quarantine.add("r-late", NS, [QuarantineRecord("src", "file:///late", "empty document")])
    home.records.journal.bind_namespace_model("a-first", embedder.model_id, embedder.dimension)  # copied first
    home.close()

    refused = CliRunner().invoke(
        app, ["records", "copy", "--home", str(config.home), "--to", postgres.url, "--schema", postgres.schema]
    )
    assert refused.exit_code == 2 and "--replace" in refused.output and "Traceback" not in refused.output
    assert "(copied before it: a-first)" in refused.output  # what did land is said
    assert not same_rows(config, postgres)
    assert f"namespace {NS}: replaced" in copy(config, postgres, "--replace")
    assert same_rows(config, postgres)


def test_copy_needs_a_target_and_an_existing_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGLINE_DATABASE_URL", raising=False)
    runner = CliRunner()
    no_target = runner.invoke(app, ["records", "copy", "--home", str(tmp_path)])
    assert no_target.exit_code != 0 and "RAGLINE_DATABASE_URL" in no_target.output
    no_home = runner.invoke(app, ["records", "copy", "--home", str(tmp_path / "none"), "--to", "postgresql://x@y/z"])
    assert no_home.exit_code == 2 and "no record store" in no_home.output

"""The ingest stages end to end on the hashing embedder and the SQLite record store, on LanceDB and on the real
Pinecone SDK against a loopback server whose writes show in reads only after a lag."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.errors import ConfigError, ValidationFailed
from ragline.indexing import stages
from ragline.indexing.consistency import await_writes
from ragline.indexing.journal import open_run
from ragline.indexing.pipeline import ingest, write_batches
from ragline.indexing.stats import IngestStats
from ragline.indexing.steps import DirectSteps
from ragline.sources import DirectorySource, JsonlSource
from ragline.stores.base import VectorRecord

NS = "test"
T = TypeVar("T")
PARAGRAPH = (
    "Chunking splits long documents into passages small enough for the embedding model. "
    "Each passage keeps the metadata of its document so filters still work after retrieval. "
)


@pytest.fixture
def config(both_stores_config: RaglineConfig) -> RaglineConfig:
    """Every test here runs on LanceDB and on the Pinecone SDK against a loopback server with a write lag."""
    return both_stores_config


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(
        root,
        {
            "intro.md": "# Intro\n\nragline keeps a vector index fresh.\n\n## Why\n\nStale answers cost trust.\n",
            "long.md": "# Long\n\n" + PARAGRAPH * 40,
            "notes/a.txt": "Embeddings are unit-norm vectors compared by cosine similarity.",
            "notes/b.txt": "Pinecone namespaces partition an index per tenant.",
            "page.html": "<html><head><title>Page</title></head><body><h1>Page</h1><p>BM25 ranks by term "
            "frequency.</p></body></html>",
        },
    )
    return root


def snapshot(c: Components) -> dict[str, tuple[tuple[float, ...], dict]]:
    """Every id in the namespace with its (rounded) vector and metadata, once this process's writes show in reads."""
    assert await_writes(c, NS)
    ids = list(c.store.list_ids(namespace=NS))
    fetched = c.store.fetch(ids, namespace=NS)
    return {i: (tuple(np.round(r.values, 5)), r.metadata) for i, r in fetched.items()}


def run(c: Components, root: Path, **kwargs: object):
    return ingest(c, DirectorySource(root, name="docs"), **kwargs)


def test_first_run_indexes_everything_and_unchanged_rerun_does_nothing(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    first = run(components, root).stats
    assert (first.documents_seen, first.documents_new, first.documents_quarantined) == (5, 5, 0)
    assert first.chunks_written > 5  # long.md splits into several chunks
    assert first.embeddings_computed + first.embeddings_cached == first.chunks_written
    billed = components.config.store_kind == "pinecone"  # LanceDB bills no units
    assert (first.write_units >= 5, first.read_units > 0) == (billed, billed)
    assert components.store.describe_namespace(NS).vector_count == components.records.journal.live_chunk_count(NS)
    before = snapshot(components)
    assert "docs/long.md#0" in before and before["docs/long.md#0"][1]["doc_id"] == "docs/long.md"

    second = run(components, root).stats
    assert (second.documents_unchanged, second.documents_new, second.documents_changed) == (5, 0, 0)
    assert (second.chunks_written, second.chunks_deleted, second.embeddings_computed) == (0, 0, 0)
    assert second.write_units == 0 and (second.read_units > 0) == billed  # verification still reads
    assert snapshot(components) == before


def test_changed_document_rewrites_only_its_chunks_and_deletes_its_leftovers(
    components: Components, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    run(components, root)
    before = snapshot(components)
    long_ids = {i for i in before if i.startswith("docs/long.md#")}
    assert len(long_ids) >= 3
    write(root, {"long.md": "# Long\n\nNow a single short paragraph."})
    stats = run(components, root).stats
    assert (stats.documents_changed, stats.documents_unchanged) == (1, 4)
    assert stats.chunks_written == 1 and stats.chunks_deleted == len(long_ids) - 1
    after = snapshot(components)
    assert {i for i in after if i.startswith("docs/long.md#")} == {"docs/long.md#0"}
    assert "single short paragraph" in after["docs/long.md#0"][1]["text"]
    assert {i: v for i, v in after.items() if not i.startswith("docs/long.md")} == {
        i: v for i, v in before.items() if not i.startswith("docs/long.md")
    }


def test_removed_document_deleted_only_with_full_cleanup(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    run(components, root)
    (root / "notes" / "b.txt").unlink()
    kept = run(components, root).stats
    assert kept.documents_removed == 0 and "docs/notes/b.txt#0" in snapshot(components)
    removed = run(components, root, cleanup="full").stats
    assert (removed.documents_removed, removed.chunks_deleted) == (1, 1)
    assert "docs/notes/b.txt#0" not in snapshot(components)
    assert components.records.journal.live_document_count(NS) == 4


def test_duplicate_chunk_texts_are_embedded_once(components: Components, tmp_path: Path) -> None:
    root = tmp_path / "dups"
    write(root, {f"copy{n}.txt": "The same sentence in three files." for n in range(3)})
    stats = run(components, root).stats
    assert (stats.chunks_written, stats.embeddings_computed, stats.embeddings_cached) == (3, 1, 2)


def test_bad_file_is_quarantined_and_its_indexed_version_kept(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    run(components, root)
    before = snapshot(components)
    (root / "notes" / "a.txt").write_bytes(b"\x00\x01binary now\xff")
    result = run(components, root, cleanup="full")
    assert result.stats.documents_quarantined == 1
    assert [q.uri.endswith("notes/a.txt") for q in result.quarantined] == [True]
    assert snapshot(components) == before


@pytest.mark.parametrize("records", ["sqlite", "postgres"])
def test_a_jsonl_line_turned_malformed_keeps_every_document_under_full_cleanup(
    request: pytest.FixtureRequest,
    config: RaglineConfig,
    embedder: Embedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    records: str,
) -> None:
    """The line cannot be tied to its document, so it may be any of them: none is removed (until the file is fixed)."""
    c = build_components(request.getfixturevalue("pg_config") if records == "postgres" else config, embedder=embedder)
    try:
        feed = tmp_path / "feed.jsonl"
        lines = [json.dumps({"id": f"f{n}", "text": f"Entry {n}: gliders soar on thermals."}) for n in range(4)]
        feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ingest(c, JsonlSource(feed), namespace=NS)
        before = snapshot(c)
        feed.write_text("\n".join([*lines[:2], '{"id": "f2", "text": "Ent', lines[3]]) + "\n", encoding="utf-8")
        with caplog.at_level("WARNING"):
            result = ingest(c, JsonlSource(feed), namespace=NS, cleanup="full")
        assert [q.doc_id for q in result.quarantined] == [None]
        assert result.stats.documents_removed == 0 and snapshot(c) == before
        assert "no unseen document was removed" in caplog.text
        feed.write_text("\n".join([*lines[:2], lines[3]]) + "\n", encoding="utf-8")  # fixed: f2 is gone for good
        assert ingest(c, JsonlSource(feed), namespace=NS, cleanup="full").stats.documents_removed == 1
        assert {i.rpartition("#")[0] for i in snapshot(c)} == {"feed/f0", "feed/f1", "feed/f3"}
    finally:
        c.close()


def test_failed_validation_rolls_back_and_keeps_previous_index(components: Components, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    run(components, root)
    before = snapshot(components)
    write(root, {"long.md": "# Long\n\nRewritten.\n\n" + PARAGRAPH * 3, "new.md": "# New\n\nA brand new file."})
    stray = VectorRecord("stray#0", np.eye(1, components.embedder.dimension, dtype=np.float32)[0], {"x": "y"})

    def inject_drift(stats: IngestStats) -> None:
        components.store.upsert([stray], namespace=NS)  # an id no record store knows: reconciliation must fail

    with pytest.raises(ValidationFailed, match="holds"):
        run(components, root, on_progress=inject_drift)
    components.store.delete(namespace=NS, ids=["stray#0"])
    assert snapshot(components) == before
    assert components.records.journal.unfinished_runs(NS) == []
    assert run(components, root).stats.documents_changed == 1  # the rolled-back change is picked up again


def test_crashed_run_is_rolled_back_by_the_next_run(config: RaglineConfig, embedder, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    c = build_components(config, embedder=embedder)
    run(c, root)
    before = snapshot(c)
    write(root, {"long.md": "# Long\n\nHalf-written change.", "extra.md": "# Extra\n\nOnly in the crashed run."})
    crashed = open_run(c, NS, "docs")
    write_batches(DirectSteps(c), crashed, DirectorySource(root, name="docs").items(), batch_size=2)  # then it "dies"
    assert "docs/extra.md#0" in snapshot(c)
    c.close()

    fresh = build_components(config, embedder=embedder)
    (root / "extra.md").unlink()
    write(root, {"long.md": "# Long\n\n" + PARAGRAPH * 40})  # the source is back as before the crash
    stats = run(fresh, root).stats
    assert fresh.records.journal.run_status(crashed.run_id) == "rolled_back"
    assert stats.documents_unchanged == 5 and stats.embeddings_computed == 0
    assert snapshot(fresh) == before
    fresh.close()


def test_namespace_keeps_its_embedding_model(components: Components, tmp_path: Path) -> None:
    journal = components.records.journal
    journal.bind_namespace_model(NS, "openai/text-embedding-3-small", 1536)
    journal.begin_run("r0", NS, "elsewhere")  # a run committed with that model: it holds the namespace
    journal.commit_run("r0", NS, "elsewhere", delete_unseen=False)
    with pytest.raises(ConfigError, match="refusing"):
        run(components, corpus(tmp_path))
    assert components.store.describe_namespace(NS).vector_count == 0


def test_another_model_builds_a_new_index_version_beside_the_live_one(
    config: RaglineConfig, embedder, tmp_path: Path
) -> None:
    root = corpus(tmp_path)
    live = build_components(config, embedder=embedder)
    live.records.journal.bind_namespace_model(NS, "openai/text-embedding-3-small", 1536)  # the live index's model
    versioned = build_components(config.model_copy(update={"index_version": "minilm"}), embedder=embedder)
    stats = ingest(versioned, DirectorySource(root, name="docs")).stats
    assert stats.documents_new == 5
    assert versioned.records.journal.namespace_model("test--minilm") == (embedder.model_id, embedder.dimension)
    assert live.store.describe_namespace(NS).vector_count == 0
    assert live.store.describe_namespace("test--minilm").vector_count == stats.chunks_written


def test_non_ascii_file_names_get_stable_ascii_ids(components: Components, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root, {"café.md": "# Café\n\nEspresso extraction notes."})
    run(components, root)
    assert list(components.store.list_ids(namespace=NS)) == ["docs/caf%C3%A9.md#0"]
    assert run(components, root).stats.documents_unchanged == 1


class LoadSizes(DirectSteps):
    """``DirectSteps`` that note how many documents each ``load`` read."""

    def __init__(self, c: Components) -> None:
        super().__init__(c)
        self.loaded: list[int] = []

    def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
        result = super().run(stage, label, *args)
        if isinstance(result, stages.Plan):
            self.loaded.append(result.stats.documents_seen)
        return result


@pytest.mark.parametrize(
    ("batch_size", "expected"), [(1024, [128, 512, 60]), (300, [128, 300, 272]), (50, [50] * 14 + [0])]
)
def test_batches_start_small_and_grow_to_the_batch_size(
    config: RaglineConfig, embedder, tmp_path: Path, batch_size: int, expected: list[int]
) -> None:
    write(tmp_path / "docs", {f"d{i:03}.txt": f"Document {i} about topic {i % 7}." for i in range(700)})
    c = build_components(config.model_copy(update={"batch_size": batch_size}), embedder=embedder)
    steps = LoadSizes(c)
    stats = ingest(c, DirectorySource(tmp_path / "docs", name="docs"), steps=steps).stats
    assert steps.loaded == expected
    assert (stats.documents_new, stats.chunks_written) == (700, 700)
    c.close()

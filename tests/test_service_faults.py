"""Service faults and document-level atomicity.

- Every fault kind at a 30 % rate on both loopback services (Pinecone: 429/500/503 and connection resets; OpenAI:
  429/500/503, timeouts, resets, malformed bodies): the ingest completes through retries, nothing lost or doubled.
  (``tests/test_services_end_to_end.py`` covers status faults only.)
- A run whose embedding service fails for good midway fails cleanly (the previous index is back exactly) and the
  re-run resumes to exactly a clean run's state.
- Queries while a changed document is being re-indexed, driven stage by stage, see its old version or its new
  version, never a mix: dense hits are checked against the committed chunk rows (``retrieval.dense.committed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.local import LocalEmbedder
from ragline.errors import RaglineError
from ragline.indexing import stages
from ragline.indexing.journal import delete_tombstones
from ragline.indexing.pipeline import ingest, write_batches
from ragline.indexing.stats import IngestStats
from ragline.indexing.steps import DirectSteps
from ragline.retrieval.search import search
from ragline.sources import DirectorySource
from ragline.testing.openai_server import LoopbackOpenAI
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.support.crash import read_state, state_differences
from tests.support.fault_report import record_figures

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PINECONE_KEY = "pc-faults-secret-5e6f7a"
OPENAI_KEY = "sk-faults-secret-1a2b3c"
NS = "faults"


@pytest.fixture
def openai_server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=OPENAI_KEY, stall_s=1.0) as server:
        yield server


@pytest.fixture
def fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import openai._base_client as base_client

    monkeypatch.setattr(base_client, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(base_client, "MAX_RETRY_DELAY", 0.05)


def _openai_config(home: Path, server: LoopbackOpenAI, **extra: object) -> RaglineConfig:
    return RaglineConfig(
        home=home,
        namespace=NS,
        embedder="openai",
        store="lancedb",
        openai_base_url=server.base_url,
        openai_api_key=OPENAI_KEY,
        openai_timeout_s=0.3,
        **extra,
    )


@pytest.mark.slow
def test_every_fault_kind_at_thirty_percent_on_both_services_completes_exactly(
    tmp_path: Path, openai_server: LoopbackOpenAI, fast_sdk_retries: None
) -> None:
    with LoopbackPinecone(api_key=PINECONE_KEY) as pinecone:
        config = RaglineConfig(
            home=tmp_path / "home",
            namespace=NS,
            embedder="openai",
            openai_base_url=openai_server.base_url,
            openai_api_key=OPENAI_KEY,
            openai_timeout_s=0.3,
            openai_max_retries=10,
            pinecone_api_key=PINECONE_KEY,
            pinecone_host=pinecone.url,
            pinecone_retry_backoff_s=0.01,
            pinecone_max_retries=10,
            consistency_wait_s=0,
            batch_size=1,
        )  # one document per batch: many requests, so every fault kind is drawn
        c = build_components(config)
        pinecone.faults.set_error_rate(0.3, (429, 500, 503), seed=11)
        for route in ("upsert", "fetch", "query", "describe_index_stats"):
            pinecone.faults.reset_next(3, route=route)
        openai_server.inject_faults(0.3, (429, 500, 503, "timeout", "reset", "malformed"), seed=11)

        stats = ingest(c, DirectorySource(SAMPLE, name="sample")).stats

        stored = pinecone.records(config.pinecone_index, NS)
        live = c.records.journal.live_chunk_ids(NS)
        assert stats.documents_new == 39 and sorted(stored) == live
        assert set(pinecone.write_counts(config.pinecone_index, NS)) == set(live)
        rows = c.records.journal.chunk_rows(NS, live)
        assert all(stored[i].metadata["text"] == rows[i].text for i in live)
        pinecone_faults = sum(1 for r in pinecone.requests if r.fault is not None)
        openai_faults = sum(1 for r in openai_server.requests if r.fault is not None)
        assert {r.fault for r in pinecone.requests} >= {"random", "reset"}
        assert {r.fault for r in openai_server.requests} >= {429, 500, 503, "timeout", "reset", "malformed"}
        record_figures(
            "service_faults",
            {
                "pinecone_requests": len(pinecone.requests),
                "pinecone_faults_injected": pinecone_faults,
                "openai_requests": len(openai_server.requests),
                "openai_faults_injected": openai_faults,
                "chunks": len(live),
                "records_lost": len(set(live) - set(stored)),
                "records_duplicated": len(stored) - len(set(stored)),
            },
        )
        c.close()


@pytest.mark.slow
def test_a_run_failing_midway_rolls_back_exactly_and_the_rerun_resumes_to_a_clean_state(
    tmp_path: Path, openai_server: LoopbackOpenAI, fast_sdk_retries: None
) -> None:
    first, second = tmp_path / "v1" / "docs", tmp_path / "v2" / "docs"
    _write_versions(first, second)
    clean = build_components(_openai_config(tmp_path / "clean", openai_server))
    ingest(clean, DirectorySource(first))
    ingest(clean, DirectorySource(second), cleanup="full")
    clean_state = read_state(clean.config.home, NS)
    clean.close()

    c = build_components(_openai_config(tmp_path / "home", openai_server, openai_max_retries=1, batch_size=2))
    ingest(c, DirectorySource(first))
    before = read_state(c.config.home, NS)
    assert len(before.documents) > 20

    def fail_after_first_batch(stats: IngestStats) -> None:
        if stats.chunks_written:  # one batch is in the index; the next ones will fail
            openai_server.inject_faults(1.0, (500, "reset", "timeout"), seed=3)

    with pytest.raises(RaglineError):
        ingest(c, DirectorySource(second), cleanup="full", on_progress=fail_after_first_batch)
    assert c.records.journal.last_runs(NS)[0].status == "rolled_back"
    assert state_differences(read_state(c.config.home, NS), before) == []

    openai_server.clear_faults()
    ingest(c, DirectorySource(second), cleanup="full")
    assert state_differences(read_state(c.config.home, NS), clean_state) == []
    c.close()


def _write_versions(first: Path, second: Path) -> None:
    """Sample documents; version 2 changes half of them and removes a few."""
    for i, path in enumerate(sorted(SAMPLE.rglob("*.md"))):
        relative, text = path.relative_to(SAMPLE), path.read_text()
        for folder in (first, second):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (first / relative).write_text(text)
        if i % 7 != 6:
            (second / relative).write_text(text + "\n\nRevised paragraph.\n" if i % 2 == 0 else text)


# --- document-level atomicity ----------------------------------------------------------------------------------

OLD, NEW = "zebra", "quokka"


def _paragraphs(marker: str, count: int) -> str:
    return "\n\n".join(f"Paragraph {i} about the {marker} version of the atomic document. " * 12 for i in range(count))


def _versions_seen(c: Components, query: str) -> list[set[str]]:
    """For each retrieval mode, which versions of the atomic document its hits show."""
    seen = []
    for mode in ("dense", "hybrid"):
        hits = search(c, query, namespace=NS, mode=mode, top_k=20).hits
        texts = [h.text for h in hits if h.doc_id == "atomic/doc.md"]
        seen.append({marker for marker in (OLD, NEW) for text in texts if marker in text})
    return seen


def test_queries_during_a_rewrite_see_one_version_of_a_document_never_a_mix(
    config: RaglineConfig, embedder: LocalEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "atomic"
    folder.mkdir()
    (folder / "other.md").write_text("# Other\n\nUnrelated text about rivers and bridges.\n")
    (folder / "doc.md").write_text(f"# Atomic\n\n{_paragraphs(OLD, 6)}\n")
    c = build_components(config.model_copy(update={"namespace": NS}), embedder=embedder)
    ingest(c, DirectorySource(folder))
    old_chunks = c.records.journal.live_chunk_ids(NS, "atomic/doc.md#")
    assert len(old_chunks) >= 4
    query = "paragraph about the version of the atomic document"
    assert _versions_seen(c, query) == [{OLD}, {OLD}]

    (folder / "doc.md").write_text(f"# Atomic\n\n{_paragraphs(NEW, 2)}\n")  # fewer chunks: old tail ids go stale
    run = stages.open_run(c, NS, "atomic")
    write_batches(DirectSteps(c), run, DirectorySource(folder).items(), batch_size=10)
    raw = [m.metadata["text"] for m in c.store.query(embedder.embed([query])[0], namespace=NS, top_k=20)]
    assert any(OLD in t for t in raw) and any(NEW in t for t in raw)  # the index itself holds both versions now
    assert _versions_seen(c, query) == [{OLD}, {OLD}]  # queries still see only the committed one
    stages.verify(c, run)

    c.records.journal.commit_run(run.run_id, NS, "atomic", delete_unseen=False)  # committed; stale ids not yet deleted
    assert c.records.journal.tombstones(NS)
    assert _versions_seen(c, query) == [{NEW}, {NEW}]
    delete_tombstones(c, NS)
    assert _versions_seen(c, query) == [{NEW}, {NEW}]
    assert len(c.records.journal.live_chunk_ids(NS, "atomic/doc.md#")) < len(old_chunks)
    c.close()

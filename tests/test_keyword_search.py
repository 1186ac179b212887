"""Keyword and hybrid search on Pinecone with no per-host state: the sparse index beside the dense one, the statistics
in the shared record store, through the real SDK against one LoopbackPinecone.

- bm25 on Pinecone ranks and scores as the local bm25s path does, filters included;
- a host with an empty home (same Pinecone, same record store) returns the ingest host's top 10 in every mode, in
  the core and through the query service, and leaves nothing on its disk;
- every stage that writes dense vectors writes the sparse ones: rollback restores them, commit deletes the stale
  ones, reconcile and refresh repair them; the statistics follow the journal;
- the sparse vectors are re-encoded when the average chunk length drifts, and an interrupted re-encode is finished
  by the next run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.errors import ValidationFailed
from ragline.indexing.keywords import PARAMS as BM25_PARAMS
from ragline.indexing.keywords import sparse_problems
from ragline.indexing.pipeline import ingest
from ragline.indexing.reconcile import reconcile
from ragline.indexing.refresh import RefreshTarget, refresh_source
from ragline.indexing.stats import IngestStats
from ragline.indexing.steps import DirectSteps
from ragline.records import index_metadata
from ragline.recordstore.rows import KeywordEncoding
from ragline.retrieval.bm25_sparse import params_key
from ragline.retrieval.search import search
from ragline.service import create_app
from ragline.sources import DirectorySource
from ragline.stores.base import VectorRecord
from ragline.stores.sparse import SparseRecord, SparseValues
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.conftest import SAMPLE

API_KEY = "pc-keyword-secret-0b1c"
NS = "docs"
SPARSE_INDEX = "ragline-sparse"
QUERIES = [json.loads(line)["text"] for line in (SAMPLE / "queries.jsonl").read_text().splitlines()]
SERVICE_KEY = "keyword-tenant-key-4d5e6f"


@pytest.fixture
def server() -> Iterator[LoopbackPinecone]:
    with LoopbackPinecone(api_key=API_KEY) as server:
        yield server


class Hosts:
    """Hosts of one deployment: each its own home, one Pinecone server and (unless told) one record store."""

    def __init__(self, root: Path, server: LoopbackPinecone, embedder: HashingEmbedder) -> None:
        self.root, self.server, self.embedder = root, server, embedder
        self.built: list[Components] = []

    def pinecone(self, name: str, *, records_of: Components | None = None, **settings: Any) -> Components:
        config = RaglineConfig(
            home=self.root / name,
            namespace=NS,
            embedder="hashing",
            pinecone_api_key=API_KEY,
            pinecone_host=self.server.url,
            pinecone_retry_backoff_s=0.01,
            service_api_keys={SecretStr(SERVICE_KEY): [NS]},
            **{"consistency_wait_s": 0, **settings},
        )
        c = build_components(config, embedder=self.embedder)
        if records_of is not None:  # the shared record store (PostgreSQL in production)
            c.records.close()
            c = dataclasses.replace(c, records=records_of.records)
        self.built.append(c)
        return c

    def local(self, name: str) -> Components:
        config = RaglineConfig(home=self.root / name, namespace=NS, embedder="hashing", store="lancedb")
        self.built.append(build_components(config, embedder=self.embedder))
        return self.built[-1]


@pytest.fixture
def hosts(tmp_path: Path, server: LoopbackPinecone, embedder: HashingEmbedder) -> Iterator[Hosts]:
    hosts = Hosts(tmp_path, server, embedder)
    yield hosts
    closed: set[int] = set()
    for c in hosts.built:
        for part in (c.records, c.cache, c.store, c.sparse):
            if part is not None and id(part) not in closed:
                closed.add(id(part))
                getattr(part, "close", lambda: None)()


def ids(c: Components, query: str, mode: str, **options: Any) -> list[str]:
    return [h.chunk_id for h in search(c, query, namespace=NS, mode=mode, top_k=10, **options).hits]  # type: ignore[arg-type]


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.md"):
        old.unlink()
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def sparse_state(server: LoopbackPinecone) -> dict[str, tuple[list[int], list[float], dict[str, Any]]]:
    """What the sparse index holds, comparably."""
    records = server.records(SPARSE_INDEX, NS)
    return {
        i: (r.sparse[0].tolist(), r.sparse[1].tolist(), r.metadata) for i, r in records.items() if r.sparse is not None
    }


def statistics(c: Components, terms: list[str]) -> tuple[object, dict[str, int]]:
    return c.records.keywords.corpus(NS), c.records.keywords.document_frequencies(NS, terms)


def assert_sparse_in_step(c: Components, server: LoopbackPinecone) -> None:
    """The sparse index holds exactly the live chunks, each with the vector and metadata its row implies."""
    live = c.records.journal.live_chunk_ids(NS)
    assert sorted(server.records(SPARSE_INDEX, NS)) == live == sorted(server.records("ragline", NS))
    rows = list(c.records.journal.chunk_rows(NS, live).values())
    assert sparse_problems(c, NS, rows, [index_metadata(r.text, r.metadata) for r in rows]) == {}


# --- searching ------------------------------------------------------------------------------------------------


def test_bm25_on_pinecone_ranks_and_scores_as_the_local_path(hosts: Hosts) -> None:
    pinecone, local = hosts.pinecone("a"), hosts.local("local")
    ingest(pinecone, DirectorySource(SAMPLE, name="sample"))
    ingest(local, DirectorySource(SAMPLE, name="sample"))
    for query in QUERIES:
        remote = search(pinecone, query, namespace=NS, mode="bm25", top_k=10).hits
        here = search(local, query, namespace=NS, mode="bm25", top_k=10).hits
        assert [h.chunk_id for h in remote] == [h.chunk_id for h in here], query
        np.testing.assert_allclose([h.score for h in remote], [h.score for h in here], rtol=1e-5)
    only = {"doc_id": {"$in": ["sample/retrieval/hybrid-search.md", "sample/operations/embedding-cache.md"]}}
    for query in QUERIES[:10]:
        remote = ids(pinecone, query, "bm25", filter=only)
        assert remote == ids(local, query, "bm25", filter=only)
        assert {cid.rpartition("#")[0] for cid in remote} <= set(only["doc_id"]["$in"])
    assert ids(pinecone, "zeppelin quasar", "bm25") == []


def test_a_host_with_an_empty_home_answers_as_the_ingest_host(hosts: Hosts, server: LoopbackPinecone) -> None:
    ingest_host = hosts.pinecone("a")
    ingest(ingest_host, DirectorySource(SAMPLE, name="sample"))
    query_host = hosts.pinecone("b", records_of=ingest_host)
    for mode in ("dense", "bm25", "hybrid"):
        for query in QUERIES[:15]:
            expected = ids(ingest_host, query, mode)
            assert expected and ids(query_host, query, mode) == expected, (mode, query)
    feedback = ids(ingest_host, QUERIES[0], "bm25", expand=True)
    assert ids(query_host, QUERIES[0], "bm25", expand=True) == feedback
    with TestClient(create_app(query_host.config, query_host)) as client:
        for mode in ("dense", "bm25", "hybrid"):
            response = client.post(
                "/query",
                json={"query": QUERIES[3], "namespace": NS, "mode": mode, "top_k": 10},
                headers={"X-API-Key": SERVICE_KEY},
            )
            assert response.status_code == 200, response.text
            assert [r["chunk_id"] for r in response.json()["results"]] == ids(ingest_host, QUERIES[3], mode)
    home = query_host.config.home
    assert not (home / "bm25").exists() and not (home / "lancedb").exists()
    assert all(p.name.startswith(("records.sqlite", "embeddings.sqlite")) for p in home.iterdir())  # opened, unread


# --- the write path -------------------------------------------------------------------------------------------

V1 = {
    "wings.md": "# Wings\n\nSwept wings delay the shock at transonic speed. Swept wings stall at the tips first.",
    "tides.md": "# Tides\n\nThe moon's gravity raises tidal bulges; tides follow the moon.",
    "kites.md": "# Kites\n\nA kite flies on the wind; kite lines carry the tension.",
}
V2 = {
    "wings.md": "# Wings\n\nDelta wings suit supersonic flight.",  # changed
    "tides.md": V1["tides.md"],
    "gliders.md": "# Gliders\n\nGliders soar on thermals and ridge lift.",  # new; kites.md is gone
}


def test_a_failed_run_leaves_the_sparse_index_and_statistics_as_they_were(
    hosts: Hosts, server: LoopbackPinecone, tmp_path: Path
) -> None:
    c = hosts.pinecone("a", batch_size=1)
    folder = write_docs(tmp_path / "docs", V1)
    ingest(c, DirectorySource(folder, name="docs"))
    terms = ["wing", "kite", "glider", "supersonic", "moon"]
    before, stats_before = sparse_state(server), statistics(c, terms)

    def fail_after_a_write(stats: IngestStats) -> None:
        if stats.chunks_written:
            raise RuntimeError("worker lost")

    write_docs(folder, V2)
    with pytest.raises(RuntimeError, match="worker lost"):
        ingest(c, DirectorySource(folder, name="docs"), cleanup="full", on_progress=fail_after_a_write)
    assert sparse_state(server) == before and statistics(c, terms) == stats_before
    assert_sparse_in_step(c, server)


def test_a_commit_deletes_stale_sparse_records_and_moves_the_statistics(
    hosts: Hosts, server: LoopbackPinecone, tmp_path: Path
) -> None:
    c = hosts.pinecone("a")
    folder = write_docs(tmp_path / "docs", V1)
    ingest(c, DirectorySource(folder, name="docs"))
    assert ids(c, "kite lines", "bm25")[0].startswith("docs/kites.md#")
    write_docs(folder, V2)
    ingest(c, DirectorySource(folder, name="docs"), cleanup="full")
    assert_sparse_in_step(c, server)
    corpus, frequencies = statistics(c, ["kite", "glider", "wing", "swept"])
    assert frequencies == {"glider": 1, "wing": 1}
    assert corpus == c.records.keywords.corpus(NS) and corpus.chunks == len(c.records.journal.live_chunk_ids(NS))
    assert ids(c, "kite lines", "bm25") == [] and ids(c, "swept", "bm25") == []
    assert ids(c, "supersonic delta", "bm25")[0].startswith("docs/wings.md#")


def test_reconcile_finds_and_repairs_sparse_drift_and_fills_an_empty_sparse_index(
    hosts: Hosts, server: LoopbackPinecone
) -> None:
    c = hosts.pinecone("a")
    ingest(c, DirectorySource(SAMPLE, name="sample"))
    assert c.sparse is not None
    live = c.records.journal.live_chunk_ids(NS)
    c.sparse.delete(namespace=NS, ids=live[:3])
    c.sparse.upsert([SparseRecord("ghost#0", SparseValues((5,), (1.0,)))], namespace=NS)
    wrong = c.sparse.fetch([live[10]], namespace=NS)[live[10]]
    c.sparse.upsert([SparseRecord(live[10], SparseValues((7,), (3.0,)), wrong.metadata)], namespace=NS)
    found = reconcile(c, NS, repair=False, sample_size=len(live))
    assert found.keywords is not None and not found.in_sync and (found.missing, found.orphans) == ([], [])
    assert (found.keywords.missing, found.keywords.orphans, found.keywords.different) == (
        live[:3],
        ["ghost#0"],
        [live[10]],
    )
    assert reconcile(c, NS, sample_size=len(live)).repaired
    assert_sparse_in_step(c, server)

    c.sparse.delete(namespace=NS, delete_all=True)  # as a namespace indexed before it had a sparse index:
    with c.records.db.transaction() as db:  # type: ignore[attr-defined]  # no vectors, no terms, no encoding
        for table in ("keyword_chunks", "keyword_terms", "keyword_encodings"):
            db.execute(f"DELETE FROM {table}")
    report = reconcile(c, NS, sample_size=len(live))
    assert report.keywords is not None and len(report.keywords.missing) == len(live)
    assert_sparse_in_step(c, server)


def test_refresh_reverifies_and_restores_a_sparse_record(
    hosts: Hosts, server: LoopbackPinecone, tmp_path: Path
) -> None:
    c = hosts.pinecone("a")
    folder = write_docs(tmp_path / "docs", V1)
    ingest(c, DirectorySource(folder, name="docs"))
    assert c.sparse is not None
    [first, *_] = c.records.journal.live_chunk_ids(NS)
    record = c.sparse.fetch([first], namespace=NS)[first]
    c.sparse.upsert([SparseRecord(first, SparseValues((9,), (1.0,)), record.metadata)], namespace=NS)
    outcome = refresh_source(c, DirectSteps(c), RefreshTarget(folder, NS, 0.0), now=1e12)
    assert outcome.freshness.chunks_restored == 1 and outcome.freshness.documents_expired == len(V1)
    assert_sparse_in_step(c, server)


def test_a_namespace_without_sparse_vectors_fails_verification_until_reconciled(
    hosts: Hosts, server: LoopbackPinecone, tmp_path: Path
) -> None:
    c = hosts.pinecone("a")
    folder = write_docs(tmp_path / "docs", V1)
    ingest(c, DirectorySource(folder, name="docs"))
    assert c.sparse is not None
    c.sparse.delete(namespace=NS, delete_all=True)
    write_docs(folder, {**V1, "gliders.md": V2["gliders.md"]})
    with pytest.raises(ValidationFailed) as failed:
        ingest(c, DirectorySource(folder, name="docs"))
    assert "ragline reconcile" in str(failed.value.failures)
    reconcile(c, NS)
    ingest(c, DirectorySource(folder, name="docs"))
    assert_sparse_in_step(c, server)


# --- average-length drift -------------------------------------------------------------------------------------


def test_sparse_vectors_are_re_encoded_when_the_average_length_drifts(
    hosts: Hosts, server: LoopbackPinecone, tmp_path: Path
) -> None:
    c, local = hosts.pinecone("a"), hosts.local("local")
    folder = write_docs(tmp_path / "docs", V1)
    for host in (c, local):
        ingest(host, DirectorySource(folder, name="docs"))
    first = c.records.keywords.encoding(NS)
    assert first is not None and first.settled
    long = " ".join(f"Lift and drag of wing section {n} at angle {n % 7} in tunnel run {n}." for n in range(25))
    write_docs(folder, {**V1, "tunnel.md": f"# Tunnel\n\n{long}"})
    written_before = server.count("upsert")
    for host in (c, local):
        ingest(host, DirectorySource(folder, name="docs"))
    encoding = c.records.keywords.encoding(NS)
    average = c.records.keywords.corpus(NS).avg_length
    assert encoding is not None and encoding.settled and average is not None
    assert encoding.avg_length == pytest.approx(average) and abs(average / first.avg_length - 1) > 0.05
    assert server.count("upsert") > written_before + 2  # the re-encode rewrote every chunk's sparse vector
    assert_sparse_in_step(c, server)
    for query in ("swept wing stall", "lift and drag", "moon tides", "kite wind"):
        remote = search(c, query, namespace=NS, mode="bm25").hits
        here = search(local, query, namespace=NS, mode="bm25").hits
        assert [h.chunk_id for h in remote] == [h.chunk_id for h in here]
        np.testing.assert_allclose([h.score for h in remote], [h.score for h in here], rtol=1e-5)


def test_an_interrupted_re_encode_is_finished_by_the_next_run(hosts: Hosts, server: LoopbackPinecone) -> None:
    c = hosts.pinecone("a")
    ingest(c, DirectorySource(SAMPLE, name="sample"))
    average = c.records.keywords.corpus(NS).avg_length
    assert average is not None
    interrupted = KeywordEncoding(average * 1.5, params_key(BM25_PARAMS), settled=False)
    c.records.keywords.save_encoding(NS, interrupted, replace=True)  # crashed before all were re-upserted
    assert c.sparse is not None
    live = c.records.journal.live_chunk_ids(NS)
    stale = c.sparse.fetch(live[:1], namespace=NS)[live[0]]
    c.sparse.upsert([SparseRecord(live[0], SparseValues((1,), (0.5,)), stale.metadata)], namespace=NS)
    result = ingest(c, DirectorySource(SAMPLE, name="sample"))  # nothing changed: recovery alone does the work
    assert result.stats.chunks_written == 0
    encoding = c.records.keywords.encoding(NS)
    assert encoding == KeywordEncoding(pytest.approx(average), params_key(BM25_PARAMS), settled=True)
    assert_sparse_in_step(c, server)


# --- another host's run, open or committing ------------------------------------------------------------------


def test_bm25_on_pinecone_looks_deeper_when_uncommitted_writes_take_the_best_places(
    hosts: Hosts, tmp_path: Path
) -> None:
    c = hosts.pinecone("a")
    ingest(c, DirectorySource(write_docs(tmp_path / "docs", V1), name="docs"))
    assert c.sparse is not None
    best = ids(c, "kite lines", "bm25")[0]
    found = c.sparse.fetch([best], namespace=NS)[best]
    louder = SparseValues(found.sparse.indices, tuple(10 * v for v in found.sparse.values))
    written = [SparseRecord(f"docs/pending-{n}.md#0", louder, found.metadata) for n in range(40)]
    c.sparse.upsert(written, namespace=NS)  # a run's writes, not committed: better matches than anything committed
    hits = search(c, "kite lines", namespace=NS, mode="bm25", top_k=1).hits
    assert [h.chunk_id for h in hits] == [best]  # found past the 40 hidden ones


def test_a_dry_run_leaves_out_what_an_open_run_wrote_to_the_sparse_index(hosts: Hosts) -> None:
    from ragline.testing.recordstore_contract import chunks_of, document

    c = hosts.pinecone("a")
    ingest(c, DirectorySource(SAMPLE, name="sample"))
    assert c.sparse is not None
    for namespace in (NS, "first"):  # a namespace with commits, and one whose first run is still open
        doc = document("open/a.md", "kite lines carry the tension of the wind")
        chunks = chunks_of(doc, ["kite lines carry", "the tension of the wind"])
        c.records.journal.begin_run(f"open-{namespace}", namespace, "open")
        c.records.journal.record_pending(f"open-{namespace}", namespace, [(doc, chunks, "cfg", "hashing")])
        vectors = c.embedder.embed([k.text for k in chunks])
        c.store.upsert(
            [VectorRecord(k.chunk_id, v, {"text": k.text}) for k, v in zip(chunks, vectors)], namespace=namespace
        )
        c.sparse.upsert([SparseRecord(k.chunk_id, SparseValues((1,), (1.0,))) for k in chunks], namespace=namespace)
        with c.locks.hold(namespace):  # the run's process is alive
            report = reconcile(c, namespace, repair=False)
        assert report.keywords is not None and report.keywords.orphans == [] and report.orphans == []
        assert report.refusal is None and report.in_sync, report


def test_stale_ids_stay_queued_until_reads_no_longer_show_them(tmp_path: Path, embedder: HashingEmbedder) -> None:
    with LoopbackPinecone(api_key=API_KEY, write_lag_s=1.0) as lagging:
        hosts = Hosts(tmp_path, lagging, embedder)
        c = hosts.pinecone("a", consistency_wait_s=30)
        folder = write_docs(tmp_path / "docs", V1)
        ingest(c, DirectorySource(folder, name="docs"))
        journal = c.records.journal
        shown: list[str] = []
        clear = journal.clear_tombstones

        def clear_once_gone(namespace: str, chunk_ids: Sequence[str]) -> None:
            shown.extend(c.store.fetch(list(chunk_ids), namespace=namespace))  # what other hosts still read
            clear(namespace, chunk_ids)

        journal.clear_tombstones = clear_once_gone  # type: ignore[method-assign]
        write_docs(folder, V2)
        stats = ingest(c, DirectorySource(folder, name="docs"), cleanup="full").stats
        assert stats.chunks_deleted > 0 and shown == []  # no host saw them unqueued and still indexed: no orphans
        for part in (c.records, c.cache, c.store, c.sparse):
            getattr(part, "close", lambda: None)()

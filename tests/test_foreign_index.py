"""A host whose record store never committed a namespace refuses to write an index that holds vectors: a host left
on SQLite beside hosts that share PostgreSQL and Pinecone would overwrite their vectors, and its rollback (the count
no longer matching its record store) would delete them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.components import build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.errors import ConfigError
from ragline.indexing.pipeline import ingest
from ragline.indexing.rebuild import rebuild_records
from ragline.indexing.reconcile import reconcile
from ragline.sources import open_source
from ragline.testing.pinecone_server import LoopbackPinecone
from tests.support.backends import API_KEY, LAG_S, pinecone_config

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_a_host_without_the_shared_record_store_refuses_and_deletes_nothing(
    config: RaglineConfig, pg_config: RaglineConfig, embedder: HashingEmbedder, tmp_path: Path
) -> None:
    with LoopbackPinecone(api_key=API_KEY, write_lag_s=LAG_S) as server:
        shared = build_components(pinecone_config(pg_config, server), embedder=embedder)
        written = ingest(shared, open_source(SAMPLE)).stats.chunks_written
        stray_config = pinecone_config(config.model_copy(update={"home": tmp_path / "stray"}), server)
        stray = build_components(stray_config, embedder=embedder)  # its record store: SQLite, empty
        try:
            with pytest.raises(ConfigError, match=rf"holds {written} vectors, but this record store has no commit"):
                ingest(stray, open_source(SAMPLE))
            assert stray.records.journal.last_runs(config.namespace) == []  # no run opened
            check = reconcile(shared, config.namespace, repair=False)
            assert check.in_sync and check.indexed == written  # nothing of the shared hosts' lost
            joined = build_components(stray_config.model_copy(update=_database_of(pg_config)), embedder=embedder)
            again = ingest(joined, open_source(SAMPLE))  # pointed at the shared record store, as the error says
            joined.close()
            assert again.stats.chunks_written == 0
        finally:
            stray.close()
            shared.close()


def _database_of(config: RaglineConfig) -> dict[str, object]:
    return {"database_url": config.database_url, "database_schema": config.database_schema}


def test_a_lone_host_adopts_its_index_after_losing_its_record_store(
    config: RaglineConfig, embedder: HashingEmbedder, tmp_path: Path
) -> None:
    with LoopbackPinecone(api_key=API_KEY, write_lag_s=LAG_S) as server:
        first = build_components(pinecone_config(config, server), embedder=embedder)
        ingest(first, open_source(SAMPLE))
        first.close()
        (config.home / "records.sqlite").unlink()
        for suffix in ("-wal", "-shm"):
            (config.home / f"records.sqlite{suffix}").unlink(missing_ok=True)
        lost = build_components(pinecone_config(config, server), embedder=embedder)
        try:
            with pytest.raises(ConfigError, match="records rebuild"):
                ingest(lost, open_source(SAMPLE))
            rebuild_records(lost, config.namespace)
            again = ingest(lost, open_source(SAMPLE))
            assert (again.stats.chunks_written, again.stats.embeddings_computed) == (0, 0)
        finally:
            lost.close()


def test_a_namespace_dropped_a_moment_ago_is_no_foreign_index(
    config: RaglineConfig, embedder: HashingEmbedder, tmp_path: Path
) -> None:
    """Pinecone counts a dropped namespace's vectors until the delete shows: a run waits for it (up to the
    consistency window) before taking them for another record store's."""
    with LoopbackPinecone(api_key=API_KEY, write_lag_s=LAG_S) as server:
        c = build_components(pinecone_config(config, server), embedder=embedder)
        try:
            written = ingest(c, open_source(SAMPLE)).stats.chunks_written
            c.records.drop_namespace(config.namespace)  # as another host's `versions drop`: no wait for the delete
            c.store.delete(namespace=config.namespace, delete_all=True)
            assert c.sparse is not None
            c.sparse.delete(namespace=config.namespace, delete_all=True)
            again = ingest(c, open_source(SAMPLE))
            assert again.stats.chunks_written == written
        finally:
            c.close()

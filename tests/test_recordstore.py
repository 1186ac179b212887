"""The SQLite record store and embedding cache against the shared contract suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragline.recordstore.sqlite import SQLiteEmbeddingCache, SQLiteRecordStore
from ragline.testing.recordstore_contract import EmbeddingCacheContract, RecordStoreContract, document, write_run


class TestSQLiteRecordStore(RecordStoreContract):
    @pytest.fixture
    def record_store(self, tmp_path: Path) -> Iterator[SQLiteRecordStore]:
        store = SQLiteRecordStore(tmp_path / "records.sqlite")
        yield store
        store.close()


class TestSQLiteEmbeddingCache(EmbeddingCacheContract):
    @pytest.fixture
    def embedding_cache(self, tmp_path: Path) -> Iterator[SQLiteEmbeddingCache]:
        cache = SQLiteEmbeddingCache(tmp_path / "embeddings.sqlite")
        yield cache
        cache.close()


def test_rows_survive_reopening(tmp_path: Path) -> None:
    first = SQLiteRecordStore(tmp_path / "r.sqlite")
    write_run(first, "r1", [(document("d1"), ["a"])])
    first.close()
    again = SQLiteRecordStore(tmp_path / "r.sqlite")
    assert again.journal.live_chunk_ids("ns") == ["d1#0"]
    again.close()

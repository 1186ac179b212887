"""The SQLite backend of the record store and the embedding cache: the embedded default, for one host."""

from ragline.recordstore.sqlite.embedding_cache import SQLiteEmbeddingCache
from ragline.recordstore.sqlite.store import SQLiteRecordStore, open_sqlite_record_store

__all__ = ["SQLiteEmbeddingCache", "SQLiteRecordStore", "open_sqlite_record_store"]

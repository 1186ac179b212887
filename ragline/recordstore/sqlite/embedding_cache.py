"""The embedding cache on SQLite: float32 vectors keyed by (model id, text hash), in their own file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ragline.recordstore.migrations import Migration
from ragline.recordstore.sqlite.database import SQLiteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (model_id TEXT NOT NULL, text_hash TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model_id, text_hash));
"""
SCHEMA_VERSION = 1
MIGRATIONS = (Migration(1, "record the schema version (the table is unchanged)", ()),)


class SQLiteEmbeddingCache:
    """``EmbeddingCache`` on one SQLite file; entries are never evicted while a live chunk may need them."""

    def __init__(self, path: Path) -> None:
        self.db = SQLiteDatabase(
            path, role="embedding cache", if_damaged="rebuild it from the index (`ragline records rebuild`)"
        )
        self.db.ensure_schema(SCHEMA, SCHEMA_VERSION, MIGRATIONS, marker_table="embeddings")

    def close(self) -> None:
        self.db.close()

    def get_many(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.db.rows_for_ids(
            "SELECT text_hash, vector FROM embeddings WHERE model_id = ? AND text_hash IN ({marks})",
            (model_id,),
            text_hashes,
        )
        return {h: np.frombuffer(blob, dtype=np.float32) for h, blob in rows}

    def put_many(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        with self.db.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model_id, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()],
            )

    def __len__(self) -> int:
        return self.db.count("SELECT COUNT(*) FROM embeddings")

"""The embedding cache on PostgreSQL: float32 vectors keyed by (model id, text hash), shared by every host.

Rollback restores overwritten vectors from this cache, so on several hosts it must be shared: it lives in the same
schema as the record store. Lookups and writes are one statement per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ragline.recordstore.postgres.database import MAX_CONNECTIONS, PostgresDatabase
from ragline.recordstore.postgres.schema import ensure_schema


class PostgresEmbeddingCache:
    """``EmbeddingCache`` in ragline's PostgreSQL schema; entries are never evicted while a live chunk may need them."""

    def __init__(self, url: str, schema: str, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.db = PostgresDatabase(url, schema, max_connections=max_connections)
        ensure_schema(self.db)

    def close(self) -> None:
        self.db.close()

    def get_many(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.db.rows(
            "SELECT text_hash, vector FROM embeddings WHERE model_id = %s AND text_hash = ANY(%s::text[])",
            (model_id, list(text_hashes)),
            binary=True,
        )
        return {h: np.frombuffer(blob, dtype=np.float32) for h, blob in rows}

    def put_many(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        self.db.execute(
            "INSERT INTO embeddings SELECT %s, * FROM unnest(%s::text[], %s::bytea[]) "
            "ON CONFLICT (model_id, text_hash) DO UPDATE SET vector = excluded.vector",
            (model_id, list(vectors), [np.asarray(v, dtype=np.float32).tobytes() for v in vectors.values()]),
        )

    def __len__(self) -> int:
        return self.db.count("SELECT COUNT(*) FROM embeddings")

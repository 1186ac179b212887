"""Embedding cache keyed by (model id, hash of the exact text embedded): nothing is embedded twice across runs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ragline.batching import batched
from ragline.embedders.base import Embedder
from ragline.records import sha256_hex
from ragline.recordstore import SQL_IDS_PER_QUERY


class EmbeddingCache:
    """float32 vectors in one SQLite file; entries are never evicted while a live chunk may need them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model_id TEXT NOT NULL, text_hash TEXT NOT NULL, "
            "vector BLOB NOT NULL, PRIMARY KEY (model_id, text_hash))"
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def get_many(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the hashes that have one."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for part in batched(text_hashes, SQL_IDS_PER_QUERY):
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT text_hash, vector FROM embeddings WHERE model_id = ? AND text_hash IN ({marks})",
                    (model_id, *part),
                ).fetchall()
                for text_hash, blob in rows:
                    found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                    [(model_id, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


def embed_with_cache(
    embedder: Embedder, cache: EmbeddingCache, texts: Sequence[str]
) -> tuple[np.ndarray, int, int]:
    """Vectors for ``texts``: exact duplicates embedded once, cached ones not at all.

    Returns the ``(len(texts), dimension)`` array, how many texts were embedded, and how many came from the cache.
    """
    hashes = [sha256_hex(t) for t in texts]
    cached = cache.get_many(embedder.model_id, sorted(set(hashes)))
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in cached and h not in missing:
            missing[h] = t
    if missing:
        fresh = embedder.embed(list(missing.values()))
        new = dict(zip(missing.keys(), fresh))
        cache.put_many(embedder.model_id, new)
        cached.update(new)
    vectors = np.stack([cached[h] for h in hashes]) if hashes else np.zeros((0, embedder.dimension), np.float32)
    return vectors, len(missing), len(texts) - len(missing)

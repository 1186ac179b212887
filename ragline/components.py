"""Build the pipeline's parts from one config: embedder, chunker, vector store, record store, embedding cache.

``components_for`` caches per process, so thin Prefect tasks can rebuild what they need from the config alone
without reloading the model for every batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ragline.chunking import Chunker
from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.embedders.cache import EmbeddingCache
from ragline.recordstore import SQLiteRecordStore, open_record_store
from ragline.stores.base import VectorStore


@dataclass
class Components:
    """Everything a pipeline stage needs, built from one config."""

    config: RaglineConfig
    embedder: Embedder
    chunker: Chunker
    store: VectorStore
    records: SQLiteRecordStore
    cache: EmbeddingCache

    def close(self) -> None:
        self.records.close()
        self.cache.close()


def make_embedder(config: RaglineConfig) -> Embedder:
    """The configured embedding provider."""
    from ragline.embedders.local import LocalEmbedder

    return LocalEmbedder(
        models_dir=config.models_dir,
        backend=config.local_backend,
        batch_size=config.embed_batch_size,
        model_name=config.local_model,
    )


def make_store(config: RaglineConfig) -> VectorStore:
    """The configured vector store."""
    from ragline.stores.lancedb_store import LanceDBStore

    return LanceDBStore(config.lancedb_path)


def build_components(config: RaglineConfig, embedder: Embedder | None = None) -> Components:
    """Fresh components for ``config`` (``embedder`` may be shared to avoid loading a model twice)."""
    embedder = embedder or make_embedder(config)
    chunker = Chunker(
        count_tokens=embedder.count_tokens,
        tokenizer_id=embedder.model_id,
        chunk_size=min(config.chunk_size, embedder.max_tokens),
        chunk_overlap=config.chunk_overlap,
    )
    return Components(
        config=config,
        embedder=embedder,
        chunker=chunker,
        store=make_store(config),
        records=open_record_store(config.record_store_path),
        cache=EmbeddingCache(config.home / "embeddings.sqlite"),
    )


_cache: dict[str, Components] = {}
_cache_lock = threading.Lock()


def components_for(config: RaglineConfig) -> Components:
    """Components for ``config``, built once per process."""
    key = config.model_dump_json()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build_components(config)
        return _cache[key]

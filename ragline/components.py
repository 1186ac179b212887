"""Build the pipeline's parts from one config: embedder, chunker, vector store (and its sparse keyword index on
Pinecone), record store, embedding cache, namespace locks.

``components_for`` caches per process, so thin Prefect tasks can rebuild what they need from the config alone
without reloading the model for every batch. Inside ``stopped_on_error`` (a flow's session of stages,
``ragline.tasks.steps``) it hands out the cached parts with that session's own ``stopping``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TypedDict

from ragline.config import RaglineConfig
from ragline.embedders.base import Embedder
from ragline.embedders.cache import EmbeddingCache
from ragline.errors import ConfigError
from ragline.indexing.ahead import StartedAhead
from ragline.indexing.chunking import Chunker
from ragline.indexing.locks import NamespaceLocks, make_locks
from ragline.indexing.near_duplicates import NearDuplicateDetector
from ragline.memory import limit_malloc_arenas
from ragline.records import sha256_hex
from ragline.recordstore import RecordStore
from ragline.stores.base import VectorStore
from ragline.stores.sparse import SparseStore
from ragline.workers import WorkerPool, worker_processes


@dataclass
class Components:
    """Everything a pipeline stage needs, built from one config."""

    config: RaglineConfig
    embedder: Embedder
    chunker: Chunker
    store: VectorStore
    records: RecordStore
    cache: EmbeddingCache
    locks: NamespaceLocks
    near_duplicates: NearDuplicateDetector | None = None
    sparse: SparseStore | None = None
    """The sparse index of keyword search beside ``store`` (Pinecone); None: BM25 runs locally (LanceDB)."""
    workers: WorkerPool = field(default_factory=lambda: WorkerPool(0))
    """Processes for the CPU work of large batches and rebuilds (``ragline.workers``), started on first use."""
    ahead: StartedAhead = field(default_factory=StartedAhead)
    """Chunking and signing started in ``workers`` when a batch is read (``ragline.indexing.ahead``)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set while a driver abandons its run (Ctrl-C, SIGTERM, a failed stage): a stage it left running in the
    background (embedding) stops at its next call instead of finishing the batch. ``DirectSteps.session`` gives each
    session a copy of the components with an event of its own; a flow's session, ``stopped_on_error``."""

    def close(self) -> None:
        self.records.close()
        self.cache.close()
        self.workers.close()
        for store in (self.store, self.sparse):
            close_store = getattr(store, "close", None)
            if close_store is not None:
                close_store()


def make_embedder(config: RaglineConfig) -> Embedder:
    """The configured embedding provider: OpenAI (or a compatible server) when configured, else the local model."""
    if config.embedder_kind == "openai":
        from ragline.embedders.openai_embedder import OpenAIEmbedder

        return OpenAIEmbedder(
            api_key=config.openai_api_key.get_secret_value() if config.openai_api_key else None,
            model=config.openai_model,
            dimensions=config.openai_dimensions,
            base_url=config.openai_base_url,
            max_retries=config.openai_max_retries,
            timeout_s=config.openai_timeout_s,
        )
    if config.embedder_kind == "hashing":
        from ragline.embedders.hashing import HashingEmbedder

        return HashingEmbedder()
    from ragline.embedders.local import LocalEmbedder

    return LocalEmbedder(
        models_dir=config.models_dir,
        backend=config.local_backend,
        batch_size=config.embed_batch_size,
        model_name=config.local_model,
    )


def make_store(config: RaglineConfig, dimension: int) -> VectorStore:
    """The configured vector store: Pinecone when an API key is set, else LanceDB on disk."""
    if config.store_kind == "pinecone":
        from ragline.stores.pinecone_store import PineconeStore

        store = PineconeStore(
            index_name=config.pinecone_index,
            dimension=dimension,
            transport=config.pinecone_transport,
            grpc_host=config.pinecone_grpc_host,
            **_pinecone_settings(config),
        )
        store.ensure_index()
        return store
    from datetime import timedelta

    from ragline.stores.lancedb_store import LanceDBStore

    return LanceDBStore(
        config.lancedb_path,
        exact_search_max_vectors=config.lancedb_exact_search_max_vectors,
        ann_nprobes=config.lancedb_ann_nprobes,
        ann_refine_factor=config.lancedb_ann_refine_factor,
        compact_min_fragments=config.lancedb_compact_min_fragments,
        version_retention=timedelta(seconds=config.lancedb_version_retention_s),
    )


def make_sparse_store(config: RaglineConfig) -> SparseStore | None:
    """The sparse index that keyword search uses beside the vector store: Pinecone's, or None (LanceDB: local BM25)."""
    if config.store_kind != "pinecone":
        return None
    from ragline.stores.pinecone_sparse import PineconeSparseStore

    store = PineconeSparseStore(index_name=config.sparse_index_name, **_pinecone_settings(config))
    store.ensure_index()
    return store


class _PineconeSettings(TypedDict):
    api_key: str
    cloud: str
    region: str
    host: str | None
    upsert_concurrency: int
    max_retries: int
    backoff_base_s: float


def _pinecone_settings(config: RaglineConfig) -> _PineconeSettings:
    """The settings the dense and the sparse Pinecone stores share: key, placement, concurrency, retries."""
    if config.pinecone_api_key is None:
        raise ConfigError("store 'pinecone' needs PINECONE_API_KEY (or RAGLINE_PINECONE_API_KEY)")
    return {
        "api_key": config.pinecone_api_key.get_secret_value(),
        "cloud": config.pinecone_cloud,
        "region": config.pinecone_region,
        "host": config.pinecone_host,
        "upsert_concurrency": config.pinecone_upsert_concurrency,
        "max_retries": config.pinecone_max_retries,
        "backoff_base_s": config.pinecone_retry_backoff_s,
    }


def make_record_store(config: RaglineConfig) -> RecordStore:
    """The configured record store: PostgreSQL when ``database_url`` is set (every host), else SQLite under home."""
    if config.database_url is not None:
        from ragline.recordstore.postgres.store import PostgresRecordStore

        return PostgresRecordStore(config.database_url.get_secret_value(), config.database_schema)
    from ragline.recordstore.sqlite import open_sqlite_record_store

    return open_sqlite_record_store(config.record_store_path)


def make_embedding_cache(config: RaglineConfig) -> EmbeddingCache:
    """The configured embedding cache, beside the record store."""
    if config.database_url is not None:
        from ragline.recordstore.postgres.embedding_cache import PostgresEmbeddingCache

        return PostgresEmbeddingCache(config.database_url.get_secret_value(), config.database_schema)
    from ragline.recordstore.sqlite import SQLiteEmbeddingCache

    return SQLiteEmbeddingCache(config.embedding_cache_path)


def build_components(config: RaglineConfig, embedder: Embedder | None = None) -> Components:
    """Fresh components for ``config`` (``embedder`` may be shared to avoid loading a model twice). The first call
    caps the process's malloc arenas (``ragline.memory``): every command, task and service builds its components
    before the native libraries start their threads."""
    limit_malloc_arenas()
    embedder = embedder or make_embedder(config)
    portable_counter = getattr(embedder, "token_counter", None)  # optional (ragline.embedders.base)
    chunker = Chunker(
        count_tokens=portable_counter or embedder.count_tokens,
        tokenizer_id=embedder.model_id,
        chunk_size=min(config.chunk_size, embedder.max_tokens),
        chunk_overlap=config.chunk_overlap,
        portable=portable_counter is not None,
    )
    return Components(
        config=config,
        embedder=embedder,
        chunker=chunker,
        store=make_store(config, embedder.dimension),
        records=make_record_store(config),
        cache=make_embedding_cache(config),
        locks=make_locks(config),
        near_duplicates=NearDuplicateDetector.from_config(config),
        sparse=make_sparse_store(config),
        workers=WorkerPool(worker_processes(config.worker_processes)),
    )


def _identity(config: RaglineConfig) -> str:
    """A cache key that tells configs apart by their secrets too (hashed, never kept in clear)."""
    secrets = [
        s.get_secret_value() if s else "" for s in (config.openai_api_key, config.pinecone_api_key, config.database_url)
    ]
    return config.model_dump_json() + sha256_hex("\x00".join(secrets))


_cache: dict[str, Components] = {}
_cache_lock = threading.Lock()
_session_stopping: ContextVar[threading.Event | None] = ContextVar("ragline_session_stopping", default=None)


def components_for(config: RaglineConfig) -> Components:
    """Components for ``config``, built once per process (with the ``stopping`` of the ``stopped_on_error`` scope
    the caller is in, if any)."""
    key = _identity(config)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build_components(config)
        c = _cache[key]
    stopping = _session_stopping.get()
    return c if stopping is None else replace(c, stopping=stopping)


@contextmanager
def stopped_on_error() -> Iterator[threading.Event]:
    """A scope in which ``components_for`` gives an event of the scope's own (yielded) as ``stopping``, set when the
    scope is left on an error (Ctrl-C, SIGTERM, a failed stage). Stages started inside it in this process, in threads
    that copy the caller's context as Prefect's thread runner does, then make no further embedding call; other runs
    on the same cached components are not stopped. Stages in other processes (Dask) finish their call as before.
    ``DirectSteps.session`` uses the same scope for the components it holds."""
    stopping = threading.Event()
    token = _session_stopping.set(stopping)
    try:
        yield stopping
    except BaseException:
        stopping.set()
        raise
    finally:
        _session_stopping.reset(token)

"""Incremental ingestion: load → chunk → dedupe → embed → upsert → validate → commit, recoverable at each step.

Each stage is a plain function over one batch, so the Prefect flow runs one task per batch and the CLI can drive
the same stages directly (``ingest``) without paying for an orchestrator. The record store's run journal makes
every write undoable until commit (see ``ragline.recordstore``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ragline.batching import batched
from ragline.components import Components
from ragline.config import CleanupMode
from ragline.costs import Usage, estimated_cost_usd, usage_now
from ragline.embedders.cache import embed_with_cache
from ragline.errors import ChunkingError, RaglineError, ValidationFailed
from ragline.limits import MAX_METADATA_BYTES
from ragline.recordstore import LIVE, PENDING, ChunkRow, DocumentRow
from ragline.retrieval.bm25 import refresh_bm25
from ragline.records import Chunk, Document, Metadata, NearDuplicate, QuarantineRecord
from ragline.sources.base import Source, SourceItem
from ragline.stores.base import VectorRecord
from ragline.validation import validate_chunks, validate_embeddings, warm_up
from ragline.versions import write_namespace

log = logging.getLogger(__name__)

DOCUMENT_GROUP = 64
"""Documents loaded and planned together (one plan task in the flow)."""
STORE_BATCH = 1000
"""Ids per store fetch/delete call (Pinecone's limit)."""


@dataclass
class IngestStats:
    """Counts of one run (or one batch of it), and seconds spent per stage."""

    documents_seen: int = 0
    documents_new: int = 0
    documents_changed: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    documents_quarantined: int = 0
    documents_near_duplicate: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    embeddings_computed: int = 0
    embeddings_cached: int = 0
    tokens_embedded: int = 0
    read_units: int = 0
    write_units: int = 0
    estimated_cost_usd: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, other: IngestStats) -> None:
        """Add another batch's counts and timings to these."""
        for f in fields(self):
            if f.name != "seconds":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for stage, secs in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + secs

    def add_usage(self, c: Components, before: Usage) -> None:
        """Add what the providers billed since ``before``, and its estimated cost."""
        spent = usage_now(c.embedder, c.store) - before
        self.tokens_embedded += spent.tokens_embedded
        self.read_units += spent.read_units
        self.write_units += spent.write_units
        self.estimated_cost_usd += estimated_cost_usd(c.config, c.embedder.model_id, spent)

    def timed(self, stage: str) -> _Timer:
        return _Timer(self, stage)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Timer:
    def __init__(self, stats: IngestStats, stage: str) -> None:
        self._stats, self._stage = stats, stage

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._start
        self._stats.seconds[self._stage] = self._stats.seconds.get(self._stage, 0.0) + elapsed


@dataclass(frozen=True)
class PlannedDocument:
    """A new or changed document with the chunks to index for it."""

    document: Document
    chunks: tuple[Chunk, ...]
    is_new: bool


@dataclass(frozen=True)
class Plan:
    """What one group of source items needs: the documents to (re)index, and the group's counts."""

    documents: list[PlannedDocument]
    stats: IngestStats
    unchanged: list[tuple[Document, DocumentRow]] = field(default_factory=list)
    """The skipped documents with their live rows (a refresh re-verifies the expired ones)."""


@dataclass(frozen=True)
class IngestResult:
    """The outcome of a committed run."""

    run_id: str
    namespace: str
    source: str
    stats: IngestStats
    quarantined: list[QuarantineRecord]
    near_duplicates: list[NearDuplicate] = field(default_factory=list)


def new_run_id() -> str:
    """A sortable, unique run id."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def index_metadata(text: str, metadata: Metadata) -> Metadata:
    """The metadata a chunk carries in the index: its own metadata plus its text (for retrieval)."""
    return {**metadata, "text": text}


@contextmanager
def namespace_lock(home: Path, namespace: str) -> Iterator[None]:
    """Hold an exclusive lock on a namespace for one run; a second concurrent run fails fast."""
    lock_dir = home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{namespace}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RaglineError(f"another run is writing namespace {namespace!r}; try again when it ends") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- stages --------------------------------------------------------------------------------------------------


def begin_run(c: Components, namespace: str, source_name: str, run_id: str | None = None) -> str:
    """Finish what crashed runs left, check the namespace's model, and open a run."""
    recover(c, namespace)
    c.records.bind_namespace_model(namespace, c.embedder.model_id, c.embedder.dimension)
    run_id = run_id or new_run_id()
    c.records.begin_run(run_id, namespace, source_name)
    log.info("run %s opened on namespace %s for source %s", run_id, namespace, source_name)
    return run_id


def recover(c: Components, namespace: str) -> list[str]:
    """Undo the runs a crash left open and delete tombstoned ids; returns the run ids undone."""
    undone = c.records.unfinished_runs(namespace)
    for run_id in undone:
        log.warning("rolling back unfinished run %s", run_id)
        rollback_run(c, run_id, namespace)
    delete_tombstones(c, namespace)
    return undone


def plan_documents(c: Components, run_id: str, namespace: str, items: Sequence[SourceItem]) -> Plan:
    """Skip unchanged documents before chunking; chunk the new and changed ones; quarantine what cannot be used."""
    stats = IngestStats()
    documents = [i for i in items if isinstance(i, Document)]
    quarantined = [i for i in items if isinstance(i, QuarantineRecord)]
    planned: list[PlannedDocument] = []
    unchanged: list[tuple[Document, DocumentRow]] = []
    with stats.timed("chunk"):
        live = c.records.live_documents(namespace, [d.doc_id for d in documents])
        near = c.near_duplicates
        replan = near.unchanged_to_replan(c.records, run_id, namespace, documents, live) if near else set()
        wanted = (c.chunker.config_hash, c.embedder.model_id)
        for doc in documents:
            row = live.get(doc.doc_id)
            if row is not None and (row.content_hash, row.config_hash, row.model_id) == (doc.content_hash, *wanted) \
                    and doc.doc_id not in replan:
                stats.documents_unchanged += 1
                unchanged.append((doc, row))
                continue
            verdict = near.check(c.records, run_id, namespace, doc, indexed=row is not None) if near else None
            if near and verdict and verdict.skipped:
                near.accept(run_id, namespace, verdict)
                continue
            doc = verdict.document if verdict is not None else doc  # tagged if a near-duplicate
            chunks, problem = _chunk_or_reason(c, doc)
            if problem is not None:
                quarantined.append(QuarantineRecord(doc.source, doc.uri, problem, doc_id=doc.doc_id))
                continue
            if near and verdict:
                near.accept(run_id, namespace, verdict)
            planned.append(PlannedDocument(doc, tuple(chunks), is_new=row is None))
    stats.documents_seen = len(items)
    stats.documents_new = sum(p.is_new for p in planned)
    stats.documents_changed = len(planned) - stats.documents_new
    stats.documents_quarantined = len(quarantined)
    with stats.timed("record"):
        c.records.mark_seen(run_id, [d.doc_id for d in documents] + [q.doc_id for q in quarantined if q.doc_id])
        if quarantined:
            c.records.quarantine(run_id, namespace, quarantined)
        if near is not None:
            stats.documents_near_duplicate = near.flush(c.records, run_id, namespace)
    return Plan(planned, stats, unchanged)


def _chunk_or_reason(c: Components, doc: Document) -> tuple[list[Chunk], str | None]:
    """The document's chunks, or why it cannot be indexed."""
    try:
        chunks = c.chunker.split(doc)
    except ChunkingError as exc:
        return [], f"chunking failed: {exc}"
    if not chunks:
        return [], "no text to index after chunking"
    for chunk in chunks:
        size = len(json.dumps(index_metadata(chunk.text, chunk.metadata), ensure_ascii=False).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            return [], f"chunk metadata is {size} bytes, over the index's {MAX_METADATA_BYTES}-byte limit"
    return chunks, None


RecordWriter = Callable[[Sequence[VectorRecord]], int]
"""Where a batch's records go instead of the namespace's index (a bulk-import export); returns how many it wrote."""


@dataclass(frozen=True)
class EmbeddedBatch:
    """Planned documents with their chunks' vectors (in chunk order), validated and ready to record and write."""

    documents: list[PlannedDocument]
    vectors: np.ndarray
    stats: IngestStats


def embed_batch(c: Components, planned: Sequence[PlannedDocument]) -> EmbeddedBatch:
    """Embed (cache first) and validate one batch of planned documents; nothing is written to the index."""
    stats = IngestStats()
    chunks = [chunk for p in planned for chunk in p.chunks]
    if not chunks:
        return EmbeddedBatch(list(planned), np.empty((0, c.embedder.dimension), dtype=np.float32), stats)
    before = usage_now(c.embedder, c.store)
    with stats.timed("embed"):
        vectors, computed, cached = embed_with_cache(c.embedder, c.cache, [ch.text for ch in chunks])
    stats.embeddings_computed, stats.embeddings_cached = computed, cached
    with stats.timed("validate"):  # before anything is written
        validate_chunks(chunks, max_tokens=c.chunker.chunk_size)
        validate_embeddings([ch.chunk_id for ch in chunks], vectors, c.embedder.dimension)
    stats.add_usage(c, before)
    return EmbeddedBatch(list(planned), vectors, stats)


def write_batch(
    c: Components, run_id: str, namespace: str, batch: EmbeddedBatch, write: RecordWriter | None = None
) -> IngestStats:
    """Record an embedded batch as pending, then upsert it (or ``write`` it); returns the stats of these two stages."""
    stats = IngestStats()
    chunks = [chunk for p in batch.documents for chunk in p.chunks]
    if not chunks:
        return stats
    before = usage_now(c.embedder, c.store)
    with stats.timed("record"):
        c.records.record_pending(
            run_id,
            namespace,
            [(p.document, p.chunks, c.chunker.config_hash, c.embedder.model_id) for p in batch.documents],
        )
    with stats.timed("upsert"):
        records = [
            VectorRecord(ch.chunk_id, vec, index_metadata(ch.text, ch.metadata))
            for ch, vec in zip(chunks, batch.vectors)
        ]
        stats.chunks_written = write(records) if write else c.store.upsert(records, namespace=namespace)
    stats.add_usage(c, before)
    return stats


def index_batch(
    c: Components, run_id: str, namespace: str, planned: Sequence[PlannedDocument], write: RecordWriter | None = None
) -> IngestStats:
    """Embed (cache first), validate, record as pending, then upsert one batch of planned documents (or ``write`` it)."""
    embedded = embed_batch(c, planned)
    stats = embedded.stats
    stats.add(write_batch(c, run_id, namespace, embedded, write))
    return stats


def prepare_group(c: Components, run_id: str, namespace: str, items: Sequence[SourceItem]) -> EmbeddedBatch:
    """Plan, chunk, embed and validate one group of source items, leaving the index untouched.

    Safe to run in several processes at once (it writes only the record store's bookkeeping, SQLite in WAL
    mode); ``write_batch`` then writes the result from one process.
    """
    plan = plan_documents(c, run_id, namespace, items)
    embedded = embed_batch(c, plan.documents)
    plan.stats.add(embedded.stats)
    return EmbeddedBatch(embedded.documents, embedded.vectors, plan.stats)


def index_group(
    c: Components, run_id: str, namespace: str, items: Sequence[SourceItem], write: RecordWriter | None = None
) -> IngestStats:
    """Plan and index one group of source items (the unit of one flow task)."""
    batch = prepare_group(c, run_id, namespace, items)
    stats = batch.stats
    stats.add(write_batch(c, run_id, namespace, batch, write))
    return stats


def verify_run(c: Components, run_id: str, namespace: str) -> IngestStats:
    """Reconcile index and record store before commit; raise ``ValidationFailed`` on any disagreement.

    Checks: the namespace's vector count equals the record store's distinct ids; sampled chunks of this run (or,
    if it wrote none, live ones) fetch back with equal vector and metadata; a sampled chunk's own vector finds it.
    """
    stats = IngestStats()
    before = usage_now(c.embedder, c.store)
    with stats.timed("verify"):
        failures: list[str] = []
        expected = c.records.expected_index_ids_count(namespace)
        actual = settled_count(c, namespace, expected)
        if expected != actual:
            failures.append(f"namespace {namespace!r} holds {actual} vectors; the record store expects {expected}")
        k = c.config.validation_sample_size
        sample = c.records.sample_chunk_ids(namespace, k, run_id=run_id)
        state = PENDING
        if not sample:
            sample, state = c.records.sample_chunk_ids(namespace, k), LIVE
        failures += _check_fetch_back(c, namespace, c.records.chunk_rows(namespace, sample, state))
        if failures:
            raise ValidationFailed(f"reconciliation of run {run_id} failed", failures)
    stats.add_usage(c, before)
    return stats


def settled_count(c: Components, namespace: str, expected: int) -> int:
    """The namespace's vector count, polled for up to ``config.consistency_wait`` until it equals ``expected``.

    Pinecone's stats are eventually consistent; LanceDB's are exact at once.
    """
    deadline = time.monotonic() + c.config.consistency_wait
    delay = 0.25
    while True:
        count = c.store.describe_namespace(namespace).vector_count
        if count == expected or time.monotonic() >= deadline:
            return count
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def _check_fetch_back(c: Components, namespace: str, rows: dict[str, ChunkRow]) -> list[str]:
    if not rows:
        return []
    problems = fetch_back_problems(c, namespace, list(rows.values()))
    failures = [f"{chunk_id} {problem}" for chunk_id, problem in problems.items()]
    probe = next(iter(rows.values()))
    matches = c.store.query(vectors_for(c, [probe])[0], namespace=namespace, top_k=5)
    top = matches[0].score if matches else None
    found = top is not None and any(m.id == probe.chunk_id and abs(m.score - top) < 1e-5 for m in matches)
    # chunks with the same text share one vector: more than top_k of them tie, and any of them may come first
    tied_duplicate = top is not None and top >= 1 - 1e-5 and probe.chunk_id not in problems
    if not (found or tied_duplicate):
        failures.append(f"{probe.chunk_id}'s own vector does not find it first")
    return failures


def fetch_back_problems(c: Components, namespace: str, rows: Sequence[ChunkRow]) -> dict[str, str]:
    """Recorded chunks whose index copy is missing or differs (vector or metadata), with what is wrong."""
    fetched = c.store.fetch([r.chunk_id for r in rows], namespace=namespace)
    problems: dict[str, str] = {}
    for row, vector in zip(rows, vectors_for(c, rows)):
        got = fetched.get(row.chunk_id)
        if got is None:
            problems[row.chunk_id] = "is missing from the index"
        elif not np.allclose(got.values, vector, atol=1e-5):
            problems[row.chunk_id] = "has a different vector in the index"
        elif got.metadata != index_metadata(row.text, row.metadata):
            problems[row.chunk_id] = "has different metadata in the index"
    return problems


def vectors_for(c: Components, rows: Sequence[ChunkRow]) -> np.ndarray:
    """Vectors of recorded chunks, from the embedding cache (embedding only if the cache lost them)."""
    vectors, _, _ = embed_with_cache(c.embedder, c.cache, [r.text for r in rows])
    return vectors


def upsert_rows(c: Components, namespace: str, rows: Sequence[ChunkRow]) -> None:
    """Write recorded chunks to the index again, in store-sized batches."""
    for part in batched(rows, STORE_BATCH):
        c.store.upsert(
            [VectorRecord(r.chunk_id, v, index_metadata(r.text, r.metadata)) for r, v in zip(part, vectors_for(c, part))],
            namespace=namespace,
        )


def commit_run(c: Components, run_id: str, namespace: str, source_name: str, cleanup: CleanupMode) -> IngestStats:
    """Make the run live, then delete the ids it made stale (changed documents' leftovers, removed documents)."""
    stats = IngestStats()
    with stats.timed("commit"):
        result = c.records.commit_run(run_id, namespace, source_name, delete_unseen=cleanup == "full")
        stats.documents_removed = result.documents_removed
        stats.chunks_deleted = delete_tombstones(c, namespace)
        live = c.records.live_chunk_count(namespace)
        indexed = settled_count(c, namespace, live)
        if live != indexed:
            raise ValidationFailed(
                f"run {run_id} committed but the index drifted",
                [f"namespace {namespace!r} holds {indexed} vectors; the record store has {live} live chunks"],
            )
    return stats


def delete_tombstones(c: Components, namespace: str) -> int:
    """Delete queued stale ids from the index, then forget them; returns how many."""
    ids = c.records.tombstones(namespace)
    for part in batched(ids, STORE_BATCH):
        c.store.delete(namespace=namespace, ids=part)
    c.records.clear_tombstones(namespace, ids)
    return len(ids)


def rollback_run(c: Components, run_id: str, namespace: str) -> None:
    """Undo a run: restore every id it overwrote from its live row, delete every id it created."""
    pending = c.records.pending_chunk_ids(run_id)
    live = c.records.chunk_rows(namespace, pending, LIVE)
    restore = [live[cid] for cid in pending if cid in live]
    upsert_rows(c, namespace, restore)
    for part in batched([cid for cid in pending if cid not in live], STORE_BATCH):
        c.store.delete(namespace=namespace, ids=part)
    c.records.discard_pending(run_id)
    log.info("run %s rolled back: %d ids restored, %d removed", run_id, len(restore), len(pending) - len(restore))


@contextmanager
def rollback_on_failure(c: Components, run_id: str, namespace: str) -> Iterator[None]:
    """Roll the run back if the block raises before the run committed, then re-raise."""
    try:
        yield
    except BaseException:
        if c.records.run_status(run_id) == "running":
            rollback_run(c, run_id, namespace)
        raise


# --- the direct driver (CLI, benchmarks, tests) ----------------------------------------------------------------


def ingest(
    c: Components,
    source: Source,
    *,
    namespace: str | None = None,
    cleanup: CleanupMode | None = None,
    on_progress: Callable[[IngestStats], None] | None = None,
    refresh_keyword_index: bool = True,
) -> IngestResult:
    """Run every stage over ``source`` in this process; embedding of one batch overlaps planning of the next.

    Any failure rolls the run back and re-raises, leaving the previous index intact. ``refresh_keyword_index=False``
    leaves the BM25 rebuild to the caller (a backfill rebuilds it once, not after every partition).
    """
    namespace = namespace or write_namespace(c.records, c.config)
    cleanup = cleanup or c.config.cleanup
    with namespace_lock(c.config.home, namespace):
        run_id = begin_run(c, namespace, source.name)
        stats = IngestStats()
        with rollback_on_failure(c, run_id, namespace):
            threading.Thread(target=warm_up, name="ragline-gx-warm-up", daemon=True).start()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragline-index") as pool:
                in_flight: Future[IngestStats] | None = None
                for batch in _planned_batches(c, run_id, namespace, source, stats, on_progress):
                    if in_flight is not None:
                        stats.add(in_flight.result())
                    in_flight = pool.submit(index_batch, c, run_id, namespace, batch)
                    if on_progress:
                        on_progress(stats)
                if in_flight is not None:
                    stats.add(in_flight.result())
            stats.add(verify_run(c, run_id, namespace))
            stats.add(commit_run(c, run_id, namespace, source.name, cleanup))
        if refresh_keyword_index and (stats.chunks_written or stats.chunks_deleted):
            with stats.timed("bm25"):
                refresh_bm25(c, namespace)
        c.records.save_run_stats(run_id, stats.as_dict())
        if on_progress:
            on_progress(stats)
        return IngestResult(
            run_id, namespace, source.name, stats, c.records.quarantined(run_id), c.records.near_duplicates(run_id)
        )


def _planned_batches(
    c: Components,
    run_id: str,
    namespace: str,
    source: Source,
    stats: IngestStats,
    on_progress: Callable[[IngestStats], None] | None,
) -> Iterator[list[PlannedDocument]]:
    """Plan the source group by group, yielding batches of about ``config.batch_size`` chunks."""
    batch: list[PlannedDocument] = []
    size = 0
    items = iter(source.items())
    while True:
        with stats.timed("load"):
            group = [item for _, item in zip(range(DOCUMENT_GROUP), items)]
        if not group:
            break
        plan = plan_documents(c, run_id, namespace, group)
        stats.add(plan.stats)
        for planned in plan.documents:
            batch.append(planned)
            size += len(planned.chunks)
            if size >= c.config.batch_size:
                yield batch
                batch, size = [], 0
        if on_progress:
            on_progress(stats)
    if batch:
        yield batch

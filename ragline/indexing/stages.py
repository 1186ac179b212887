"""The ingest stages, each a plain function over one batch: what a Prefect task wraps, and what the driver calls.

Per batch: ``load`` (read the next documents and skip the unchanged ones) → ``chunk`` → ``dedupe`` (near-duplicate
documents, exact duplicate texts, embedding-cache lookup) → ``embed`` → ``validate`` → ``upsert`` (recorded as
pending first). Per run: ``open_run``, then ``verify`` and ``commit``; a refresh adds ``reverify`` per batch.
Every stage takes the components first and the open run second, and returns what the next one needs with its
counts, so the driver (``ragline.indexing.pipeline``) only adds them up.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice

import numpy as np

from ragline.batching import batched
from ragline.components import Components
from ragline.config import CleanupMode
from ragline.costs import usage_now
from ragline.embedders.base import DEFAULT_TEXTS_PER_CALL
from ragline.embedders.cache import CacheLookup, complete, embed_with_cache, look_up
from ragline.errors import SourceError, ValidationFailed
from ragline.indexing.chunking import chunks_or_reasons, oversized
from ragline.indexing.consistency import within_window
from ragline.indexing.journal import (
    STORE_BATCH,
    RunRef,
    delete_tombstones,
    fetch_back_problems,
    open_run,
    recorded_records,
    settled_count,
    upsert_rows,
    vectors_for,
)
from ragline.indexing.keywords import pending_records
from ragline.indexing.near_duplicates import TAG_KEY
from ragline.indexing.seal import still_sealed, write_seal
from ragline.indexing.stats import FreshnessCounts, IngestStats
from ragline.indexing.validation import validate_chunks, validate_embeddings
from ragline.records import Chunk, Document, QuarantineRecord, index_metadata
from ragline.recordstore import LIVE, PENDING, ChunkRow, DocumentRow
from ragline.sources.base import SourceItem
from ragline.sources.datasets import REASON_DUPLICATE_ID
from ragline.stores.base import AppendingStore, MaintainedStore, VectorRecord
from ragline.workers import WorkerPool

__all__ = [
    "Chunked",
    "Deduped",
    "EmbeddedBatch",
    "Freshness",
    "Plan",
    "PlannedDocument",
    "RecordWriter",
    "chunk",
    "commit",
    "dedupe",
    "embed",
    "export_unchanged",
    "guard_deletions",
    "load",
    "open_run",
    "reverify",
    "upsert",
    "validate",
    "verify",
]

log = logging.getLogger(__name__)

RecordWriter = Callable[[Sequence[VectorRecord]], int]
"""Where a batch's records go instead of the namespace's index (a bulk-import export); returns how many it wrote."""


@dataclass(frozen=True)
class PlannedDocument:
    """A new or changed document, with its chunks once chunked."""

    document: Document
    is_new: bool
    chunks: tuple[Chunk, ...] = ()


@dataclass(frozen=True)
class Plan:
    """One batch of source items, planned: what to (re)index, what is unchanged, whether the source ended."""

    documents: list[PlannedDocument]
    unchanged: list[tuple[Document, DocumentRow]]
    exhausted: bool
    stats: IngestStats
    started_ahead: bool = False
    """Its documents' chunking and signing started in the worker processes (``ragline.indexing.ahead``)."""


@dataclass(frozen=True)
class Chunked:
    """The batch's new and changed documents with their chunks (documents that cannot be chunked are quarantined)."""

    documents: list[PlannedDocument]
    stats: IngestStats


@dataclass(frozen=True)
class Deduped:
    """The documents to index (near-duplicates tagged or left out) and what the embedding cache has for them."""

    documents: list[PlannedDocument]
    lookup: CacheLookup
    stats: IngestStats

    @property
    def chunks(self) -> list[Chunk]:
        return [c for p in self.documents for c in p.chunks]


@dataclass(frozen=True)
class EmbeddedBatch:
    """Documents with their chunks' vectors, in chunk order."""

    documents: list[PlannedDocument]
    vectors: np.ndarray
    stats: IngestStats

    @property
    def chunks(self) -> list[Chunk]:
        return [c for p in self.documents for c in p.chunks]


@dataclass(frozen=True)
class Freshness:
    """A refresh's rule for unchanged documents: re-verify those older than ``ttl_s`` at ``now`` (or touched)."""

    ttl_s: float
    now: float


@dataclass(frozen=True)
class Reverified:
    """What re-verifying a batch's due documents found."""

    counts: FreshnessCounts
    stats: IngestStats = field(default_factory=IngestStats)


# --- per batch ---------------------------------------------------------------------------------------------------


def load(c: Components, run: RunRef, items: Iterator[SourceItem], size: int) -> Plan:
    """Read up to ``size`` items from the source and plan them: unchanged documents (same content, chunker and
    model) are skipped before anything is chunked; inputs the source could not read are quarantined, and so is a
    document id the source yields again in this run (``REASON_DUPLICATE_ID``, as the dataset sources do: its first
    version is the one indexed). The workers start chunking and signing a large batch's documents now
    (``ragline.indexing.ahead``).

    Every document id read is recorded with the run (``RunJournal.mark_seen``): in the record store, so a batch
    loaded on another host knows it too, and a full cleanup's commit deletes the documents neither read nor named by
    a quarantined input."""
    stats = IngestStats()
    with stats.timed("load"):
        batch = list(islice(items, size))
    with stats.timed("record"):
        before = c.records.journal.mark_seen(run.run_id, [i.doc_id for i in batch if isinstance(i, Document)])
    documents, repeated = _first_reads(batch, before)
    quarantined = [i for i in batch if isinstance(i, QuarantineRecord)] + repeated
    planned: list[PlannedDocument] = []
    unchanged: list[tuple[Document, DocumentRow]] = []
    with stats.timed("plan"):
        live = c.records.journal.live_documents(run.namespace, [d.doc_id for d in documents])
        near = c.near_duplicates
        replan = near.unchanged_to_replan(c.records, run.run_id, run.namespace, documents, live) if near else set()
        wanted = (c.chunker.config_hash, c.embedder.model_id)
        for doc in documents:
            row = live.get(doc.doc_id)
            same = row is not None and (row.content_hash, row.config_hash, row.model_id) == (doc.content_hash, *wanted)
            if row is not None and same and doc.doc_id not in replan:
                unchanged.append((doc, row))
            else:
                planned.append(PlannedDocument(doc, is_new=row is None))
    near_params = (near.num_perm, near.shingle_words) if near else None
    ahead = c.ahead.start(c.workers, run.run_id, [p.document for p in planned], c.chunker, near_params)
    stats.documents_seen = len(batch)
    stats.documents_unchanged = len(unchanged)
    stats.documents_quarantined = len(quarantined)
    if quarantined:
        with stats.timed("record"):
            c.records.quarantine.add(run.run_id, run.namespace, quarantined)
    return Plan(planned, unchanged, exhausted=len(batch) < size, stats=stats, started_ahead=ahead)


def _first_reads(batch: Sequence[SourceItem], before: set[str]) -> tuple[list[Document], list[QuarantineRecord]]:
    """The batch's documents whose id the run reads as a document for the first time (``before``: the ids it read
    in earlier batches), and a quarantine record for each other one. An input the source quarantined does not count:
    as in the dataset sources, a valid record after a rejected one with its id is indexed."""
    met = set(before)
    documents: list[Document] = []
    repeated: list[QuarantineRecord] = []
    for item in batch:
        if not isinstance(item, Document):
            continue
        if item.doc_id in met:
            detail = f"{item.doc_id!r} was yielded before in this run; the first version is the one indexed"
            repeated.append(
                QuarantineRecord(item.source, item.uri, REASON_DUPLICATE_ID, doc_id=item.doc_id, detail=detail)
            )
        else:
            documents.append(item)
            met.add(item.doc_id)
    return documents, repeated


def chunk(c: Components, run: RunRef, plan: Plan) -> Chunked:
    """Split the plan's documents into chunks (a large batch in the worker processes); a document that cannot be
    chunked or indexed is quarantined."""
    stats = IngestStats()
    chunked: list[PlannedDocument] = []
    problems: list[QuarantineRecord] = []
    with stats.timed("chunk"):
        documents = [planned.document for planned in plan.documents]
        outcomes = c.ahead.chunks(run.run_id, documents)
        if outcomes is None:  # not started ahead: a small batch, a chunker that stays here, or a task on another host
            outcomes = chunks_or_reasons(c.chunker, documents)
        for planned, (chunks, problem) in zip(plan.documents, outcomes):
            if problem is None:
                chunked.append(replace(planned, chunks=tuple(chunks)))
            else:
                doc = planned.document
                problems.append(QuarantineRecord(doc.source, doc.uri, problem, doc_id=doc.doc_id))
    if problems:
        stats.documents_quarantined = len(problems)
        with stats.timed("record"):
            c.records.quarantine.add(run.run_id, run.namespace, problems)
    return Chunked(chunked, stats)


def dedupe(c: Components, run: RunRef, chunked: Chunked) -> Deduped:
    """Flag near-duplicate documents (tagged, or left out under ``skip``), then look every chunk text up in the
    embedding cache: exact duplicates and cached texts are not embedded again."""
    stats = IngestStats()
    near = c.near_duplicates
    documents: list[PlannedDocument] = []
    problems: list[QuarantineRecord] = []
    with stats.timed("dedupe"):
        if near is not None:
            near.use_signatures(c.ahead.signatures(run.run_id, [p.document for p in chunked.documents]))
        for planned in chunked.documents:
            if near is None:
                documents.append(planned)
                continue
            verdict = near.check(c.records, run.run_id, run.namespace, planned.document, indexed=not planned.is_new)
            if verdict.skipped:
                near.accept(run.run_id, run.namespace, verdict)
                continue
            if verdict.flag is not None:
                tag = {TAG_KEY: verdict.flag.duplicate_of}
                planned = replace(
                    planned, chunks=tuple(replace(ch, metadata={**ch.metadata, **tag}) for ch in planned.chunks)
                )
                if problem := oversized(planned.chunks):
                    doc = planned.document
                    problems.append(QuarantineRecord(doc.source, doc.uri, problem, doc_id=doc.doc_id))
                    continue
            near.accept(run.run_id, run.namespace, verdict)
            documents.append(planned)
    with stats.timed("record"):
        if problems:
            c.records.quarantine.add(run.run_id, run.namespace, problems)
        if near is not None:
            stats.documents_near_duplicate = near.flush(c.records, run.run_id, run.namespace)
    stats.documents_quarantined = len(problems)
    stats.documents_new = sum(p.is_new for p in documents)
    stats.documents_changed = len(documents) - stats.documents_new
    with stats.timed("cache"):
        lookup = look_up(c.embedder.model_id, c.cache, [ch.text for p in documents for ch in p.chunks])
    stats.embeddings_computed = len(lookup.missing)
    stats.embeddings_cached = len(lookup.hashes) - len(lookup.missing)
    return Deduped(documents, lookup, stats)


def embed(c: Components, run: RunRef, deduped: Deduped) -> EmbeddedBatch:
    """Embed the texts the cache lacks (each distinct text once) and store them in the cache."""
    stats = IngestStats()
    before = usage_now(c.embedder, c.store, c.sparse)
    with stats.timed("embed"):
        if _embeds_in_workers(c, deduped):
            in_workers = functools.partial(_embed_in_workers, c.workers, c.embedder.embed)
            vectors = complete(c.embedder, c.cache, deduped.lookup, in_workers)
        else:
            per_call = getattr(c.embedder, "texts_per_call", DEFAULT_TEXTS_PER_CALL)
            vectors = complete(c.embedder, c.cache, deduped.lookup, per_call=per_call, stopping=c.stopping)
    stats.add_usage(c, before)
    return EmbeddedBatch(deduped.documents, vectors, stats)


def _embeds_in_workers(c: Components, deduped: Deduped) -> bool:
    """Whether the batch embeds in the worker processes: its embedder holds the interpreter lock and pickles, and
    the batch is large, in documents and in texts the cache lacks."""
    workers = c.workers
    if not getattr(c.embedder, "holds_the_interpreter", False):
        return False
    if not (workers.takes(len(deduped.documents)) and workers.takes(len(deduped.lookup.missing))):
        return False
    try:
        pickle.dumps(c.embedder.embed)
    except (pickle.PicklingError, TypeError, AttributeError):  # it holds a lock, a connection...: it embeds here
        return False
    return True


def _embed_in_workers(workers: WorkerPool, embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
    """``embed(texts)`` in the worker processes, a contiguous slice each (the run's process free meanwhile for the
    stages beside it)."""
    return np.vstack([part() for part in workers.start_each_slice(embed, texts)])


def validate(c: Components, run: RunRef, batch: EmbeddedBatch) -> IngestStats:
    """Check the batch's chunks and vectors (Great Expectations) before anything is written."""
    stats = IngestStats()
    with stats.timed("validate"):
        chunks = batch.chunks
        validate_chunks(chunks, max_tokens=c.chunker.chunk_size)
        validate_embeddings([ch.chunk_id for ch in chunks], batch.vectors, c.embedder.dimension)
    return stats


def upsert(c: Components, run: RunRef, batch: EmbeddedBatch, write: RecordWriter | None = None) -> IngestStats:
    """Record the batch as pending, then upsert it, with its sparse keyword vectors on Pinecone (or hand it to
    ``write``, a bulk-import export: ``ragline reconcile`` fills the sparse index after the import)."""
    stats = IngestStats()
    chunks = batch.chunks
    if not chunks:
        return stats
    before = usage_now(c.embedder, c.store, c.sparse)
    metadata = [index_metadata(ch.text, ch.metadata) for ch in chunks]
    with stats.timed("record"):
        appended = _appendable(run, batch) if write is None else set()
        if appended and c.records.journal.chunk_rows(run.namespace, [chunks[0].chunk_id], PENDING):
            appended = set()  # recorded by an earlier try of this stage (a task retried): its append may have landed
        pending = [(p.document, p.chunks, c.chunker.config_hash, c.embedder.model_id) for p in batch.documents]
        c.records.journal.record_pending(run.run_id, run.namespace, pending)
        sparse = pending_records(c, run.namespace, chunks, metadata) if c.sparse is not None else []
    with stats.timed("upsert"):
        records = [VectorRecord(ch.chunk_id, v, m) for ch, v, m in zip(chunks, batch.vectors, metadata)]
        if write is not None:
            stats.chunks_written = write(records)
        else:
            stats.chunks_written = _write(c, run.namespace, records, appended)
        if c.sparse is not None and write is None:
            c.sparse.upsert(sparse, namespace=run.namespace)
    stats.add_usage(c, before)
    return stats


def export_unchanged(c: Components, run: RunRef, plan: Plan, write: RecordWriter) -> IngestStats:
    """Hand ``write`` (a bulk-import part) the recorded chunks of the plan's unchanged documents too, vectors from
    the embedding cache: a part written again after its partition changed holds every document of the partition,
    not only what changed since it was first written (the import replaces nothing else)."""
    stats = IngestStats()
    if not plan.unchanged:
        return stats
    before = usage_now(c.embedder, c.store, c.sparse)
    with stats.timed("upsert"):
        rows = c.records.journal.live_chunks_of_documents(run.namespace, [doc.doc_id for doc, _ in plan.unchanged])
        for part in batched(rows, STORE_BATCH):
            records, computed = recorded_records(c, part)
            stats.embeddings_computed += computed
            stats.chunks_written += write(records)
    stats.add_usage(c, before)
    return stats


def reverify(c: Components, run: RunRef, plan: Plan, freshness: Freshness) -> Reverified:
    """Re-verify the plan's unchanged documents that are due (older than the TTL, or their file was touched):
    fetch their chunks back, re-upsert the missing or differing ones from the cache, mark them verified."""
    counts, stats = FreshnessCounts(), IngestStats()
    due: list[Document] = []
    for doc, row in plan.unchanged:
        if freshness.now - row.indexed_at >= freshness.ttl_s:
            counts.documents_expired += 1
            due.append(doc)
        elif doc.modified_at is not None and doc.modified_at != row.modified_at:
            counts.documents_touched += 1
            due.append(doc)
        else:
            counts.documents_fresh += 1
    if not due:
        return Reverified(counts, stats)
    before = usage_now(c.embedder, c.store, c.sparse)
    with stats.timed("reverify"):
        rows = c.records.journal.live_chunks_of_documents(run.namespace, [d.doc_id for d in due])
        vectors, stats.embeddings_computed, _ = embed_with_cache(c.embedder, c.cache, [r.text for r in rows])
        problems = fetch_back_problems(c, run.namespace, rows, vectors=vectors)
        if problems:
            log.warning(
                "re-verify in %s: %d of %d chunks missing or different; restoring them",
                run.namespace,
                len(problems),
                len(rows),
            )
            upsert_rows(c, run.namespace, [r for r in rows if r.chunk_id in problems])
        c.records.journal.mark_verified(run.namespace, [(d.doc_id, d.modified_at) for d in due], freshness.now)
    counts.chunks_reverified, counts.chunks_restored = len(rows), len(problems)
    stats.add_usage(c, before)
    return Reverified(counts, stats)


# --- per run -----------------------------------------------------------------------------------------------------


def verify(c: Components, run: RunRef) -> IngestStats:
    """Reconcile index and record store before commit; raise ``ValidationFailed`` on any disagreement.

    Checks: the namespace's vector count equals the record store's distinct ids; sampled chunks of this run (or,
    if it wrote none, live ones) fetch back with equal vector and metadata (counts cannot see an overwrite); a
    sampled chunk's own vector finds it. Each check first waits until reads reflect the run's writes, and fails only
    on a difference that outlasts ``consistency_wait`` (``ragline.indexing.consistency``). On an index still sealed
    by the last run (``ragline.indexing.seal``) the count is the seal's and nothing is fetched back: those files
    passed these checks.
    """
    stats = IngestStats()
    before = usage_now(c.embedder, c.store, c.sparse)
    with stats.timed("verify"):
        failures: list[str] = []
        expected = c.records.journal.expected_index_ids_count(run.namespace)
        seal = still_sealed(c, run.namespace, run.seal)  # the files the last run checked, and this run wrote none
        actual = seal.vectors if seal else settled_count(c, run.namespace, expected)
        if expected != actual:
            failures.append(f"namespace {run.namespace!r} holds {actual} vectors; the record store expects {expected}")
        if seal is None:
            failures += _index_problems(c, run, expected)
        if failures:
            raise ValidationFailed(f"reconciliation of run {run.run_id} failed", failures)
    stats.add_usage(c, before)
    return stats


def commit(c: Components, run: RunRef, cleanup: CleanupMode, exported: bool = False) -> IngestStats:
    """Make the run live, delete the ids it made stale (changed documents' leftovers, removed documents), check the
    count once the deletes are visible, let the store tidy a namespace the run changed (``MaintainedStore``: LanceDB
    compacts and drops old versions) and seal the index for the next run.

    ``exported``: the run's records went to a bulk-import file, not the index: only the record store commits.
    """
    stats = IngestStats()
    before = usage_now(c.embedder, c.store, c.sparse)
    if c.near_duplicates is not None:
        c.near_duplicates.end_run(c.records)  # every batch is written: its memory goes back before housekeeping
    c.ahead.forget(run.run_id)
    c.workers.close()  # idle until the next large batch or BM25 rebuild: their memory too
    with stats.timed("commit"):
        result = c.records.journal.commit_run(run.run_id, run.namespace, run.source, delete_unseen=cleanup == "full")
        stats.documents_removed = result.documents_removed
        if cleanup == "full" and any(q.doc_id is None for q in c.records.quarantine.for_run(run.run_id)):
            log.warning(
                "run %s quarantined inputs it could not tie to a document id: no unseen document was removed "
                "(fix those inputs and run again to remove them)",
                run.run_id,
            )
        if exported:
            return stats
        stats.chunks_deleted = delete_tombstones(c, run.namespace)
        live = c.records.journal.live_chunk_count(run.namespace)
        seal = still_sealed(c, run.namespace, run.seal)
        counts = {"vectors": seal.vectors if seal else settled_count(c, run.namespace, live)}
        if c.sparse is not None:
            counts["sparse vectors"] = settled_count(c, run.namespace, live, c.sparse)
        drifted = [
            f"namespace {run.namespace!r} holds {n} {kind}; the record store has {live} live chunks"
            for kind, n in counts.items()
            if n != live
        ]
        if drifted:
            raise ValidationFailed(f"run {run.run_id} committed but the index drifted", drifted)
        if seal is None and isinstance(c.store, MaintainedStore):
            c.store.maintain(run.namespace)
        write_seal(c, run.namespace, live)
    stats.add_usage(c, before)
    return stats


# --- helpers -----------------------------------------------------------------------------------------------------


def _appendable(run: RunRef, batch: EmbeddedBatch) -> set[str]:
    """Chunk ids of the batch the index cannot hold (``RunRef.appends``): of new documents, which the run meets
    once (``load`` quarantines a repeated id)."""
    if not run.appends:
        return set()
    return {chunk.chunk_id for planned in batch.documents if planned.is_new for chunk in planned.chunks}


def _write(c: Components, namespace: str, records: list[VectorRecord], appended: set[str]) -> int:
    """Append the records whose ids are in ``appended`` (``AppendingStore``), upsert the others."""
    store = c.store
    if not appended or not isinstance(store, AppendingStore):
        return store.upsert(records, namespace=namespace)
    new = [record for record in records if record.id in appended]
    rest = [record for record in records if record.id not in appended]
    return store.insert(new, namespace=namespace) + (store.upsert(rest, namespace=namespace) if rest else 0)


def _index_problems(c: Components, run: RunRef, expected: int) -> list[str]:
    """What the index disagrees on: its sparse count, sampled chunks fetched back, a sampled chunk's own query."""
    failures = []
    if c.sparse is not None and expected != (sparse := settled_count(c, run.namespace, expected, c.sparse)):
        failures.append(
            f"namespace {run.namespace!r} holds {sparse} sparse vectors; the record store expects {expected} "
            "(a namespace indexed before it had a sparse index: run `ragline reconcile` to fill it)"
        )
    k = c.config.validation_sample_size
    sample = c.records.journal.sample_chunk_ids(run.namespace, k, run_id=run.run_id)
    state = PENDING
    if not sample:
        sample, state = c.records.journal.sample_chunk_ids(run.namespace, k), LIVE
    return failures + _check_fetch_back(c, run.namespace, c.records.journal.chunk_rows(run.namespace, sample, state))


def _check_fetch_back(c: Components, namespace: str, rows: dict[str, ChunkRow]) -> list[str]:
    if not rows:
        return []
    problems = fetch_back_problems(c, namespace, list(rows.values()), patient=True)
    failures = [f"{chunk_id} {problem}" for chunk_id, problem in problems.items()]
    probe = next(iter(rows.values()))
    vector = vectors_for(c, [probe])[0]

    def finds_itself() -> bool:
        matches = c.store.query(vector, namespace=namespace, top_k=5)
        top = matches[0].score if matches else None
        found = top is not None and any(m.id == probe.chunk_id and abs(m.score - top) < 1e-5 for m in matches)
        # chunks with the same text share one vector: more than top_k of them tie, and any of them may come first
        tied_duplicate = top is not None and top >= 1 - 1e-5 and probe.chunk_id not in problems
        return found or tied_duplicate

    if not within_window(c, finds_itself, bool):
        failures.append(f"{probe.chunk_id}'s own vector does not find it first")
    return failures


def guard_deletions(c: Components, run: RunRef, max_fraction: float, documents_seen: int) -> None:
    """Raise before commit when a full cleanup would delete more than ``max_fraction`` of the documents indexed
    from the source while the source shrank (it yielded fewer than ``1 - max_fraction`` of them): an unmounted,
    emptied or half-copied folder, or another folder of the same name, must not wipe a source, while a folder
    renamed inside it (its documents gone under old ids, back under new ones) may. The run then rolls back and
    nothing changes; ``--force-delete`` (``max_fraction`` 1) is for when the deletions are meant."""
    unseen = c.records.journal.unseen_document_count(run.run_id, run.namespace, run.source)
    indexed = c.records.journal.live_document_count(run.namespace, run.source) if unseen else 0
    if unseen > max_fraction * indexed and documents_seen < (1 - max_fraction) * indexed:
        raise SourceError(
            f"source {run.source!r} no longer holds {unseen} of the {indexed} documents indexed from it in namespace "
            f"{run.namespace!r} (it yielded {documents_seen}), more than cleanup_max_delete_fraction "
            f"({max_fraction:g}): refusing to delete them (an unmounted or half-copied folder, or another folder named "
            f"{run.source!r}?), nothing was changed; if the deletions are meant, run again with --force-delete"
        )

"""Rebuild one side of a namespace from the other, when it was lost or damaged.

- ``rebuild_index`` (``ragline reconcile --rebuild``): the vector index from the record store's live chunks, with
  their vectors from the embedding cache (only what the cache lacks is embedded again).
- ``rebuild_records`` (``ragline records rebuild``): the record store's committed documents and chunks, the
  namespace's model binding and the embedding cache, from the index, which holds every chunk's id, text, metadata
  (with its document's content and chunker hashes) and vector.

Both expect the caller to hold the namespace lock, and both can simply be run again when they are interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ragline import progress
from ragline.batching import batched
from ragline.components import Components
from ragline.errors import ConfigError, IndexDamaged, StoreError, ValidationFailed
from ragline.indexing.journal import STORE_BATCH, new_run_id, record_repair, settled_count, upsert_rows
from ragline.indexing.keywords import reencode_all
from ragline.records import Chunk, Document, sha256_hex
from ragline.recordstore.protocol import PendingDocument
from ragline.stores.base import VectorRecord

log = logging.getLogger(__name__)

REBUILD_SOURCE = "recordstore-rebuild"
"""The source name of the run ``rebuild_records`` commits its rows with."""

INDEX_REBUILD_SOURCE = "index-rebuild"
"""The source name of the empty run ``rebuild_index`` commits (``journal.record_repair``)."""

PROBE_SIZE = 8
"""Chunks ``rebuild_records`` embeds again to check that the configured model made the index's vectors."""

_CHUNK_KEYS: dict[str, type | tuple[type, ...]] = {
    "text": str,
    "doc_id": str,
    "position": (int, float),
    "source": str,
    "uri": str,
    "title": str,
}
"""Metadata every chunk ragline wrote carries (``Chunker`` and ``journal.index_metadata``)."""


@dataclass(frozen=True)
class IndexRebuild:
    """What ``rebuild_index`` did."""

    namespace: str
    chunks_written: int
    embeddings_computed: int
    """Texts the embedding cache lacked, embedded again."""
    orphans_deleted: int
    dropped: bool
    """The index could not be read, so it was dropped and written anew."""
    runs_rolled_back: list[str] = field(default_factory=list)


def rebuild_index(c: Components, namespace: str) -> IndexRebuild:
    """Write every live chunk of ``namespace`` into its index again and delete every other id.

    Unfinished runs are rolled back in the record store only: their writes are overwritten or deleted with the
    rest. An index that cannot be read is dropped first. Raises ``ValidationFailed`` unless the index ends up
    holding exactly the live chunks.
    """
    journal = c.records.journal
    journal.bind_namespace_model(namespace, c.embedder.model_id, c.embedder.dimension)  # refuses another model
    rolled_back = journal.unfinished_runs(namespace)
    for run_id in rolled_back:
        journal.discard_pending(run_id)
    try:
        indexed = set(c.store.list_ids(namespace=namespace))
        dropped = False
    except IndexDamaged as exc:
        log.warning("dropping the unreadable index of %s: %s", namespace, exc.problem)
        c.store.delete(namespace=namespace, delete_all=True)
        indexed, dropped = set(), True
    live = journal.live_chunk_ids(namespace)
    embedded = 0
    progress.phase(f"rebuild {namespace}", "chunks", len(live))
    for part in batched(live, STORE_BATCH):
        rows = journal.chunk_rows(namespace, part)
        embedded += upsert_rows(c, namespace, [rows[chunk_id] for chunk_id in part])
        progress.advance(len(part))
    orphans = sorted(indexed.difference(live))
    for part in batched(orphans, STORE_BATCH):
        c.store.delete(namespace=namespace, ids=part)
    journal.clear_tombstones(namespace, journal.tombstones(namespace))
    count = settled_count(c, namespace, len(live))
    if count != len(live):
        raise ValidationFailed(
            f"the rebuilt index of namespace {namespace!r} does not match the record store",
            [f"it holds {count} vectors; the record store has {len(live)} live chunks"],
        )
    record_repair(c, namespace, INDEX_REBUILD_SOURCE)
    return IndexRebuild(namespace, len(live), embedded, len(orphans), dropped, rolled_back)


@dataclass(frozen=True)
class RecordsRebuild:
    """What ``rebuild_records`` did."""

    namespace: str
    run_id: str | None
    """The committed run that holds the rebuilt rows; None when the record store had the namespace already and
    only the embedding cache was refilled."""
    documents: int
    chunks: int
    vectors_cached: int
    without_hashes: int
    """Documents whose chunks carry no content or chunker hash (indexed by an older ragline): the next run
    chunks them again, and embeds nothing."""
    foreign: int
    """Index records that are not ragline chunks (no text, doc_id, position, source, uri or title): left out."""


def rebuild_records(c: Components, namespace: str) -> RecordsRebuild:
    """Record ``namespace`` from its index: its documents and chunks as one committed run, its model binding, and
    every vector in the embedding cache. A namespace whose chunks the record store has gets only its cache refilled.

    A sample of chunks is embedded again first: the index's vectors must be the configured model's (``ConfigError``
    otherwise). Reads the index in store-sized batches; a document's chunks are held until its id range ends.
    """
    journal = c.records.journal
    model_id, dimension = c.embedder.model_id, c.embedder.dimension
    stored = c.store.describe_namespace(namespace)
    if stored.vector_count == 0:
        raise ConfigError(f"namespace {namespace!r} holds no vectors in the index; nothing to rebuild from")
    if stored.dimension != dimension:
        raise ConfigError(
            f"namespace {namespace!r} holds {stored.dimension}-d vectors; the configured model {model_id} makes "
            f"{dimension}-d ones: configure the model the index was built with"
        )
    full = journal.live_chunk_count(namespace) == 0
    run_id = None
    if full:
        for unfinished in journal.unfinished_runs(namespace):  # an interrupted rebuild, or a first run that crashed
            journal.discard_pending(unfinished)
        journal.bind_namespace_model(namespace, model_id, dimension)
        run_id = new_run_id()
        journal.begin_run(run_id, namespace, REBUILD_SOURCE)
    else:
        journal.bind_namespace_model(namespace, model_id, dimension)  # refuses another model
    grouping = _DocumentGrouping()
    recorded = [0, 0, 0]  # documents, chunks, documents without hashes
    cached = foreign = 0
    checked = False
    for part in batched(c.store.list_ids(namespace=namespace), STORE_BATCH):
        fetched = c.store.fetch(part, namespace=namespace)
        records = [fetched[i] for i in part if i in fetched]
        ours = [r for r in records if _is_chunk(r)]
        foreign += len(records) - len(ours)
        if ours and not checked:
            _check_model(c, namespace, ours[:PROBE_SIZE])
            checked = True
        vectors = {sha256_hex(str(r.metadata["text"])): np.asarray(r.values, np.float32) for r in ours}
        c.cache.put_many(model_id, vectors)
        cached += len(vectors)
        if run_id is not None:
            complete = [done for r in ours for done in grouping.add(r)]
            recorded = [a + b for a, b in zip(recorded, _record(c, run_id, namespace, complete))]
    if run_id is not None:
        recorded = [a + b for a, b in zip(recorded, _record(c, run_id, namespace, grouping.rest()))]
        journal.commit_run(run_id, namespace, REBUILD_SOURCE, delete_unseen=False)
        journal.save_run_stats(run_id, {"documents_rebuilt": recorded[0], "chunks_rebuilt": recorded[1]})
        if c.sparse is not None:
            reencode_all(c, namespace)
    documents, chunks, without_hashes = recorded
    return RecordsRebuild(namespace, run_id, documents, chunks, cached, without_hashes, foreign)


class _DocumentGrouping:
    """Chunk records grouped by document from an id-sorted stream.

    Every chunk id of document ``d`` starts with ``d#``, and ids starting with one prefix are contiguous in sorted
    order: a document is complete at the first id outside its prefix.
    """

    def __init__(self) -> None:
        self._open: dict[str, list[VectorRecord]] = {}
        self._closed: set[str] = set()

    def add(self, record: VectorRecord) -> list[tuple[str, list[VectorRecord]]]:
        """Take one record; return the documents it shows complete."""
        done = [doc_id for doc_id in self._open if not record.id.startswith(f"{doc_id}#")]
        complete = [(doc_id, self._open.pop(doc_id)) for doc_id in done]
        self._closed.update(done)
        doc_id = str(record.metadata["doc_id"])
        if doc_id in self._closed:
            raise StoreError(f"the index listed ids out of order: {record.id!r} after its document was complete")
        self._open.setdefault(doc_id, []).append(record)
        return complete

    def rest(self) -> list[tuple[str, list[VectorRecord]]]:
        """The documents still open at the end of the stream."""
        rest, self._open = list(self._open.items()), {}
        return rest


def _is_chunk(record: VectorRecord) -> bool:
    """Whether ``record`` carries the metadata of a chunk ragline wrote."""
    return all(isinstance(record.metadata.get(key), kind) for key, kind in _CHUNK_KEYS.items())


def _check_model(c: Components, namespace: str, records: Sequence[VectorRecord]) -> None:
    """Embed a few chunks again: their vectors must match the index's, or the index was built with another model."""
    fresh = c.embedder.embed([str(r.metadata["text"]) for r in records])
    stored = np.stack([np.asarray(r.values, np.float32) for r in records])
    cosines = np.sum(fresh * stored, axis=1) / (np.linalg.norm(fresh, axis=1) * np.linalg.norm(stored, axis=1))
    if float(cosines.min()) < 0.999:
        raise ConfigError(
            f"the vectors of namespace {namespace!r} were not made by {c.embedder.model_id} (cosine "
            f"{float(cosines.min()):.3f} on a re-embedded chunk): configure the model the index was built with"
        )


def _record(
    c: Components, run_id: str, namespace: str, groups: Sequence[tuple[str, list[VectorRecord]]]
) -> tuple[int, int, int]:
    """Record complete documents as the run's pending rows; (documents, chunks, documents without hashes)."""
    pending = [_pending_document(c, doc_id, records) for doc_id, records in groups]
    if pending:
        c.records.journal.record_pending(run_id, namespace, pending)
    return len(pending), sum(len(p[1]) for p in pending), sum(not (p[0].content_hash and p[2]) for p in pending)


def _pending_document(c: Components, doc_id: str, records: Iterable[VectorRecord]) -> PendingDocument:
    """A document and its chunks as the record store records them, from its chunks' index records."""
    chunks = []
    for record in records:
        metadata = dict(record.metadata)
        text = str(metadata.pop("text"))
        chunks.append(
            Chunk(
                chunk_id=record.id,
                doc_id=doc_id,
                position=int(metadata["position"]),  # type: ignore[arg-type]  # checked by _is_chunk
                text=text,
                text_hash=sha256_hex(text),
                token_count=c.embedder.count_tokens(text),
                metadata=metadata,
            )
        )
    first = chunks[0].metadata
    document = Document(
        doc_id=doc_id,
        source=str(first["source"]),
        uri=str(first["uri"]),
        title=str(first["title"]),
        text="",
        content_hash=str(first.get("content_hash", "")),
    )
    return document, sorted(chunks, key=lambda ch: ch.position), str(first.get("config_hash", "")), c.embedder.model_id

"""A run against the record store's run journal: open it, undo it, and check the index against it.

Protocol (see docs/architecture.md): a run's new and changed chunks are recorded *pending* before they are upserted;
commit turns them *live* in one transaction and queues the ids they make stale as tombstones, deleted from the
index right after (a later run finishes them if this one died). Rollback restores every id the run overwrote from
its live row (vectors from the embedding cache) and deletes every id it created.

On Pinecone every write here goes to the sparse keyword index too (``ragline.indexing.keywords``), so the two
indexes hold the same ids for every committed run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ragline.batching import batched
from ragline.components import Components
from ragline.embedders.cache import embed_with_cache
from ragline.errors import ConfigError
from ragline.indexing.consistency import await_writes, within_window
from ragline.indexing.health import require_whole_index
from ragline.indexing.keywords import keep_encoding_current, live_records, sparse_problems
from ragline.indexing.seal import Seal, current_seal
from ragline.names import VERSION_SEPARATOR
from ragline.records import index_metadata
from ragline.recordstore import LIVE, ChunkRow
from ragline.stores.base import AppendingStore, VectorRecord, VectorStore
from ragline.stores.sparse import SparseStore

log = logging.getLogger(__name__)

STORE_BATCH = 1000
"""Ids per store fetch/delete call (Pinecone's limit)."""


@dataclass(frozen=True)
class RunRef:
    """An open run: its id, the physical namespace it writes and the source it reads, and the index's seal when it
    opened on files the last run checked (``ragline.indexing.seal``)."""

    run_id: str
    namespace: str
    source: str
    seal: Seal | None = None
    appends: bool = False
    """The namespace's index was empty when the run opened and can append (``AppendingStore``): it then holds only
    what the run wrote, so the chunks of new documents (each met once: ``stages.load``) are appended, not upserted."""


def new_run_id() -> str:
    """A sortable, unique run id."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def record_repair(c: Components, namespace: str, source: str) -> str:
    """Commit an empty run named ``source`` for a repair that changed the index: the namespace's generation moves on,
    so nothing read before the repair is served from a cache keyed by it (the query service's, a seal)."""
    run_id = new_run_id()
    c.records.journal.begin_run(run_id, namespace, source)
    c.records.journal.commit_run(run_id, namespace, source, delete_unseen=False)
    return run_id


def open_run(c: Components, namespace: str, source: str, *, check_index: bool = True) -> RunRef:
    """Refuse an index that lost vectors, finish what crashed runs left, check the namespace's model, open a run.

    ``check_index=False`` skips the first check, for runs that write a bulk-import file instead of the index; so does
    an index sealed by the last run (its files are the ones that run checked).
    """
    seal = current_seal(c, namespace)
    if check_index and seal is None:
        require_whole_index(c.store, c.records.journal, namespace)
    recover(c, namespace)
    # counted only without a seal (a sealed index holds the vectors its last run counted: an unchanged re-run must
    # not open it); a sealed index does not append either: its checks count vectors, and an unknown id beside a lost
    # one keeps the count
    vectors = c.store.describe_namespace(namespace).vector_count if seal is None else None
    if check_index and vectors and c.records.journal.last_commit(namespace) is None:
        # a namespace just dropped, by any host, counts its vectors until reads show the delete: counted again until
        # the consistency window ends before they are taken for another record store's
        vectors = within_window(c, lambda: c.store.describe_namespace(namespace).vector_count, lambda n: n == 0)
        if vectors:
            raise ConfigError(
                f"namespace {namespace!r} of the index holds {vectors} vectors, but this record store has no committed "
                "run for it: another record store indexed them, and a run here would overwrite and then delete them. "
                "Point this host at that one (RAGLINE_DATABASE_URL and RAGLINE_DATABASE_SCHEMA as on the other hosts), "
                f"or adopt the index with `ragline records rebuild -n {namespace}`; nothing was written"
            )
    c.records.journal.bind_namespace_model(namespace, c.embedder.model_id, c.embedder.dimension)
    _refuse_rechunking_a_promoted_version(c, namespace)
    appends = isinstance(c.store, AppendingStore) and vectors == 0
    run = RunRef(new_run_id(), namespace, source, seal, appends)
    c.records.journal.begin_run(run.run_id, namespace, source)
    log.info("run %s opened on namespace %s for source %s", run.run_id, namespace, source)
    return run


def _refuse_rechunking_a_promoted_version(c: Components, namespace: str) -> None:
    """``ConfigError`` when a run reaches ``namespace`` through an alias (a promoted index version, no
    ``index_version`` named) with another chunker than the version's documents were chunked with: it would re-chunk,
    unevaluated, the index the promotion gate passed. Naming the version (``--index-version``) re-chunks it on
    purpose."""
    name = None if c.config.index_version else _alias_serving(c, namespace)
    first = c.records.journal.keyword_rows_after(namespace, "", 1, False) if name else []
    if not name or not first:
        return
    (row,) = c.records.journal.chunk_rows(namespace, [first[0].chunk_id]).values()
    document = c.records.journal.live_documents(namespace, [row.doc_id]).get(row.doc_id)
    if document is not None and document.config_hash != c.chunker.config_hash:
        raise ConfigError(
            f"namespace {name!r} is served by version {namespace!r}, chunked with other settings than this run's "
            f"(chunk_size {c.chunker.chunk_size}, chunk_overlap {c.chunker.chunk_overlap}) or by an older chunker: "
            "the run would re-chunk the promoted index unevaluated. Run with the settings the version was built "
            "with, build and promote a new version, or name it "
            f"(--index-version {namespace.removeprefix(name + VERSION_SEPARATOR)}) to re-chunk it"
        )


def _alias_serving(c: Components, namespace: str) -> str | None:
    """The alias whose target is ``namespace``, a version ``<name>--<version>`` of it; None if none is."""
    for at in (i for i in range(len(namespace)) if namespace.startswith(VERSION_SEPARATOR, i)):
        if c.records.aliases.target(namespace[:at]) == namespace:
            return namespace[:at]
    return None


def recover(c: Components, namespace: str) -> list[str]:
    """Undo the runs a crash left open, delete tombstoned ids and finish a re-encode of the sparse vectors that did
    not end; returns the run ids undone."""
    undone = c.records.journal.unfinished_runs(namespace)
    for run_id in undone:
        log.warning("rolling back unfinished run %s", run_id)
        rollback_run(c, run_id, namespace)
    delete_tombstones(c, namespace)
    encoding = c.records.keywords.encoding(namespace) if c.sparse is not None else None
    if encoding is not None and not encoding.settled:
        keep_encoding_current(c, namespace)
    return undone


def rollback_run(c: Components, run_id: str, namespace: str) -> None:
    """Undo a run: restore every id it overwrote from its live row, delete every id it created."""
    pending = c.records.journal.pending_chunk_ids(run_id)
    live = c.records.journal.chunk_rows(namespace, pending, LIVE)
    restore = [live[cid] for cid in pending if cid in live]
    upsert_rows(c, namespace, restore)
    delete_ids(c, namespace, [cid for cid in pending if cid not in live])
    c.records.journal.discard_pending(run_id)
    await_writes(c, namespace)  # the previous index is back once reads show it
    log.info("run %s rolled back: %d ids restored, %d removed", run_id, len(restore), len(pending) - len(restore))


@contextmanager
def rollback_on_failure(c: Components, run: RunRef) -> Iterator[None]:
    """Roll the run back if the block raises before the run committed, then re-raise."""
    try:
        yield
    except BaseException:
        c.ahead.forget(run.run_id)
        c.workers.close()  # cancels the run's queued work; the next large batch starts them again
        if c.records.journal.run_status(run.run_id) == "running":
            rollback_run(c, run.run_id, run.namespace)
        raise


def delete_tombstones(c: Components, namespace: str) -> int:
    """Delete queued stale ids from the index, then forget them once reads no longer show them (until then other
    hosts' checks see them queued, not as orphans); returns how many."""
    ids = c.records.journal.tombstones(namespace)
    if ids:
        delete_ids(c, namespace, ids)
        await_writes(c, namespace)
        c.records.journal.clear_tombstones(namespace, ids)
    return len(ids)


def delete_ids(c: Components, namespace: str, ids: Sequence[str]) -> None:
    """Delete ids from the index and its sparse keyword index, in store-sized batches."""
    for part in batched(ids, STORE_BATCH):
        c.store.delete(namespace=namespace, ids=part)
        if c.sparse is not None:
            c.sparse.delete(namespace=namespace, ids=part)


def vectors_for(c: Components, rows: Sequence[ChunkRow]) -> np.ndarray:
    """Vectors of recorded chunks, from the embedding cache (embedding only if the cache lost them)."""
    vectors, _, _ = embed_with_cache(c.embedder, c.cache, [r.text for r in rows])
    return vectors


def recorded_records(c: Components, rows: Sequence[ChunkRow]) -> tuple[list[VectorRecord], int]:
    """The index records of recorded chunks, vectors from the embedding cache; and how many texts had to be
    embedded (the cache lacked them)."""
    vectors, computed, _ = embed_with_cache(c.embedder, c.cache, [r.text for r in rows])
    records = [VectorRecord(r.chunk_id, v, index_metadata(r.text, r.metadata)) for r, v in zip(rows, vectors)]
    return records, computed


def upsert_rows(c: Components, namespace: str, rows: Sequence[ChunkRow]) -> int:
    """Write recorded chunks to the index and its sparse keyword index again, in store-sized batches; returns how
    many texts had to be embedded (the embedding cache lacked them)."""
    embedded = 0
    for part in batched(rows, STORE_BATCH):
        records, computed = recorded_records(c, part)
        embedded += computed
        c.store.upsert(records, namespace=namespace)
        if c.sparse is not None:
            c.sparse.upsert(live_records(c, namespace, part, [r.metadata for r in records]), namespace=namespace)
    return embedded


def fetch_back_problems(
    c: Components,
    namespace: str,
    rows: Sequence[ChunkRow],
    *,
    patient: bool = False,
    vectors: np.ndarray | None = None,
) -> dict[str, str]:
    """Recorded chunks whose index copy (or sparse keyword copy) is missing or differs (vector or metadata), with
    what is wrong.

    Content, not counts: an overwrite leaves the count unchanged. Judged once this process's writes are visible
    (``await_writes``); ``patient`` re-reads the differing ones until they match or ``consistency_wait`` has passed,
    so only a difference that outlasts the window is reported. ``vectors``: the rows' own, if the caller has them.
    """
    await_writes(c, namespace)
    expected = dict(zip((r.chunk_id for r in rows), vectors_for(c, rows) if vectors is None else vectors))
    differing = _differences(c, namespace, rows, expected)
    if patient and differing:
        differing = within_window(
            c, lambda: _differences(c, namespace, [r for r in rows if r.chunk_id in differing], expected), _none
        )
    return differing


def _differences(
    c: Components, namespace: str, rows: Sequence[ChunkRow], vectors: dict[str, np.ndarray]
) -> dict[str, str]:
    fetched = c.store.fetch([r.chunk_id for r in rows], namespace=namespace)
    metadata = [index_metadata(r.text, r.metadata) for r in rows]
    problems: dict[str, str] = {}
    for row, expected in zip(rows, metadata):
        got = fetched.get(row.chunk_id)
        if got is None:
            problems[row.chunk_id] = "is missing from the index"
        elif not np.allclose(got.values, vectors[row.chunk_id], atol=1e-5):
            problems[row.chunk_id] = "has a different vector in the index"
        elif got.metadata != expected:
            problems[row.chunk_id] = "has different metadata in the index"
    if c.sparse is not None and rows:
        problems = sparse_problems(c, namespace, rows, metadata) | problems
    return problems


def _none(problems: dict[str, str]) -> bool:
    return not problems


def settled_count(c: Components, namespace: str, expected: int, store: VectorStore | SparseStore | None = None) -> int:
    """The namespace's vector count in ``store`` (default: the vector store) once this process's writes are visible,
    re-read for up to ``config.consistency_wait`` until it equals ``expected`` (Pinecone's stats trail writes;
    LanceDB's are exact)."""
    target = store or c.store
    await_writes(c, namespace)
    return within_window(c, lambda: target.describe_namespace(namespace).vector_count, lambda n: n == expected)

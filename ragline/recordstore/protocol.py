"""The record store: what is indexed, per namespace, and the state every host of a deployment shares.

It is split by concern; each part owns its tables and is a small protocol a backend implements:

- ``RunJournal``: namespaces and their models, runs, pending and live document and chunk rows, tombstones. The
  journal keeps the index and the record store consistent (see ``ragline.indexing.journal``): a run's new and
  changed chunks are recorded *pending* before they are upserted; commit turns them *live* in one transaction and
  queues the ids they make stale as tombstones; rollback restores every overwritten id from its live row.
- ``QuarantineLog``: inputs a run could not index, with the reason.
- ``AliasRegistry``: blue/green aliases (alias → physical namespace) and the history of every change.
- ``BackfillLedger``: backfills and their partitions.
- ``NearDuplicateLog``: MinHash signatures of originals and the documents flagged as near-duplicates.
- ``KeywordStatistics``: each chunk's BM25 terms, and the corpus statistics a sparse vector index's BM25 needs
  (chunk count, total length, document frequencies), read by every host that queries.
- ``EvaluationLog``: the evaluation history the nightly regression check compares with, whichever host ran it.

Every backend passes the contract suite in ``ragline.testing.recordstore_contract``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ragline.records import Chunk, Document, NearDuplicate, QuarantineRecord
from ragline.recordstore.rows import (
    AliasEvent,
    BackfillRow,
    ChunkRow,
    CommitResult,
    DocumentRow,
    EvaluationRow,
    KeywordCorpus,
    KeywordEncoding,
    KeywordRow,
    NamespaceRow,
    PartitionRow,
    RowState,
    RunRow,
    RunStatus,
)

PendingDocument = tuple[Document, Sequence[Chunk], str, str]
"""A document to record as pending: with its chunks, chunker config hash and embedding model id."""


class RunJournal(Protocol):
    """Namespaces, runs, and the pending/live rows of documents and chunks."""

    def bind_namespace_model(self, namespace: str, model_id: str, dimension: int) -> None:
        """Record the namespace's embedding model on first use; raise ``ConfigError`` for a different one later."""
        ...

    def namespace_model(self, namespace: str) -> tuple[str, int] | None:
        """(model id, dimension) bound to the namespace, or None before its first run."""
        ...

    def namespaces(self, name: str, prefix: str) -> list[NamespaceRow]:
        """``name`` and every namespace starting with ``prefix``, oldest first."""
        ...

    def begin_run(self, run_id: str, namespace: str, source: str) -> None: ...

    def unfinished_runs(self, namespace: str) -> list[str]:
        """Runs that started and neither committed nor rolled back, oldest first."""
        ...

    def run_status(self, run_id: str) -> RunStatus | None: ...

    def save_run_stats(self, run_id: str, stats: dict[str, object]) -> None:
        """Store the run's counts (JSON) and its finish time."""
        ...

    def last_runs(self, namespace: str, limit: int = 5) -> list[RunRow]:
        """The newest runs, newest first."""
        ...

    def mark_seen(self, run_id: str, doc_ids: Sequence[str]) -> set[str]:
        """Remember which documents the run read; returns those of ``doc_ids`` it had read before this call."""
        ...

    def live_documents(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, DocumentRow]:
        """Live rows of these documents, by doc_id."""
        ...

    def record_pending(self, run_id: str, namespace: str, documents: Sequence[PendingDocument]) -> None:
        """Record documents and their chunks as pending for this run (replacing the run's earlier pending rows)."""
        ...

    def pending_chunk_ids(self, run_id: str) -> list[str]:
        """The run's pending chunk ids, sorted."""
        ...

    def chunk_rows(self, namespace: str, chunk_ids: Sequence[str], state: RowState = "live") -> dict[str, ChunkRow]:
        """Chunk rows in ``state`` for these ids, by chunk id."""
        ...

    def live_chunks_of_documents(self, namespace: str, doc_ids: Sequence[str]) -> list[ChunkRow]:
        """Live chunk rows of these documents, in chunk id order."""
        ...

    def expected_index_ids_count(self, namespace: str) -> int:
        """Distinct chunk ids the index should hold while a run is open: live and pending ones."""
        ...

    def live_chunk_count(self, namespace: str) -> int: ...

    def live_document_count(self, namespace: str, source: str | None = None) -> int:
        """Live documents of the namespace (of one source only, when ``source`` is given)."""
        ...

    def sample_chunk_ids(self, namespace: str, k: int, run_id: str | None = None) -> list[str]:
        """Up to ``k`` random chunk ids, sorted: the run's pending ones if ``run_id`` is given, else live ones."""
        ...

    def live_chunk_ids(self, namespace: str, prefix: str = "") -> list[str]:
        """Live chunk ids starting with ``prefix``, sorted."""
        ...

    def keyword_rows_after(self, namespace: str, after: str, limit: int, with_text: bool) -> list[KeywordRow]:
        """Up to ``limit`` live chunks with ids after ``after`` ("" for the first), in chunk id order, as keyword
        search indexes them (texts only ``with_text``): one page of the live chunks, so a reader of the whole
        namespace never holds it all."""
        ...

    def unseen_document_count(self, run_id: str, namespace: str, source: str) -> int:
        """How many of the source's live documents a commit with ``delete_unseen`` would remove now."""
        ...

    def commit_run(self, run_id: str, namespace: str, source: str, delete_unseen: bool) -> CommitResult:
        """Make the run's pending rows live in one transaction; queue the ids they make stale as tombstones.

        ``delete_unseen`` also removes the source's live documents the run did not see (a full cleanup): neither
        marked seen nor named by an input the run quarantined (a document turned unreadable keeps its version).
        If the run quarantined an input it could not name (a JSONL line that is not JSON), it removes none: that
        input may be any of them."""
        ...

    def tombstones(self, namespace: str) -> list[str]:
        """Stale chunk ids queued for deletion from the index, sorted."""
        ...

    def clear_tombstones(self, namespace: str, chunk_ids: Sequence[str]) -> None: ...

    def discard_pending(self, run_id: str) -> None:
        """Forget a rolled-back run's pending rows and mark it rolled back."""
        ...

    def mark_verified(self, namespace: str, documents: Sequence[tuple[str, float | None]], at: float) -> None:
        """Set ``indexed_at`` of live documents to ``at`` and their ``modified_at`` to the given (doc_id, mtime)."""
        ...

    def stamp_run_documents(self, run_id: str, at: float) -> None:
        """Set ``indexed_at`` of the live documents a committed run wrote to ``at``."""
        ...

    def last_commit(self, namespace: str) -> str | None:
        """The namespace's latest committed run id (by ``commit_seq``), a run open meanwhile or not: what its live
        rows are as of; None before the first commit."""
        ...

    def read_generation(self, namespace: str) -> str | None:
        """The namespace's latest committed run id; None before the first commit and while the index is in flux
        (a run is open, or a commit's stale ids are not deleted yet), when nothing read should be cached."""
        ...


class QuarantineLog(Protocol):
    """Inputs a run could not index."""

    def add(self, run_id: str, namespace: str, records: Sequence[QuarantineRecord]) -> None: ...

    def for_run(self, run_id: str) -> list[QuarantineRecord]:
        """What ``run_id`` quarantined, in order."""
        ...


class AliasRegistry(Protocol):
    """Blue/green aliases: alias → physical namespace, with a history of every change."""

    def target(self, alias: str) -> str | None:
        """The physical namespace ``alias`` points at, or None when it has no alias row."""
        ...

    def switch(self, alias: str, target: str, *, expected_target: str, actor: str, detail: str) -> AliasEvent:
        """Point ``alias`` at ``target`` and record the promotion, in one transaction.

        Raise ``ConfigError`` when the alias no longer resolves to ``expected_target`` or ``target`` holds no index.
        """
        ...

    def roll_back(self, alias: str, *, actor: str) -> AliasEvent:
        """Point ``alias`` back to its target before its latest promotion not yet undone, in one transaction."""
        ...

    def history(self, alias: str, limit: int = 20) -> list[AliasEvent]:
        """The alias's latest changes, newest first."""
        ...


class BackfillLedger(Protocol):
    """Backfills and the ledger of their partitions (each partition one committed run)."""

    def open(
        self,
        backfill_id: str,
        namespace: str,
        source: str,
        path: str,
        partition_size: int,
        export_dir: str | None,
        total_partitions: int,
    ) -> None:
        """Register a backfill (or resume it: only its partition count is refreshed)."""
        ...

    def finish(self, backfill_id: str) -> None: ...

    def of_namespace(self, namespace: str, limit: int = 10) -> list[BackfillRow]:
        """The namespace's backfills, newest first, with how many partitions are done."""
        ...

    def start_partition(self, backfill_id: str, index: int, fingerprint: str, items: int) -> None:
        """Mark a partition running (again): its counts restart from zero."""
        ...

    def finish_partition(self, backfill_id: str, index: int, run_id: str, counts: dict[str, int]) -> None:
        """Mark a partition done with its run and counts (``rows.PARTITION_COUNTS``)."""
        ...

    def fail_partition(self, backfill_id: str, index: int, error: str) -> None: ...

    def ledger(self, backfill_id: str) -> list[PartitionRow]:
        """The backfill's partitions in order."""
        ...


class NearDuplicateLog(Protocol):
    """MinHash signatures of original documents, and the documents flagged as near-duplicates.

    An original is a live document its indexing run did not flag; a signature counts only with the live content
    hash, so commit, rollback and removal keep this state in sync without a step of their own.
    """

    def original_signatures(self, namespace: str, params: str, run_id: str) -> list[tuple[str, str, bytes]]:
        """(doc_id, content_hash, signature) of the namespace's originals, and of those ``run_id`` recorded."""
        ...

    def signature_hashes(self, namespace: str, params: str, doc_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(doc_id, content_hash) pairs of these documents that have a stored signature."""
        ...

    def save_signatures(self, namespace: str, params: str, run_id: str, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Store (doc_id, content_hash, signature) rows of documents accepted as originals."""
        ...

    def prune_signatures(self, namespace: str, params: str, run_id: str) -> int:
        """Forget signatures, except ``run_id``'s, that no longer count (other parameters, or no live original)."""
        ...

    def record(self, run_id: str, namespace: str, flags: Sequence[NearDuplicate]) -> None: ...

    def for_run(self, run_id: str) -> list[NearDuplicate]:
        """The documents ``run_id`` flagged, in the order it found them."""
        ...

    def live_flags(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, NearDuplicate]:
        """The flags the live versions of these documents were indexed with, by doc_id."""
        ...

    def original_hashes(self, namespace: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """Live content hashes of those of these documents that are originals, by doc_id."""
        ...


ChunkTerms = tuple[str, Mapping[str, int]]
"""A chunk id with its BM25 terms and their counts."""


class KeywordStatistics(Protocol):
    """BM25 terms of chunks, and the statistics of the live ones, for keyword search in a sparse vector index.

    A chunk's terms are kept under the run id of the chunk row they were recorded for; they count only while that
    row is live (a join on the journal's chunk rows), so commit, rollback and removal keep the statistics in step
    with the journal without a step of their own, and every host reads the same numbers.
    """

    def record_terms(self, namespace: str, state: RowState, chunks: Sequence[ChunkTerms]) -> None:
        """Store the terms of each chunk's row in ``state`` (pending: about to be upserted; live: recorded late),
        replacing what that row had; chunks without such a row are ignored."""
        ...

    def live_terms(self, namespace: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """The recorded terms of these chunks' live rows, by chunk id (chunks recorded without terms map to {})."""
        ...

    def corpus(self, namespace: str) -> KeywordCorpus:
        """Live chunks with recorded terms, their total length, and the live documents' sources."""
        ...

    def document_frequencies(self, namespace: str, terms: Sequence[str]) -> dict[str, int]:
        """For each of ``terms`` found in a live chunk, how many live chunks contain it."""
        ...

    def encoding(self, namespace: str) -> KeywordEncoding | None:
        """How the namespace's sparse vectors were made, or None before its first."""
        ...

    def save_encoding(self, namespace: str, encoding: KeywordEncoding, *, replace: bool) -> KeywordEncoding:
        """Store ``encoding`` (only if the namespace has none, unless ``replace``); returns the stored one."""
        ...

    def prune(self, namespace: str) -> int:
        """Forget terms recorded for chunk rows that no longer exist (rolled back or replaced); returns how many
        chunks' terms were removed."""
        ...


class EvaluationLog(Protocol):
    """Every evaluation run's scores, in the order they were recorded."""

    def append(self, rows: Sequence[EvaluationRow]) -> None:
        """Record one run's rows, in one transaction."""
        ...

    def adopt(self, rows: Sequence[EvaluationRow]) -> int:
        """Record those of ``rows`` the log does not hold yet (same run, dataset, namespace and mode), in one
        transaction: a history kept before there was a log, or copied from another store. Returns how many."""
        ...

    def rows(self) -> list[EvaluationRow]:
        """Every row, oldest first."""
        ...


class RecordStore(Protocol):
    """Every part of the record store, on one database."""

    @property
    def journal(self) -> RunJournal: ...

    @property
    def quarantine(self) -> QuarantineLog: ...

    @property
    def aliases(self) -> AliasRegistry: ...

    @property
    def backfills(self) -> BackfillLedger: ...

    @property
    def near_duplicates(self) -> NearDuplicateLog: ...

    @property
    def keywords(self) -> KeywordStatistics: ...

    @property
    def evaluations(self) -> EvaluationLog: ...

    def drop_namespace(self, namespace: str) -> None:
        """Delete the namespace's rows from every part, in one transaction; refuse while an alias points at it."""
        ...

    def close(self) -> None: ...

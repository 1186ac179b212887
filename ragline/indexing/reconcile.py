"""Compare the record store with the index and repair drift: re-upsert what is missing or differs, delete orphans.

The record store is the source of truth for what a namespace should hold; the index can drift from it (a manual
delete, a write outside ragline's runs, a restore from an old backup). ``reconcile`` finds and fixes that, in the
sparse keyword index too on Pinecone (which it also fills for a namespace indexed before it had one, or after a bulk
import).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ragline import progress
from ragline.batching import batched
from ragline.components import Components
from ragline.indexing.health import crashed_runs
from ragline.indexing.journal import STORE_BATCH, fetch_back_problems, recover, upsert_rows
from ragline.indexing.keywords import KeywordDrift, keep_encoding_current, live_records, sparse_problems, sparse_store
from ragline.records import index_metadata
from ragline.recordstore import ChunkRow


@dataclass
class ReconcileReport:
    """What reconciliation found, and whether it repaired it."""

    namespace: str
    expected: int
    indexed: int
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    runs_rolled_back: list[str] = field(default_factory=list)
    crashed_runs: list[str] = field(default_factory=list)
    """Runs a killed process left open, found without ``repair`` (a repair rolls them back: ``runs_rolled_back``)."""
    crashed_pending: int = 0
    """Pending chunk rows those runs left."""
    repaired: bool = False
    keywords: KeywordDrift | None = None
    """How the sparse keyword index compares (None without one)."""

    @property
    def in_sync(self) -> bool:
        keywords_in_sync = self.keywords is None or self.keywords.in_sync
        return not (self.missing or self.orphans or self.different or self.crashed_runs) and keywords_in_sync


def reconcile(c: Components, namespace: str, *, repair: bool = True, sample_size: int = 64) -> ReconcileReport:
    """Compare every id, and the vectors and metadata of a sample; with ``repair`` make the index match.

    A repair rolls back every unfinished run, so its caller holds the namespace lock; without ``repair`` only runs
    no live process holds the lock for are reported, as crashed.
    """
    rolled_back = recover(c, namespace) if repair else []
    crashed = [] if repair else crashed_runs(c.locks, c.records.journal, namespace)
    expected = set(c.records.journal.live_chunk_ids(namespace))
    progress.phase(f"reconcile {namespace}: reading the index's ids", "ids")
    indexed = set(c.store.list_ids(namespace=namespace))
    progress.advance(len(indexed))
    present = sorted(expected & indexed)
    sample = sorted(random.Random(namespace).sample(present, min(sample_size, len(present))))
    sample_rows = c.records.journal.chunk_rows(namespace, sample)
    different = sorted(fetch_back_problems(c, namespace, list(sample_rows.values())))
    report = ReconcileReport(
        namespace=namespace,
        expected=len(expected),
        indexed=len(indexed),
        missing=sorted(expected - indexed),
        orphans=sorted(indexed - expected),
        different=different,
        runs_rolled_back=rolled_back,
        keywords=_keyword_drift(c, namespace, expected, list(sample_rows.values())) if c.sparse else None,
        crashed_runs=crashed,
        crashed_pending=sum(len(c.records.journal.pending_chunk_ids(run_id)) for run_id in crashed),
    )
    if repair and not report.in_sync:
        rows = list(c.records.journal.chunk_rows(namespace, report.missing + report.different).values())
        progress.phase(f"reconcile {namespace}: repairing", "chunks", len(rows))
        for batch in batched(rows, STORE_BATCH):
            upsert_rows(c, namespace, batch)
            progress.advance(len(batch))
        for part in batched(report.orphans, STORE_BATCH):
            c.store.delete(namespace=namespace, ids=part)
        if report.keywords is not None:
            _repair_keywords(c, namespace, report.keywords)
        report.repaired = True
    return report


def _keyword_drift(c: Components, namespace: str, expected: set[str], sample: list[ChunkRow]) -> KeywordDrift:
    """The sparse index's missing and orphaned ids, and which sampled chunks have a differing sparse record."""
    sparse = sparse_store(c)
    indexed = set(sparse.list_ids(namespace=namespace))
    present = [r for r in sample if r.chunk_id in indexed]
    different = sparse_problems(c, namespace, present, [index_metadata(r.text, r.metadata) for r in present])
    return KeywordDrift(sorted(expected - indexed), sorted(indexed - expected), sorted(different))


def _repair_keywords(c: Components, namespace: str, drift: KeywordDrift) -> None:
    """Re-upsert the missing and differing sparse records, delete the orphaned ones."""
    sparse = sparse_store(c)
    rows = list(c.records.journal.chunk_rows(namespace, drift.missing + drift.different).values())
    for part in batched(rows, STORE_BATCH):
        records = live_records(c, namespace, part, [index_metadata(r.text, r.metadata) for r in part])
        sparse.upsert(records, namespace=namespace)
    for ids in batched(drift.orphans, STORE_BATCH):
        sparse.delete(namespace=namespace, ids=ids)
    keep_encoding_current(c, namespace)  # a filled index was encoded with the first rows' average

"""Compare the record store with the index and repair drift: re-upsert what is missing or differs, delete orphans.

The record store is the source of truth for what a namespace should hold; the index can drift from it (a manual
delete, a write outside ragline's runs, a restore from an old backup). ``reconcile`` finds and fixes that, in the
sparse keyword index too on Pinecone (which it also fills for a namespace indexed before it had one, or after a bulk
import).

Reconciliation never deletes on a guess. A record store that knows nothing of a namespace (a host with an empty
home, or pointed at the wrong database) would call every vector an orphan, so with no committed chunks for the
namespace it refuses to repair anything; and it refuses when the orphans exceed ``reconcile_max_orphan_fraction`` of
the namespace (5 % by default) unless forced. A refusal raises ``ReconcileRefused`` before any drift is repaired
(only the rollback of crashed runs, which restores what the record store holds, has happened by then).

A dry run writes nothing: it reports what a repair would refuse, lists the crashed runs a repair would roll back,
and leaves what those runs wrote out of its findings, since the rollback puts it right first. The index is judged
once reads reflect this process's writes (its rollbacks included); each repair writes the record store's version,
so repeating it is harmless.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ragline import progress
from ragline.batching import batched
from ragline.components import Components
from ragline.costs import usage_now
from ragline.errors import ReconcileRefused
from ragline.indexing.consistency import await_writes
from ragline.indexing.health import crashed_runs
from ragline.indexing.journal import STORE_BATCH, fetch_back_problems, record_repair, recover, upsert_rows
from ragline.indexing.keywords import KeywordDrift, keep_encoding_current, live_records, sparse_problems, sparse_store
from ragline.records import index_metadata
from ragline.recordstore import ChunkRow

REPAIR_SOURCE = "reconcile-repair"
"""The source name of the empty run a repairing reconcile commits (``journal.record_repair``)."""


@dataclass
class ReconcileReport:
    """What reconciliation found, and whether it repaired it (or why it refused to, in a dry run)."""

    namespace: str
    expected: int
    indexed: int
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    unfinished_runs: list[str] = field(default_factory=list)
    """Runs a crash left open: rolled back by a repair, only listed by a dry run."""
    runs_rolled_back: list[str] = field(default_factory=list)
    crashed_runs: list[str] = field(default_factory=list)
    """Runs a killed process left open, found without ``repair`` (a repair rolls them back: ``runs_rolled_back``)."""
    crashed_pending: int = 0
    """Pending chunk rows those runs left."""
    repaired: bool = False
    keywords: KeywordDrift | None = None
    """How the sparse keyword index compares (None without one)."""
    refusal: str | None = None
    """Why a repair would be refused (a dry run only: a repair raises ``ReconcileRefused``)."""
    read_units: int = 0
    write_units: int = 0

    @property
    def in_sync(self) -> bool:
        keywords_in_sync = self.keywords is None or self.keywords.in_sync
        return not (self.missing or self.orphans or self.different or self.crashed_runs) and keywords_in_sync


def reconcile(
    c: Components, namespace: str, *, repair: bool = True, sample_size: int = 64, force: bool = False
) -> ReconcileReport:
    """Compare every id, and the vectors and metadata of a sample; with ``repair`` make the index match.

    A repair rolls back every unfinished run, so its caller holds the namespace lock; without ``repair`` only runs
    no live process holds the lock for are reported, as crashed. ``force`` deletes orphans beyond
    ``reconcile_max_orphan_fraction``; nothing forces a repair of a namespace the record store has no committed
    chunks for.
    """
    before = usage_now(c.embedder, c.store, c.sparse)
    unfinished = c.records.journal.unfinished_runs(namespace)
    rolled_back = recover(c, namespace) if repair else []
    crashed = [] if repair else crashed_runs(c.locks, c.records.journal, namespace)
    await_writes(c, namespace)
    expected = set(c.records.journal.live_chunk_ids(namespace))
    progress.phase(f"reconcile {namespace}: reading the index's ids", "ids")
    indexed = set(c.store.list_ids(namespace=namespace))
    progress.advance(len(indexed))
    recovering = set() if repair else _recovered_by_repair(c, namespace, unfinished)
    present = sorted((expected & indexed) - recovering)
    sample = sorted(random.Random(namespace).sample(present, min(sample_size, len(present))))
    sample_rows = c.records.journal.chunk_rows(namespace, sample)
    different = sorted(fetch_back_problems(c, namespace, list(sample_rows.values())))
    report = ReconcileReport(
        namespace=namespace,
        expected=len(expected),
        indexed=len(indexed),
        missing=sorted(expected - indexed),
        orphans=sorted(indexed - expected - recovering),
        different=different,
        unfinished_runs=unfinished,
        runs_rolled_back=rolled_back,
        keywords=_keyword_drift(c, namespace, expected, recovering, list(sample_rows.values())) if c.sparse else None,
        crashed_runs=crashed,
        crashed_pending=sum(len(c.records.journal.pending_chunk_ids(run_id)) for run_id in crashed),
    )
    report.refusal = refusal(c, report, force=force)
    if repair and report.refusal:
        raise ReconcileRefused(report.refusal)
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
        await_writes(c, namespace)
        record_repair(c, namespace, REPAIR_SOURCE)
        report.repaired = True
    spent = usage_now(c.embedder, c.store, c.sparse) - before
    report.read_units, report.write_units = spent.read_units, spent.write_units
    return report


def _keyword_drift(
    c: Components, namespace: str, expected: set[str], recovering: set[str], sample: list[ChunkRow]
) -> KeywordDrift:
    """The sparse index's missing and orphaned ids (not those ``recovering`` puts right, as for the dense index),
    and which sampled chunks have a differing sparse record."""
    sparse = sparse_store(c)
    indexed = set(sparse.list_ids(namespace=namespace))
    present = [r for r in sample if r.chunk_id in indexed]
    different = sparse_problems(c, namespace, present, [index_metadata(r.text, r.metadata) for r in present])
    return KeywordDrift(sorted(expected - indexed), sorted(indexed - expected - recovering), sorted(different))


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


def _recovered_by_repair(c: Components, namespace: str, unfinished: list[str]) -> set[str]:
    """Ids a repair's recovery would put right before judging (what crashed runs wrote, queued stale ids): a dry
    run leaves them out, so it finds what the repair would find."""
    journal = c.records.journal
    return {cid for run_id in unfinished for cid in journal.pending_chunk_ids(run_id)} | set(
        journal.tombstones(namespace)
    )


def refusal(c: Components, report: ReconcileReport, *, force: bool) -> str | None:
    """Why repairing what ``report`` found would be a guess, or None when it is safe."""
    ns = report.namespace
    if report.expected == 0 and report.orphans:  # not the ids of a first run still open: it is no other store's
        return (
            f"refusing to reconcile namespace {ns!r}: the record store has no committed chunks for it while the index "
            f"holds {report.indexed} vectors, so every one would look orphaned; nothing was deleted (is this the "
            "home or database that indexed it?)"
        )
    limit = c.config.reconcile_max_orphan_fraction
    if not force and len(report.orphans) > limit * report.indexed:
        return (
            f"refusing to reconcile namespace {ns!r}: {len(report.orphans)} of its {report.indexed} vectors are "
            f"unknown to the record store, more than reconcile_max_orphan_fraction ({limit:.0%}); nothing was "
            "deleted (check that this home or database indexed it, then rerun with --force to delete them)"
        )
    return None

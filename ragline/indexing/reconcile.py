"""Compare the record store with the index and repair drift: re-upsert what is missing or differs, delete orphans.

The record store is the source of truth for what a namespace should hold; the index can drift from it (a manual
delete, a write outside ragline's runs, a restore from an old backup). ``reconcile`` finds and fixes that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ragline.batching import batched
from ragline.components import Components
from ragline.indexing.health import crashed_runs
from ragline.indexing.journal import STORE_BATCH, fetch_back_problems, recover, upsert_rows


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

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.orphans or self.different or self.crashed_runs)


def reconcile(c: Components, namespace: str, *, repair: bool = True, sample_size: int = 64) -> ReconcileReport:
    """Compare every id, and the vectors and metadata of a sample; with ``repair`` make the index match.

    A repair rolls back every unfinished run, so its caller holds the namespace lock; without ``repair`` only runs
    no live process holds the lock for are reported, as crashed.
    """
    rolled_back = recover(c, namespace) if repair else []
    crashed = [] if repair else crashed_runs(c.config.home, c.records.journal, namespace)
    expected = set(c.records.journal.live_chunk_ids(namespace))
    indexed = set(c.store.list_ids(namespace=namespace))
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
        crashed_runs=crashed,
        crashed_pending=sum(len(c.records.journal.pending_chunk_ids(run_id)) for run_id in crashed),
    )
    if repair and not report.in_sync:
        rows = c.records.journal.chunk_rows(namespace, report.missing + report.different)
        upsert_rows(c, namespace, list(rows.values()))
        for part in batched(report.orphans, STORE_BATCH):
            c.store.delete(namespace=namespace, ids=part)
        report.repaired = True
    return report

"""The one ingest driver: every stage of ``ragline.indexing.stages`` over a source, batch by batch, then commit.

The CLI and the benchmarks call ``ingest`` with the components (stages run here, embedding of one batch overlapping
the loading and chunking of the next); the ingest flow calls the same ``ingest`` with task-backed ``steps``, so the
Prefect UI shows each stage of each batch as a task run. Any failure rolls the run back and re-raises, leaving the
previous index intact.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ragline import progress
from ragline.components import Components
from ragline.config import CleanupMode
from ragline.costs import usage_now
from ragline.indexing import stages
from ragline.indexing.journal import RunRef, rollback_on_failure
from ragline.indexing.keywords import keep_encoding_current
from ragline.indexing.stats import FreshnessCounts, IngestStats
from ragline.indexing.steps import DirectSteps, Pending, Steps
from ragline.indexing.validation import warm_up
from ragline.records import NearDuplicate, QuarantineRecord
from ragline.retrieval.bm25 import refresh_bm25
from ragline.sources.base import Source, SourceItem
from ragline.versions.aliases import write_namespace

log = logging.getLogger(__name__)

Progress = Callable[[IngestStats], None]

FIRST_BATCH = 128
"""Documents in a run's first batch: the embedder starts after these, however large ``batch_size`` is."""
BATCH_GROWTH = 4
"""Each batch holds this many times the documents of the one before, up to ``batch_size``."""


def batch_documents(group: int, batch_size: int) -> int:
    """Documents in batch ``group`` (from 0): a slow start (128, 512, 2,048, …) capped at ``batch_size``. Small
    batches first keep the embedder from waiting for a whole batch to be chunked; large ones after that keep the
    per-batch costs (a task run per stage in a flow, a validation suite, a store version) few."""
    return min(batch_size, FIRST_BATCH * BATCH_GROWTH ** min(group, 8))


@dataclass(frozen=True)
class IngestResult:
    """The outcome of a committed run."""

    run_id: str
    namespace: str
    source: str
    stats: IngestStats
    quarantined: list[QuarantineRecord]
    near_duplicates: list[NearDuplicate] = field(default_factory=list)


@dataclass(frozen=True)
class StagesOutcome:
    """What the stages of one run did: its counts, and (in a refresh) how the unchanged documents fared."""

    stats: IngestStats
    freshness: FreshnessCounts


def run_stages(
    steps: Steps,
    run: RunRef,
    items: Iterable[SourceItem],
    *,
    batch_size: int,
    cleanup: CleanupMode,
    max_delete_fraction: float = 1.0,
    freshness: stages.Freshness | None = None,
    write: stages.RecordWriter | None = None,
    on_progress: Progress | None = None,
) -> StagesOutcome:
    """Every batch's stages (``write_batches``), then verify and commit.

    A full ``cleanup`` refuses to delete more than ``max_delete_fraction`` of the source's documents
    (``stages.guard_deletions``); ``freshness`` re-verifies due unchanged documents (a refresh); ``write`` sends
    records to a bulk-import file instead of the index (no verification against the index).
    """
    outcome = write_batches(
        steps,
        run,
        items,
        batch_size=batch_size,
        freshness=freshness,
        write=write,
        on_progress=on_progress,
    )
    stats = outcome.stats
    if cleanup == "full":
        steps.run(stages.guard_deletions, "guard-deletions", run, max_delete_fraction, stats.documents_seen)
    if write is None:
        stats.add(steps.run(stages.verify, "verify", run))
    stats.add(steps.run(stages.commit, "commit", run, cleanup, write is not None))
    return outcome


def write_batches(
    steps: Steps,
    run: RunRef,
    items: Iterable[SourceItem],
    *,
    batch_size: int,
    freshness: stages.Freshness | None = None,
    write: stages.RecordWriter | None = None,
    on_progress: Progress | None = None,
) -> StagesOutcome:
    """load → (reverify) → chunk → dedupe → embed → validate → upsert for each batch (``batch_documents``); up to
    ``steps.window`` batches embed while the next one loads and is chunked. A batch the worker processes chunk and sign
    (``ragline.indexing.ahead``) first has the oldest validated and upserted meanwhile. The validation suites are
    built beside the first batch.
    The run's writes are pending until ``commit``."""
    stats, counts = IngestStats(), FreshnessCounts()
    source = iter(items)
    embedding: deque[tuple[int, Pending[stages.EmbeddedBatch], int]] = deque()

    def write_oldest() -> None:
        group, pending, documents = embedding.popleft()
        batch = pending.result()
        stats.add(batch.stats)
        stats.add(steps.run(stages.validate, f"validate-{group}", run, batch))
        stats.add(steps.run(stages.upsert, f"upsert-{group}", run, batch, write))
        progress.advance(documents)

    warming: threading.Thread | None = None
    progress.phase(f"{run.source} → {run.namespace}", "documents")
    with steps.session():
        group = 0
        while True:
            size = batch_documents(group, batch_size)
            plan = steps.run(stages.load, f"load-{group}", run, source, size)
            stats.add(plan.stats)
            documents = plan.stats.documents_seen  # done once their batch is written
            if freshness is not None and plan.unchanged:
                reverified = steps.run(stages.reverify, f"reverify-{group}", run, plan, freshness)
                stats.add(reverified.stats)
                counts.add(reverified.counts)
            if write is not None and plan.unchanged:
                stats.add(steps.run(stages.export_unchanged, f"export-unchanged-{group}", run, plan, write))
            while plan.started_ahead and len(embedding) >= max(steps.window, 1):  # the workers chunk and sign it
                write_oldest()
            if plan.documents:
                chunked = steps.run(stages.chunk, f"chunk-{group}", run, plan)
                stats.add(chunked.stats)
                deduped = steps.run(stages.dedupe, f"dedupe-{group}", run, chunked)
                stats.add(deduped.stats)
                if deduped.documents:
                    if not warming:  # GX takes seconds to import: only a run that will validate something pays
                        warming = threading.Thread(target=warm_up, name="ragline-gx-warm-up", daemon=True)
                        warming.start()
                    embedding.append((group, steps.submit(stages.embed, f"embed-{group}", run, deduped), documents))
                    documents = 0
            progress.advance(documents)
            while len(embedding) > (0 if plan.exhausted else steps.window):
                write_oldest()
            if on_progress:
                on_progress(stats)
            if plan.exhausted:
                return StagesOutcome(stats, counts)
            group += 1


def ingest(
    c: Components,
    source: Source,
    *,
    namespace: str | None = None,
    cleanup: CleanupMode | None = None,
    max_delete_fraction: float | None = None,
    steps: Steps | None = None,
    on_progress: Progress | None = None,
    refresh_keyword_index: bool = True,
) -> IngestResult:
    """Index ``source`` into ``namespace`` (default: where runs write, alias resolved) as one committed run.

    ``cleanup`` and ``max_delete_fraction`` default to the config's ``cleanup`` and
    ``cleanup_max_delete_fraction``.

    ``steps`` runs the stages (default: here, directly). ``refresh_keyword_index=False`` leaves the BM25 rebuild to
    the caller (a backfill rebuilds it once, not after every partition).
    """
    namespace = namespace or write_namespace(c.records, c.config)
    cleanup = cleanup or c.config.cleanup
    steps = steps or DirectSteps(c)
    with c.locks.hold(namespace):
        run = steps.run(stages.open_run, "open", namespace, source.name)
        with rollback_on_failure(c, run):
            outcome = run_stages(
                steps,
                run,
                source.items(),
                batch_size=c.config.batch_size,
                cleanup=cleanup,
                max_delete_fraction=c.config.cleanup_max_delete_fraction
                if max_delete_fraction is None
                else max_delete_fraction,
                on_progress=on_progress,
            )
        stats = outcome.stats
        if refresh_keyword_index and (stats.chunks_written or stats.chunks_deleted):
            stats.add(steps.run(refresh_keywords, "keyword-index", run))
        c.records.journal.save_run_stats(run.run_id, stats.as_dict())
    if on_progress:
        on_progress(stats)
    return IngestResult(
        run.run_id,
        namespace,
        source.name,
        stats,
        c.records.quarantine.for_run(run.run_id),
        c.records.near_duplicates.for_run(run.run_id),
    )


def refresh_keywords(c: Components, run: RunRef) -> IngestStats:
    """Bring keyword search up to date after a run changed the namespace's chunks: on Pinecone, re-encode the sparse
    vectors if the average chunk length drifted (``keep_encoding_current``); locally, rebuild the BM25 index."""
    stats = IngestStats()
    before = usage_now(c.embedder, c.store, c.sparse)
    with stats.timed("bm25"):
        update_keyword_index(c, run.namespace)
    stats.add_usage(c, before)
    return stats


def update_keyword_index(c: Components, namespace: str) -> None:
    """``refresh_keywords`` for one namespace, outside a run (the caller holds the namespace lock)."""
    if c.sparse is not None:
        keep_encoding_current(c, namespace)
    else:
        refresh_bm25(c, namespace)

"""Freshness: re-index what changed, re-verify what expired, delete what vanished, then reconcile.

A refresh of one source is one ingest run (the stages of ``ragline.ingest``, cleanup "full" scoped to that source)
in which every loaded document falls in exactly one class:

- **new or changed** (content, chunker config or model differ from the record store): chunked, embedded (cache
  first) and written, as ingest does;
- **due** (unchanged, but ``now - indexed_at >= ttl``, or its file's mtime moved): *re-verified* without
  embedding: its chunks are fetched back from the index and compared with the record store (vectors from the
  embedding cache); missing or differing ones are re-upserted; then its ``indexed_at`` becomes ``now``;
- **fresh** (unchanged and younger than its TTL): untouched, no embedding and no write;
- **gone** from the source: deleted at commit.

Each namespace is reconciled (``ragline.reconcile``) before its runs, so drift the runs did not cause (lost or
orphaned vectors, differences in reconcile's sample) is repaired before a run verifies the index, and again after
them, to check the result; both are reported. The namespace lock is held from the first reconciliation to the last.
The clock is injected (``clock``/``now``), so tests expire TTLs without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pydantic import ValidationError

from ragline.batching import batched
from ragline.components import Components
from ragline.config import RaglineConfig, RefreshSource
from ragline.costs import usage_now
from ragline.errors import ConfigError, SourceError
from ragline.ingest import (
    DOCUMENT_GROUP,
    IngestStats,
    begin_run,
    commit_run,
    fetch_back_problems,
    index_batch,
    namespace_lock,
    plan_documents,
    rollback_on_failure,
    upsert_rows,
    verify_run,
)
from ragline.reconcile import ReconcileReport, reconcile
from ragline.records import Document, QuarantineRecord
from ragline.recordstore import DocumentRow, SQLiteRecordStore
from ragline.retrieval.bm25 import refresh_bm25
from ragline.sources import open_source
from ragline.sources.base import SourceItem
from ragline.versions import read_namespace, write_namespace

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class RefreshTarget:
    """One source to refresh, resolved: where it is read from, the namespace it is kept in, and its TTL."""

    path: Path
    namespace: str
    ttl_s: float


@dataclass
class FreshnessCounts:
    """How a refresh classified the unchanged documents, and what re-verifying the due ones found."""

    documents_expired: int = 0
    """Unchanged, older than the TTL: re-verified."""
    documents_touched: int = 0
    """Unchanged content, but the file's mtime moved (and not expired): re-verified."""
    documents_fresh: int = 0
    """Unchanged and younger than the TTL: untouched."""
    chunks_reverified: int = 0
    """Chunks of due documents fetched back from the index and compared with the record store."""
    chunks_restored: int = 0
    """Of those, chunks that were missing or differed and were re-upserted (from the embedding cache)."""

    def add(self, other: FreshnessCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class SourceRefresh:
    """The outcome of one source's refresh run."""

    target: RefreshTarget
    run_id: str
    source: str
    stats: IngestStats
    freshness: FreshnessCounts
    quarantined: list[QuarantineRecord]


@dataclass(frozen=True)
class NamespaceRefresh:
    """One namespace's refresh: reconciled before, its sources' runs, reconciled after."""

    namespace: str
    reconciled_before: ReconcileReport
    sources: list[SourceRefresh]
    reconciled_after: ReconcileReport


@dataclass(frozen=True)
class RefreshReport:
    """A whole refresh: the clock reading it used and each namespace's outcome."""

    now: float
    namespaces: list[NamespaceRefresh]

    @property
    def sources(self) -> list[SourceRefresh]:
        return [s for ns in self.namespaces for s in ns.sources]


# --- what to refresh ---------------------------------------------------------------------------------------------


def refresh_namespace(config: RaglineConfig, records: SQLiteRecordStore, requested: str | None) -> str:
    """The physical namespace a refresh writes: the source entry's own (through its alias), else where ingest writes."""
    return read_namespace(records, requested) if requested else write_namespace(records, config)


def refresh_targets(
    config: RaglineConfig, records: SQLiteRecordStore, paths: Sequence[str | Path] | None = None,
    namespace: str | None = None, ttl: str | float | None = None,
) -> list[RefreshTarget]:
    """The sources to refresh: ``paths`` if given, else ``config.refresh_sources``; ``namespace``/``ttl`` override."""
    entries = [{"path": p} for p in paths] if paths else [
        s.model_dump(exclude_none=True) for s in config.refresh_sources
    ]
    if not entries:
        raise ConfigError("nothing to refresh: pass paths, or list refresh_sources in ragline.toml "
                          "(or RAGLINE_REFRESH_SOURCES)")
    overrides = {key: value for key, value in (("namespace", namespace), ("ttl", ttl)) if value is not None}
    try:
        sources = [RefreshSource.model_validate({**entry, **overrides}) for entry in entries]
    except ValidationError as exc:
        raise ConfigError(f"invalid refresh source: {exc}") from exc
    default_ttl = config.refresh_default_ttl
    return [
        RefreshTarget(s.path, refresh_namespace(config, records, s.namespace), default_ttl if s.ttl is None else s.ttl)
        for s in sources
    ]


# --- stages (the flow's tasks call these one by one) -------------------------------------------------------------


def refresh_group(
    c: Components, run_id: str, namespace: str, items: Sequence[SourceItem], ttl_s: float, now: float
) -> tuple[IngestStats, FreshnessCounts]:
    """Plan one group of source items, re-verify its due unchanged documents, index its new and changed ones."""
    plan = plan_documents(c, run_id, namespace, items)
    stats, freshness = plan.stats, FreshnessCounts()
    due: list[Document] = []
    for doc, row in plan.unchanged:
        if now - row.indexed_at >= ttl_s:
            freshness.documents_expired += 1
            due.append(doc)
        elif _touched(doc, row):
            freshness.documents_touched += 1
            due.append(doc)
        else:
            freshness.documents_fresh += 1
    before = usage_now(c.embedder, c.store)
    with stats.timed("reverify"):
        freshness.chunks_reverified, freshness.chunks_restored = reverify_documents(c, namespace, due, now)
    stats.add_usage(c, before)
    stats.add(index_batch(c, run_id, namespace, plan.documents))
    return stats, freshness


def _touched(doc: Document, row: DocumentRow) -> bool:
    """The source reports another modification time than when the document was last indexed or verified."""
    return doc.modified_at is not None and doc.modified_at != row.modified_at


def reverify_documents(c: Components, namespace: str, documents: Sequence[Document], now: float) -> tuple[int, int]:
    """Fetch back every chunk of these unchanged documents, re-upsert the missing or differing ones, mark them
    verified at ``now``; returns (chunks checked, chunks restored). Embeds nothing while the cache has the vectors."""
    if not documents:
        return 0, 0
    rows = c.records.live_chunks_of_documents(namespace, [d.doc_id for d in documents])
    problems = fetch_back_problems(c, namespace, rows)
    if problems:
        log.warning("re-verify in %s: %d of %d chunks missing or different; restoring them",
                    namespace, len(problems), len(rows))
        upsert_rows(c, namespace, [r for r in rows if r.chunk_id in problems])
    c.records.mark_verified(namespace, [(d.doc_id, d.modified_at) for d in documents], now)
    return len(rows), len(problems)


def refuse_emptied_source(c: Components, namespace: str, source_name: str, stats: IngestStats) -> None:
    """Raise before commit when a source that has indexed documents yielded none: an unmounted or emptied folder
    must not delete a whole source every hour. ``ragline ingest PATH --full`` deletes them when that is meant."""
    indexed = c.records.live_document_count(namespace, source_name)
    if stats.documents_seen == 0 and indexed:
        raise SourceError(
            f"source {source_name!r} yielded no documents while {indexed} of its documents are indexed in "
            f"{namespace!r}; refusing to delete them all (an unmounted or emptied folder?). If that is meant, "
            f"run `ragline ingest PATH --full` on it.")


def finish_run(
    c: Components, run_id: str, namespace: str, stats: IngestStats, freshness: FreshnessCounts, now: float
) -> list[QuarantineRecord]:
    """After commit: stamp the run's documents as indexed at ``now``, refresh BM25 if chunks changed, save the
    run's counts; returns what the run quarantined."""
    c.records.stamp_run_documents(run_id, now)
    if stats.chunks_written or stats.chunks_deleted:
        with stats.timed("bm25"):
            refresh_bm25(c, namespace)
    c.records.save_run_stats(run_id, {**stats.as_dict(), **asdict(freshness)})
    return c.records.quarantined(run_id)


def by_namespace(targets: Sequence[RefreshTarget]) -> Iterator[tuple[str, list[RefreshTarget]]]:
    """The targets grouped by namespace, in the order the namespaces first appear."""
    groups: dict[str, list[RefreshTarget]] = {}
    for target in targets:
        groups.setdefault(target.namespace, []).append(target)
    yield from groups.items()


# --- the direct driver (CLI, tests) ------------------------------------------------------------------------------


def refresh(c: Components, targets: Sequence[RefreshTarget], *, clock: Clock = time.time) -> RefreshReport:
    """Refresh every target, namespace by namespace: reconcile, one run per source, reconcile again."""
    now = clock()
    namespaces: list[NamespaceRefresh] = []
    for namespace, group in by_namespace(targets):
        with namespace_lock(c.config.home, namespace):
            before = reconcile(c, namespace)
            sources = [refresh_source(c, target, now) for target in group]
            namespaces.append(NamespaceRefresh(namespace, before, sources, reconcile(c, namespace)))
    return RefreshReport(now, namespaces)


def refresh_source(c: Components, target: RefreshTarget, now: float) -> SourceRefresh:
    """One source's refresh run (the caller holds the namespace lock); a failure rolls it back and re-raises."""
    source = open_source(target.path, max_file_bytes=c.config.max_file_bytes)
    namespace = target.namespace
    stats, freshness = IngestStats(), FreshnessCounts()
    run_id = begin_run(c, namespace, source.name)
    with rollback_on_failure(c, run_id, namespace):
        for group in batched(source.items(), DOCUMENT_GROUP):
            group_stats, group_freshness = refresh_group(c, run_id, namespace, group, target.ttl_s, now)
            stats.add(group_stats)
            freshness.add(group_freshness)
        refuse_emptied_source(c, namespace, source.name, stats)
        stats.add(verify_run(c, run_id, namespace))
        stats.add(commit_run(c, run_id, namespace, source.name, "full"))
    quarantined = finish_run(c, run_id, namespace, stats, freshness, now)
    return SourceRefresh(target, run_id, source.name, stats, freshness, quarantined)

"""Freshness: re-index what changed, re-verify what expired, delete what vanished, then reconcile.

A refresh of one source is one ingest run (the stages of ``ragline.indexing.stages``, cleanup "full" scoped to that
source) in which every loaded document falls in exactly one class:

- **new or changed** (content, chunker config or model differ from the record store): chunked, embedded (cache
  first) and written, as ingest does;
- **due** (unchanged, but ``now - indexed_at >= ttl``, or its file's mtime moved): *re-verified* without
  embedding: its chunks are fetched back from the index and compared with the record store (vectors from the
  embedding cache); missing or differing ones are re-upserted; then its ``indexed_at`` becomes ``now``;
- **fresh** (unchanged and younger than its TTL): untouched, no embedding and no write;
- **gone** from the source: deleted at commit.

Each namespace is reconciled (``ragline.indexing.reconcile``) before its runs, so drift the runs did not cause (lost or
orphaned vectors, differences in reconcile's sample) is repaired before a run verifies the index, and again after
them, to check the result; both are reported. The namespace lock is held from the first reconciliation to the last.
The clock is injected (``clock``/``now``), so tests expire TTLs without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from ragline.components import Components
from ragline.config import RaglineConfig, RefreshSource
from ragline.errors import ConfigError
from ragline.indexing import stages
from ragline.indexing.journal import RunRef, rollback_on_failure
from ragline.indexing.pipeline import refresh_keywords, run_stages
from ragline.indexing.reconcile import ReconcileReport, reconcile
from ragline.indexing.stats import FreshnessCounts, IngestStats
from ragline.indexing.steps import DirectSteps, Steps
from ragline.records import QuarantineRecord
from ragline.recordstore import RecordStore
from ragline.sources import open_source
from ragline.versions.aliases import read_namespace, write_namespace

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class RefreshTarget:
    """One source to refresh, resolved: where it is read from, the namespace it is kept in, and its TTL."""

    path: Path
    namespace: str
    ttl_s: float


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


def refresh_namespace(config: RaglineConfig, records: RecordStore, requested: str | None) -> str:
    """The physical namespace a refresh writes: the source entry's own (through its alias), else where ingest writes."""
    return read_namespace(records, requested) if requested else write_namespace(records, config)


def refresh_targets(
    config: RaglineConfig,
    records: RecordStore,
    paths: Sequence[str | Path] | None = None,
    namespace: str | None = None,
    ttl: str | float | None = None,
) -> list[RefreshTarget]:
    """The sources to refresh: ``paths`` if given, else ``config.refresh_sources``; ``namespace``/``ttl`` override."""
    entries = (
        [{"path": p} for p in paths] if paths else [s.model_dump(exclude_none=True) for s in config.refresh_sources]
    )
    if not entries:
        raise ConfigError(
            "nothing to refresh: pass paths, or list refresh_sources in ragline.toml (or RAGLINE_REFRESH_SOURCES)"
        )
    overrides = {key: value for key, value in (("namespace", namespace), ("ttl", ttl)) if value is not None}
    try:
        sources = [RefreshSource.model_validate({**entry, **overrides}) for entry in entries]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))} = {e['input']!r}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid refresh source: {problems}") from exc
    default_ttl = config.refresh_default_ttl
    return [
        RefreshTarget(s.path, refresh_namespace(config, records, s.namespace), default_ttl if s.ttl is None else s.ttl)
        for s in sources
    ]


def by_namespace(targets: Sequence[RefreshTarget]) -> Iterator[tuple[str, list[RefreshTarget]]]:
    """The targets grouped by namespace, in the order the namespaces first appear."""
    groups: dict[str, list[RefreshTarget]] = {}
    for target in targets:
        groups.setdefault(target.namespace, []).append(target)
    yield from groups.items()


# --- the driver --------------------------------------------------------------------------------------------------


def refresh(
    c: Components, targets: Sequence[RefreshTarget], *, clock: Clock = time.time, steps: Steps | None = None
) -> RefreshReport:
    """Refresh every target, namespace by namespace: reconcile, one run per source, reconcile again.

    ``steps`` runs the stages (default: here, directly; the refresh flow passes task-backed steps).
    """
    steps = steps or DirectSteps(c)
    now = _checked_now(clock())
    _check_one_path_per_source(targets)
    namespaces: list[NamespaceRefresh] = []
    for namespace, group in by_namespace(targets):
        with c.locks.hold(namespace):
            before = steps.run(reconcile, "reconcile-before", namespace)
            sources = [refresh_source(c, steps, target, now) for target in group]
            after = steps.run(reconcile, "reconcile-after", namespace)
            namespaces.append(NamespaceRefresh(namespace, before, sources, after))
    return RefreshReport(now, namespaces)


def _check_one_path_per_source(targets: Sequence[RefreshTarget]) -> None:
    """``ConfigError`` before any run when two paths are one source of a namespace (folders of one name): each
    run's cleanup would delete the other's documents. A path that does not exist is left to its own run."""
    seen: dict[tuple[str, str], Path] = {}
    for target in targets:
        if not target.path.exists():
            continue
        key = (target.namespace, open_source(target.path).name)
        first = seen.setdefault(key, target.path)
        if first.resolve() != target.path.resolve():
            raise ConfigError(
                f"refresh sources {first} and {target.path} are both source {key[1]!r} of namespace {key[0]!r} "
                "(folders of one name): each run would delete the other's documents; refresh them into different "
                "namespaces, or rename one"
            )


def _checked_now(now: float) -> float:
    """``now`` if it is a time (epoch seconds a date can hold), checked before any run opens: every document it
    re-verifies is stamped with it, and a stamp of infinity would never be due again."""
    try:
        datetime.fromtimestamp(now, tz=UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        raise ConfigError(f"now must be a time in epoch seconds, got {now!r}") from None
    return now


def refresh_source(c: Components, steps: Steps, target: RefreshTarget, now: float) -> SourceRefresh:
    """One source's refresh run (the caller holds the namespace lock); a failure rolls it back and re-raises."""
    source = open_source(target.path, max_file_bytes=c.config.max_file_bytes)
    run: RunRef = steps.run(stages.open_run, "open", target.namespace, source.name)
    with rollback_on_failure(c, run):
        outcome = run_stages(
            steps,
            run,
            source.items(),
            batch_size=c.config.batch_size,
            cleanup="full",
            max_delete_fraction=c.config.cleanup_max_delete_fraction,
            freshness=stages.Freshness(target.ttl_s, now),
        )
    stats = outcome.stats
    c.records.journal.stamp_run_documents(run.run_id, now)
    if stats.chunks_written or stats.chunks_deleted:
        stats.add(steps.run(refresh_keywords, "keyword-index", run))
    c.records.journal.save_run_stats(run.run_id, {**stats.as_dict(), **asdict(outcome.freshness)})
    return SourceRefresh(
        target, run.run_id, source.name, stats, outcome.freshness, c.records.quarantine.for_run(run.run_id)
    )

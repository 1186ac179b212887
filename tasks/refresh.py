"""Thin Prefect tasks over ragline's refresh stages (``ragline.refresh``); each rebuilds its parts from the config.

The run's open, verify and commit steps are the ingest tasks (``tasks.ingest``), so a failed refresh rolls back
through the same transaction hook as a failed ingest.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline import refresh
from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.ingest import IngestStats
from ragline.reconcile import ReconcileReport, reconcile
from ragline.records import QuarantineRecord
from ragline.refresh import FreshnessCounts
from ragline.sources.base import SourceItem
from tasks.concurrency import throttled


@task(cache_policy=NO_CACHE)
def refresh_group(
    config: RaglineConfig, namespace: str, run_id: str, items: Sequence[SourceItem], ttl_s: float, now: float
) -> tuple[IngestStats, FreshnessCounts]:
    """Re-verify the due unchanged documents of one group and index its new and changed ones."""
    return refresh.refresh_group(throttled(components_for(config)), run_id, namespace, items, ttl_s, now)


@task(cache_policy=NO_CACHE)
def refuse_emptied_source(config: RaglineConfig, namespace: str, source_name: str, stats: IngestStats) -> None:
    """Fail (and so roll back) before commit when a source with indexed documents yielded none."""
    refresh.refuse_emptied_source(components_for(config), namespace, source_name, stats)


@task(cache_policy=NO_CACHE)
def finish_run(
    config: RaglineConfig, namespace: str, run_id: str, stats: IngestStats, freshness: FreshnessCounts, now: float
) -> list[QuarantineRecord]:
    """Stamp the committed run's documents, refresh BM25 if needed, save the counts."""
    return refresh.finish_run(components_for(config), run_id, namespace, stats, freshness, now)


@task(cache_policy=NO_CACHE)
def reconcile_namespace(config: RaglineConfig, namespace: str) -> ReconcileReport:
    """Compare the namespace's index with the record store and repair any drift (the flow holds its lock)."""
    return reconcile(components_for(config), namespace)

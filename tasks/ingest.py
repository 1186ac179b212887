"""Thin Prefect tasks over ragline's ingest stages: each rebuilds its parts from the config and calls one stage.

Tasks take the config and plain records (never clients or DataFrames) and use no input caching: documents are
not worth hashing, and every stage is idempotent by design.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from ragline import ingest
from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.ingest import EmbeddedBatch, IngestStats
from ragline.retrieval import refresh_bm25
from ragline.sources.base import SourceItem
from tasks.concurrency import throttled

RUN_KEY = "ragline_run"
"""Transaction key holding (config, namespace, run_id) for the rollback hook."""


@task(cache_policy=NO_CACHE)
def open_run(config: RaglineConfig, namespace: str, source_name: str) -> str:
    """Recover crashed runs, check the namespace's model, open a run; rolled back with the flow's transaction."""
    return ingest.begin_run(components_for(config), namespace, source_name)


@open_run.on_rollback
def _roll_back(txn: Transaction) -> None:
    """Undo the run's pending writes so the previous index stays intact."""
    config, namespace, run_id = txn.get(RUN_KEY)
    c = components_for(config)
    if c.records.run_status(run_id) == "running":
        ingest.rollback_run(c, run_id, namespace)


@task(cache_policy=NO_CACHE)
def prepare_group(config: RaglineConfig, namespace: str, run_id: str, items: Sequence[SourceItem]) -> EmbeddedBatch:
    """Plan, chunk, dedupe, embed and validate one group of documents, wherever the flow's group runner puts it."""
    return ingest.prepare_group(throttled(components_for(config)), run_id, namespace, items)


@task(cache_policy=NO_CACHE)
def write_group(config: RaglineConfig, namespace: str, run_id: str, batch: EmbeddedBatch) -> IngestStats:
    """Record one prepared group as pending and upsert it (in the flow's own process)."""
    return ingest.write_batch(throttled(components_for(config)), run_id, namespace, batch)


@task(cache_policy=NO_CACHE)
def verify_run(config: RaglineConfig, namespace: str, run_id: str) -> IngestStats:
    """Reconcile index and record store before commit."""
    return ingest.verify_run(components_for(config), run_id, namespace)


@task(cache_policy=NO_CACHE)
def commit_run(config: RaglineConfig, namespace: str, run_id: str, source_name: str) -> IngestStats:
    """Make the run live and delete what it made stale."""
    return ingest.commit_run(components_for(config), run_id, namespace, source_name, config.cleanup)


@task(cache_policy=NO_CACHE)
def refresh_keyword_index(config: RaglineConfig, namespace: str) -> bool:
    """Rebuild the namespace's BM25 index if its live chunks changed."""
    return refresh_bm25(components_for(config), namespace)

"""Thin Prefect task over one backfill partition: its own committed run (or export), stages run inside it."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.indexing import backfill
from ragline.indexing.backfill import BackfillSpec, Partition
from ragline.indexing.stats import IngestStats
from ragline.tasks.concurrency import throttled


@task(name="partition", cache_policy=NO_CACHE, task_run_name="partition-{partition.index}")
def run_partition(config: RaglineConfig, spec: BackfillSpec, partition: Partition) -> tuple[str, IngestStats]:
    """Ingest (or export) one partition as its own committed run; a failure has rolled it back already."""
    return backfill.index_partition(throttled(components_for(config)), spec, partition)

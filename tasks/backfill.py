"""Thin Prefect task over one backfill partition: rebuilds its parts from the config and runs the partition."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline import backfill
from ragline.backfill import BackfillSpec, Partition
from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.ingest import IngestStats
from tasks.concurrency import throttled


@task(cache_policy=NO_CACHE, task_run_name="partition-{partition.index}")
def run_partition(config: RaglineConfig, spec: BackfillSpec, partition: Partition) -> tuple[str, IngestStats]:
    """Ingest (or export) one partition as its own committed run; a failure has rolled it back already."""
    return backfill.index_partition(throttled(components_for(config)), spec, partition)

"""Thin Prefect task over reconciliation; a refresh's runs use the ingest stages' tasks (``ragline.tasks.ingest``)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.indexing import reconcile as reconciliation
from ragline.indexing.reconcile import ReconcileReport
from ragline.tasks.ingest import INGEST_TASKS
from ragline.tasks.steps import TaskRegistry


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile(config: RaglineConfig, namespace: str) -> ReconcileReport:
    """Compare the namespace's index with the record store and repair any drift (the flow holds its lock)."""
    return reconciliation.reconcile(components_for(config), namespace)


REFRESH_TASKS: TaskRegistry = {**INGEST_TASKS, reconciliation.reconcile: reconcile}
"""The ingest stages' tasks plus reconciliation, for ``TaskSteps``."""

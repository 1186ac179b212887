"""The refresh flow: per source, re-index what changed, re-verify what expired, delete what vanished; reconcile.

It runs the core's one refresh driver (``ragline.indexing.refresh.refresh``) with task-backed steps. Every
parameter is optional: with none, the flow refreshes the configured ``refresh_sources`` (what the hourly deployment
does). Run it from Python (``refresh_flow()``), the CLI (``ragline refresh --flow``) or a deployment.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ragline.components import components_for
from ragline.config import load_config
from ragline.indexing.refresh import refresh, refresh_targets
from ragline.indexing.refresh_report import reconcile_rows, refresh_markdown, source_count_rows, source_rows
from ragline.tasks.refresh import REFRESH_TASKS
from ragline.tasks.secrets import resolve_secret_blocks
from ragline.tasks.steps import TaskSteps


@flow(name="refresh")
def refresh_flow(
    paths: list[str] | None = None,
    namespace: str | None = None,
    ttl: str | None = None,
    home: str | None = None,
    now: float | None = None,
    force_delete: bool = False,
) -> dict[str, object]:
    """Refresh ``paths`` (default: the configured refresh sources), reconciling each namespace before and after.

    ``namespace`` and ``ttl`` (seconds or "6h", "1d") override every source's; ``now`` (epoch seconds) replaces
    the clock, e.g. to re-verify as of a later time; ``force_delete`` deletes vanished documents even past
    ``cleanup_max_delete_fraction`` of a source.
    """
    config = resolve_secret_blocks(load_config(home=home, cleanup_max_delete_fraction=1.0 if force_delete else None))
    c = components_for(config)
    targets = refresh_targets(config, c.records, paths, namespace=namespace, ttl=ttl)
    clock = time.time if now is None else (lambda: now)
    report = refresh(c, targets, clock=clock, steps=TaskSteps(config, REFRESH_TASKS))
    create_markdown_artifact(key="refresh-summary", markdown=refresh_markdown(report), description="Refresh run")
    create_table_artifact(key="refresh-stats", table=source_count_rows(report), description="Counts per source")
    create_table_artifact(key="refresh-reconcile", table=reconcile_rows(report), description="Drift repaired")
    return {"now": report.now, "sources": source_rows(report), "reconciled": reconcile_rows(report)}


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → refresh-manual → Run).
    refresh_flow.serve(name="refresh-manual")

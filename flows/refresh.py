"""The refresh flow: per source, re-index what changed, re-verify what expired, delete what vanished; reconcile.

Every parameter is optional: with none, the flow refreshes the configured ``refresh_sources`` (what the hourly
deployment does). Run it from Python (``refresh_flow()``), the CLI (``ragline refresh --flow``) or a deployment.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.transactions import transaction

from ragline.batching import batched
from ragline.components import components_for
from ragline.config import RaglineConfig, load_config
from ragline.ingest import DOCUMENT_GROUP, IngestStats, namespace_lock
from ragline.refresh import (
    FreshnessCounts, NamespaceRefresh, RefreshReport, RefreshTarget, SourceRefresh, by_namespace, refresh_targets,
)
from ragline.refresh_report import reconcile_rows, refresh_markdown, source_rows
from ragline.sources import open_source
from tasks.ingest import RUN_KEY, commit_run, open_run, verify_run
from tasks.refresh import finish_run, reconcile_namespace, refresh_group, refuse_emptied_source
from tasks.secrets import resolve_secret_blocks


@flow(name="refresh")
def refresh_flow(
    paths: list[str] | None = None,
    namespace: str | None = None,
    ttl: str | None = None,
    home: str | None = None,
    now: float | None = None,
) -> dict[str, object]:
    """Refresh ``paths`` (default: the configured refresh sources), reconciling each namespace before and after.

    ``namespace`` and ``ttl`` (seconds or "6h", "1d") override every source's; ``now`` (epoch seconds) replaces
    the clock, e.g. to re-verify as of a later time.
    """
    config = resolve_secret_blocks(load_config(home=home, cleanup="full"))
    targets = refresh_targets(config, components_for(config).records, paths, namespace=namespace, ttl=ttl)
    now = time.time() if now is None else now
    namespaces: list[NamespaceRefresh] = []
    for ns, group in by_namespace(targets):
        with namespace_lock(config.home, ns):
            before = reconcile_namespace(config, ns)
            sources = [_refresh_source(config, target, now) for target in group]
            namespaces.append(NamespaceRefresh(ns, before, sources, reconcile_namespace(config, ns)))
    report = RefreshReport(now, namespaces)
    create_markdown_artifact(key="refresh-summary", markdown=refresh_markdown(report), description="Refresh run")
    create_table_artifact(key="refresh-stats", table=source_rows(report), description="Refresh counts per source")
    create_table_artifact(key="refresh-reconcile", table=reconcile_rows(report), description="Drift repaired")
    return {"now": now, "sources": source_rows(report), "reconciled": reconcile_rows(report)}


def _refresh_source(config: RaglineConfig, target: RefreshTarget, now: float) -> SourceRefresh:
    """One source's run as tasks; a failure rolls it back through the transaction, as in the ingest flow."""
    source = open_source(target.path, max_file_bytes=config.max_file_bytes)
    ns = target.namespace
    stats, freshness = IngestStats(), FreshnessCounts()
    with transaction() as txn:
        run_id = open_run(config, ns, source.name)
        txn.set(RUN_KEY, (config, ns, run_id))
        for group in batched(source.items(), DOCUMENT_GROUP):
            group_stats, group_freshness = refresh_group(config, ns, run_id, group, target.ttl_s, now)
            stats.add(group_stats)
            freshness.add(group_freshness)
        refuse_emptied_source(config, ns, source.name, stats)
        stats.add(verify_run(config, ns, run_id))
        stats.add(commit_run(config, ns, run_id, source.name))
    quarantined = finish_run(config, ns, run_id, stats, freshness, now)
    return SourceRefresh(target, run_id, source.name, stats, freshness, quarantined)


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → refresh-manual → Run).
    refresh_flow.serve(name="refresh-manual")

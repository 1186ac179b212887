"""The ingest flow: load → chunk → dedupe → embed → upsert → validate → commit, one task per document group.

Run it from Python (``ingest_flow("data/sample")``), from the CLI (``ragline ingest PATH --flow``) or from a
deployment in the Prefect UI. A failure anywhere rolls the whole run back through the transaction.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.transactions import transaction

from ragline.components import components_for
from ragline.config import load_config
from ragline.batching import batched
from ragline.ingest import DOCUMENT_GROUP, IngestResult, IngestStats, namespace_lock
from ragline.report import summary_markdown, summary_rows
from ragline.sources import open_source
from tasks.ingest import RUN_KEY, commit_run, index_group, open_run, refresh_keyword_index, verify_run
from tasks.secrets import resolve_secret_blocks


@flow(name="ingest")
def ingest_flow(
    path: str,
    namespace: str | None = None,
    full: bool = False,
    home: str | None = None,
    index_version: str | None = None,
) -> dict[str, object]:
    """Index the documents under ``path`` into ``namespace``; ``full`` also deletes documents gone from it.

    ``index_version`` builds a new version of the namespace beside the live one (e.g. for another model).
    """
    config = resolve_secret_blocks(
        load_config(namespace=namespace, home=home, index_version=index_version, cleanup="full" if full else None)
    )
    source = open_source(Path(path), max_file_bytes=config.max_file_bytes)
    stats = IngestStats()
    with namespace_lock(config.home, config.target_namespace), transaction() as txn:
        run_id = open_run(config, source.name)
        txn.set(RUN_KEY, (config, run_id))
        for group in batched(source.items(), DOCUMENT_GROUP):
            stats.add(index_group(config, run_id, group))
        stats.add(verify_run(config, run_id))
        stats.add(commit_run(config, run_id, source.name))
    if stats.chunks_written or stats.chunks_deleted:
        refresh_keyword_index(config)
    records = components_for(config).records
    records.save_run_stats(run_id, stats.as_dict())
    result = IngestResult(run_id, config.target_namespace, source.name, stats, records.quarantined(run_id))
    create_markdown_artifact(key="ingest-summary", markdown=summary_markdown(result), description="Ingest run")
    create_table_artifact(key="ingest-stats", table=summary_rows(result), description="Ingest counts and timings")
    return stats.as_dict()


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → ingest-manual → Run).
    ingest_flow.serve(name="ingest-manual", parameters={"path": "data/sample"})

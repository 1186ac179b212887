"""The ingest flow: load → chunk → dedupe → embed → upsert → validate → commit, two tasks per document group.

Each group is planned and embedded on the config's task runner (a thread, or Dask workers with
``task_runner="dask"``) and recorded and upserted in the flow's own process, in order.

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
from ragline.versions import write_namespace
from tasks.ingest import RUN_KEY, commit_run, open_run, prepare_group, refresh_keyword_index, verify_run, write_group
from tasks.runners import group_runner, groups_in_flight, results_in_order
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
    records = components_for(config).records
    target = write_namespace(records, config)  # resolved once: a promotion during the run cannot split it
    stats = IngestStats()
    with namespace_lock(config.home, target), transaction() as txn:
        run_id = open_run(config, target, source.name)
        txn.set(RUN_KEY, (config, target, run_id))
        with group_runner(config) as runner:  # plan and embed groups beside the flow (threads or Dask) ...
            groups = ({"config": config, "namespace": target, "run_id": run_id, "items": group}
                      for group in batched(source.items(), DOCUMENT_GROUP))
            for batch in results_in_order(runner, prepare_group, groups, groups_in_flight(config)):
                stats.add(batch.stats)
                stats.add(write_group(config, target, run_id, batch))  # ... and write them here, in order
        stats.add(verify_run(config, target, run_id))
        stats.add(commit_run(config, target, run_id, source.name))
    if stats.chunks_written or stats.chunks_deleted:
        refresh_keyword_index(config, target)
    records.save_run_stats(run_id, stats.as_dict())
    result = IngestResult(
        run_id, target, source.name, stats, records.quarantined(run_id), records.near_duplicates(run_id)
    )
    create_markdown_artifact(key="ingest-summary", markdown=summary_markdown(result), description="Ingest run")
    create_table_artifact(key="ingest-stats", table=summary_rows(result), description="Ingest counts and timings")
    return stats.as_dict()


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → ingest-manual → Run).
    ingest_flow.serve(name="ingest-manual", parameters={"path": "data/sample"})

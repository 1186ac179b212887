"""The backfill flow: a new source ingested in partitions, one committed run (one task) each, resumable.

Run it from Python (``backfill_flow("corpus.jsonl", namespace="docs")``), from the CLI (``ragline backfill PATH
--flow``) or from a deployment. Running it again with the same parameters skips the partitions already done.
It publishes ``backfill-progress`` (moves after every partition), ``backfill-ledger`` (table) and
``backfill-summary`` (Markdown).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from ragline.components import components_for
from ragline.config import load_config
from ragline.indexing.backfill import (
    BackfillResult,
    backfill_spec,
    ledger_rows,
    run_backfill,
    summary_markdown,
)
from ragline.sources import open_source
from ragline.tasks.backfill import run_partition
from ragline.tasks.secrets import resolve_secret_blocks


@flow(name="backfill")
def backfill_flow(
    path: str,
    namespace: str | None = None,
    partition_size: int | None = None,
    export_parquet: str | None = None,
    home: str | None = None,
    index_version: str | None = None,
) -> dict[str, object]:
    """Backfill ``path`` into ``namespace`` in partitions of ``partition_size`` documents.

    ``export_parquet`` writes Pinecone bulk-import Parquet files under that folder instead of upserting.
    """
    config = resolve_secret_blocks(
        load_config(namespace=namespace, home=home, index_version=index_version, backfill_partition_size=partition_size)
    )
    source = open_source(Path(path), max_file_bytes=config.max_file_bytes)
    c = components_for(config)
    spec = backfill_spec(c, source, Path(path), Path(export_parquet) if export_parquet else None)
    progress = cast(UUID, create_progress_artifact(0.0, key="backfill-progress", description=spec.backfill_id))

    def report(result: BackfillResult) -> None:
        update_progress_artifact(progress, 100.0 * result.progress)

    try:
        result = run_backfill(c, source, spec, run_partition=partial(run_partition, config), on_progress=report)
    finally:
        rows = c.records.backfills.ledger(spec.backfill_id)
        create_table_artifact(key="backfill-ledger", table=ledger_rows(rows), description="Backfill ledger")
    create_markdown_artifact(key="backfill-summary", markdown=summary_markdown(result, rows), description="Backfill")
    return result.as_dict()


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → backfill-manual → Run).
    backfill_flow.serve(name="backfill-manual", parameters={"path": "data/sample"})

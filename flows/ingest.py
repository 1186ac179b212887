"""The ingest flow: load → chunk → dedupe → embed → validate → upsert per batch, then verify and commit.

It runs the core's one ingest driver (``ragline.indexing.pipeline.ingest``) with task-backed steps, so every stage
of every batch is a task run named ``<stage>-<batch>`` in the Prefect UI. Run it from Python
(``ingest_flow("data/sample")``), the CLI (``ragline ingest PATH --flow``) or a deployment. A failure anywhere rolls
the whole run back.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ragline.components import components_for
from ragline.config import load_config
from ragline.indexing.pipeline import ingest
from ragline.indexing.report import result_dict, stage_rows, summary_markdown
from ragline.sources import open_source
from ragline.tasks.ingest import INGEST_TASKS
from ragline.tasks.secrets import resolve_secret_blocks
from ragline.tasks.steps import TaskSteps


@flow(name="ingest")
def ingest_flow(
    path: str,
    namespace: str | None = None,
    full: bool = False,
    home: str | None = None,
    index_version: str | None = None,
    force_delete: bool = False,
) -> dict[str, object]:
    """Index the documents under ``path`` into ``namespace``; ``full`` also deletes documents gone from it.

    ``index_version`` builds a new version of the namespace beside the live one (e.g. for another model);
    ``force_delete`` lets ``full`` delete more than ``cleanup_max_delete_fraction`` of the source's documents.
    """
    config = resolve_secret_blocks(
        load_config(
            namespace=namespace,
            home=home,
            index_version=index_version,
            cleanup="full" if full else None,
            cleanup_max_delete_fraction=1.0 if force_delete else None,
        )
    )
    source = open_source(Path(path), max_file_bytes=config.max_file_bytes)
    result = ingest(components_for(config), source, steps=TaskSteps(config, INGEST_TASKS))
    create_markdown_artifact(key="ingest-summary", markdown=summary_markdown(result), description="Ingest run")
    create_table_artifact(key="ingest-stages", table=stage_rows(result), description="Seconds per stage")
    return result_dict(result)


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → ingest-manual → Run).
    ingest_flow.serve(name="ingest-manual", parameters={"path": "data/sample"})

"""The nightly evaluation flow: every golden set × retrieval mode scored, published, recorded, and checked.

Golden sets come from the config (``eval_sample_path`` against the live namespace; each of
``eval_beir_datasets`` ingested into ``beir-<name>`` first). The run publishes ``evaluation-report`` (Markdown
with the chart embedded), ``evaluation-metrics`` (a table) and ``evaluation-chart`` (the PNG as a data URI:
Prefect's image artifacts take URLs only), appends ``<home>/evaluation/history.parquet``, and fails when a
mode's nDCG@10 fell more than ``eval_tolerance`` below its last good run.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from flows.ingest import ingest_flow
from ragline.config import load_config
from ragline.errors import ValidationFailed
from ragline.evaluation.datasets import load_dataset
from ragline.evaluation.report import evaluation_markdown, metric_rows, png_data_uri
from ragline.evaluation.runner import EvaluationReport, check_modes
from ragline.evaluation.suite import golden_sets
from ragline.ingest import new_run_id
from tasks.evaluate import check_coverage, evaluate_mode, record_run
from tasks.secrets import resolve_secret_blocks


@flow(name="evaluate")
def evaluate_flow(
    home: str | None = None,
    namespace: str | None = None,
    beir: list[str] | None = None,
    modes: list[str] | None = None,
    tolerance: float | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate the golden sets; returns dataset → mode → mean metrics and latency percentiles."""
    config = resolve_secret_blocks(
        load_config(home=home, namespace=namespace, eval_beir_datasets=beir, eval_modes=modes, eval_tolerance=tolerance)
    )
    retrieval_modes = check_modes(config.eval_modes)
    reports = []
    for golden in golden_sets(config):
        if golden.ingest:
            ingest_flow(str(golden.path), namespace=golden.namespace, home=str(config.home))
        dataset = load_dataset(golden.path)
        check_coverage(config, dataset, golden.namespace)
        results = [evaluate_mode(config, dataset, golden.namespace, mode) for mode in retrieval_modes]
        reports.append(EvaluationReport(dataset.name, golden.namespace, config.eval_k, tuple(results)))
    run = record_run(config, reports, new_run_id())
    chart = run.chart.read_bytes()
    markdown = evaluation_markdown(
        run.reports, run.trends, run_id=run.run_id, tolerance=config.eval_tolerance, chart_png=chart
    )
    create_markdown_artifact(key="evaluation-report", markdown=markdown, description="Retrieval evaluation")
    create_table_artifact(key="evaluation-metrics", table=metric_rows(run.reports, run.trends), description="Metrics")
    create_image_artifact(image_url=png_data_uri(chart), key="evaluation-chart", description="nDCG@10 per mode")
    if run.failures:
        raise ValidationFailed("retrieval quality regressed", run.failures)
    return {r.dataset: r.metrics.to_dict(orient="index") for r in reports}


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → evaluate-manual → Run).
    evaluate_flow.serve(name="evaluate-manual")

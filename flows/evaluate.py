"""The nightly evaluation flow: every golden set × retrieval mode scored, published, recorded, and checked.

Golden sets come from the config (``eval_sample_path`` against the live namespace; each of
``eval_beir_datasets`` ingested into ``beir-<name>`` first). The run publishes ``evaluation-report`` (Markdown
with the chart embedded), ``evaluation-metrics`` (a table) and ``evaluation-chart`` (the PNG as a data URI:
Prefect's image artifacts take URLs only), appends ``<home>/evaluation/history.parquet``, and fails when a
mode's nDCG@10 fell more than ``eval_tolerance`` below its last good run. A golden set with a ``qa.jsonl`` also
has its answers scored (one task per set); their metrics and trend join the report, the history and the
``evaluation-answers`` table.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from flows.ingest import ingest_flow
from ragline.components import components_for
from ragline.config import load_config
from ragline.errors import ValidationFailed
from ragline.evaluation.datasets import load_dataset
from ragline.evaluation.report import answer_metric_rows, evaluation_markdown, metric_rows, png_data_uri
from ragline.evaluation.runner import EvaluationReport, check_modes
from ragline.evaluation.suite import golden_sets, qa_set
from ragline.ingest import new_run_id
from ragline.versions import read_namespace
from tasks.evaluate import check_coverage, evaluate_answers, evaluate_mode, record_run
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
    reports, answers = [], []
    for golden in golden_sets(config):
        if golden.ingest:
            ingest_flow(str(golden.path), namespace=golden.namespace, home=str(config.home))
        dataset = load_dataset(golden.path)
        target = read_namespace(components_for(config).records, golden.namespace)  # the alias's live version
        check_coverage(config, dataset, target)
        results = [evaluate_mode(config, dataset, target, mode) for mode in retrieval_modes]
        reports.append(EvaluationReport(dataset.name, target, config.eval_k, tuple(results)))
        qa = qa_set(config, golden)
        if qa is not None:
            answers.append(evaluate_answers(config, qa, dataset.name, target))
    run = record_run(config, reports, new_run_id(), answers)
    chart = run.chart.read_bytes()
    markdown = evaluation_markdown(
        run.reports, run.trends, run_id=run.run_id, tolerance=config.eval_tolerance, chart_png=chart,
        answers=run.answers, answer_trends=run.answer_trends,
    )
    create_markdown_artifact(key="evaluation-report", markdown=markdown, description="Retrieval evaluation")
    create_table_artifact(key="evaluation-metrics", table=metric_rows(run.reports, run.trends), description="Metrics")
    create_image_artifact(image_url=png_data_uri(chart), key="evaluation-chart", description="nDCG@10 per mode")
    if run.answers:
        create_table_artifact(key="evaluation-answers", table=answer_metric_rows(run.answers, run.answer_trends),
                              description="Answer quality")
    if run.failures:
        raise ValidationFailed("retrieval quality regressed", run.failures)
    result = {r.dataset: r.metrics.to_dict(orient="index") for r in reports}
    for answer in run.answers:
        result[answer.dataset][answer.label] = answer.summary()
    return result


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → evaluate-manual → Run).
    evaluate_flow.serve(name="evaluate-manual")

"""The nightly evaluation flow: every golden set × retrieval mode scored, published, recorded, and checked.

It runs the core's one evaluation driver (``ragline.evaluation.suite.run_suite``) with task-backed steps: one task
run per golden set and mode (``<dataset>-<mode>``). Golden sets come from the config (``eval_sample_path`` against
the live namespace; each of ``eval_beir_datasets`` ingested into ``beir-<name>`` first). The run publishes
``evaluation-report`` (Markdown with the chart embedded), ``evaluation-metrics`` (a table, one row per dataset,
mode and metric) and, with a ``qa.jsonl``, ``evaluation-answers``; it appends the record store's evaluation
history (shared by every host) and fails when a mode's nDCG@10 fell more than ``eval_tolerance`` below its last good
run.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ragline.components import components_for
from ragline.config import load_config
from ragline.errors import ValidationFailed
from ragline.evaluation.report import answer_metric_rows, evaluation_markdown, metric_rows
from ragline.evaluation.suite import golden_sets, run_suite
from ragline.indexing.journal import new_run_id
from ragline.tasks.evaluate import EVALUATE_TASKS
from ragline.tasks.secrets import resolve_secret_blocks
from ragline.tasks.steps import TaskSteps


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
    steps = TaskSteps(config, EVALUATE_TASKS)
    run = run_suite(components_for(config), golden_sets(config), run_id=new_run_id(), steps=steps)
    markdown = evaluation_markdown(
        run.reports,
        run.trends,
        run_id=run.run_id,
        tolerance=config.eval_tolerance,
        chart_png=run.chart.read_bytes(),
        answers=run.answers,
        answer_trends=run.answer_trends,
    )
    create_markdown_artifact(key="evaluation-report", markdown=markdown, description="Retrieval evaluation")
    create_table_artifact(key="evaluation-metrics", table=metric_rows(run.reports, run.trends), description="Metrics")
    if run.answers:
        create_table_artifact(
            key="evaluation-answers", table=answer_metric_rows(run.answers, run.answer_trends), description="Answers"
        )
    if run.failures:
        raise ValidationFailed("retrieval quality regressed", run.failures)
    result = {r.dataset: r.metrics.to_dict(orient="index") for r in run.reports}
    for answer in run.answers:
        result[answer.dataset][answer.label] = answer.summary()
    return result


if __name__ == "__main__":
    # Serve the flow so runs can be started from the Prefect UI (Deployments → evaluate-manual → Run).
    evaluate_flow.serve(name="evaluate-manual")

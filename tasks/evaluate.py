"""Thin Prefect tasks over the evaluation driver's stages: one task run per golden set and retrieval mode, named
``<dataset>-<mode>``, never one per query. A golden set's corpus is ingested with the ingest stages' tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.evaluation import runner, suite
from ragline.evaluation.answers import AnswerReport
from ragline.evaluation.datasets import EvalDataset
from ragline.evaluation.runner import EvaluationReport, ModeResult
from ragline.tasks.ingest import INGEST_TASKS
from ragline.tasks.steps import TaskRegistry


@task(name="coverage", cache_policy=NO_CACHE)
def check_coverage(config: RaglineConfig, dataset: EvalDataset, namespace: str, ingested: bool = False) -> None:
    """Fail early when ``namespace`` holds none of the documents the golden set judges."""
    runner.check_coverage(components_for(config), dataset, namespace, ingested)


@task(name="score", cache_policy=NO_CACHE)
def score_mode(config: RaglineConfig, dataset: EvalDataset, namespace: str, mode: str) -> ModeResult:
    """Every query of one golden set through one retrieval mode, scored and timed."""
    return suite.score_mode(components_for(config), dataset, namespace, mode)


@task(name="answers", cache_policy=NO_CACHE)
def answer_report(config: RaglineConfig, qa: Path, dataset: str, namespace: str) -> AnswerReport:
    """Every question of one golden QA set answered and scored."""
    return suite.answer_report(components_for(config), qa, dataset, namespace)


@task(name="record", cache_policy=NO_CACHE)
def finish_run(
    config: RaglineConfig,
    reports: Sequence[EvaluationReport],
    run_id: str,
    timestamp: datetime,
    answers: Sequence[AnswerReport] = (),
) -> suite.EvaluationRun:
    """Compare with the history, append this run (and its answer reports) to it and draw the chart."""
    return suite.finish_run(components_for(config), reports, run_id, timestamp, answers)


EVALUATE_TASKS: TaskRegistry = {
    **INGEST_TASKS,
    runner.check_coverage: check_coverage,
    suite.score_mode: score_mode,
    suite.answer_report: answer_report,
    suite.finish_run: finish_run,
}
"""The evaluation driver's tasks (and the ingest stages', for golden sets ingested first), for ``TaskSteps``."""

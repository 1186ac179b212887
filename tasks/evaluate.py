"""Thin Prefect tasks over ragline's evaluation: one task run per golden set and retrieval mode, never per query."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragline.components import components_for
from ragline.config import RaglineConfig
from ragline.evaluation import runner, suite
from ragline.evaluation.answers import AnswerReport
from ragline.evaluation.datasets import EvalDataset
from ragline.evaluation.runner import EvaluationReport, ModeResult


@task(cache_policy=NO_CACHE)
def check_coverage(config: RaglineConfig, dataset: EvalDataset, namespace: str) -> int:
    """Fail early when ``namespace`` holds none of the documents the golden set judges."""
    return runner.check_coverage(components_for(config), dataset, namespace)


@task(cache_policy=NO_CACHE)
def evaluate_mode(config: RaglineConfig, dataset: EvalDataset, namespace: str, mode: str) -> ModeResult:
    """Every query of one golden set through one retrieval mode, scored and timed."""
    return runner.evaluate_mode(
        components_for(config), dataset, namespace=namespace, mode=mode, k=config.eval_k, depth=config.eval_depth
    )


@task(cache_policy=NO_CACHE)
def evaluate_answers(config: RaglineConfig, qa: Path, dataset: str, namespace: str) -> AnswerReport:
    """Every question of one golden QA set answered and scored (one task run per set)."""
    return suite.answer_report(components_for(config), qa, dataset, namespace)


@task(cache_policy=NO_CACHE)
def record_run(
    config: RaglineConfig, reports: Sequence[EvaluationReport], run_id: str, answers: Sequence[AnswerReport] = ()
) -> suite.EvaluationRun:
    """Compare with the history, append this run (and its answer reports) to it and draw the chart."""
    return suite.finish_run(config, reports, run_id=run_id, timestamp=datetime.now(UTC), answers=answers)

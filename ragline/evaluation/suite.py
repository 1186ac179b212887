"""The nightly suite: which golden sets run against which namespace, and what a finished run leaves behind.

The sample set (``eval_sample_path``, default ``data/sample``) is evaluated against the live namespace as it is.
Each BEIR folder in ``eval_beir_datasets`` is first ingested into its own namespace ``beir-<folder name>``
(incremental, so an unchanged corpus costs a second, and full: documents gone from the folder are deleted; the
embedding cache is shared across namespaces).
A golden set folder that holds a ``qa.jsonl`` also has its answers evaluated (``eval_answers``, on by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ragline.components import Components
from ragline.config import RaglineConfig
from ragline.errors import ConfigError
from ragline.evaluation.answers import QA_FILE, AnswerReport, evaluate_answers, load_qa
from ragline.evaluation.datasets import EvalDataset, load_dataset
from ragline.evaluation.history import EvaluationHistory, ModeTrend, history_path, record_answers, record_run
from ragline.evaluation.report import write_chart
from ragline.evaluation.runner import EvaluationReport, ModeResult, check_coverage, check_modes, evaluate_mode
from ragline.indexing.steps import DirectSteps, Steps
from ragline.names import check_name
from ragline.versions.aliases import read_namespace

CHART_FILE = "ndcg.png"


@dataclass(frozen=True)
class GoldenSet:
    """A golden set folder, the namespace it is evaluated against (resolved through its alias when evaluated), and
    whether its corpus is ingested there first."""

    path: Path
    namespace: str
    ingest: bool


def beir_namespace(path: Path) -> str:
    """The namespace a BEIR folder is ingested into: ``beir-<folder name>``; ``ConfigError`` when the folder's name
    makes no valid namespace."""
    namespace = f"beir-{Path(path).absolute().name}"
    try:
        check_name(namespace)
    except ValueError as exc:
        raise ConfigError(f"golden set {path}: its namespace {namespace!r} {exc}; rename the folder") from None
    return namespace


def golden_sets(config: RaglineConfig) -> list[GoldenSet]:
    """The configured golden sets: the sample set on the live namespace, then each BEIR set on its own;
    ``ConfigError`` for two BEIR folders of one name (one namespace and one history would hold both)."""
    sets = [GoldenSet(Path(config.eval_sample_path), config.namespace, False)] if config.eval_sample_path else []
    folders: dict[str, Path] = {}
    for path in map(Path, config.eval_beir_datasets):
        namespace = beir_namespace(path)
        if namespace in folders and folders[namespace].resolve() != path.resolve():
            raise ConfigError(
                f"golden sets {folders[namespace]} and {path} share the folder name {path.absolute().name!r}, "
                f"so both would go to namespace {namespace!r}: rename one"
            )
        folders.setdefault(namespace, path)
    return sets + [GoldenSet(path, namespace, True) for namespace, path in folders.items()]


@dataclass(frozen=True)
class EvaluationRun:
    """A recorded run: its reports, the trend of every mode, and the chart drawn from the history."""

    run_id: str
    reports: tuple[EvaluationReport, ...]
    trends: tuple[ModeTrend, ...]
    chart: Path
    answers: tuple[AnswerReport, ...] = ()
    answer_trends: tuple[ModeTrend, ...] = ()

    @property
    def failures(self) -> list[str]:
        """One line per mode whose nDCG@10 regressed beyond the tolerance."""
        return [t.failure() for t in self.trends if t.regressed]


def finish_run(
    c: Components,
    reports: Sequence[EvaluationReport],
    run_id: str,
    timestamp: datetime,
    answers: Sequence[AnswerReport] = (),
) -> EvaluationRun:
    """Check against and append to the record store's evaluation history (answer reports too), then write its copy
    ``<home>/evaluation/history.parquet`` and draw ``<home>/evaluation/ndcg.png``."""
    config = c.config
    history = EvaluationHistory(c.records.evaluations)
    copy = history_path(config.home)
    history.adopt(copy)  # what only the home's copy holds: its history from before the record store kept it
    trends = record_run(history, reports, run_id=run_id, timestamp=timestamp, tolerance=config.eval_tolerance)
    answer_trends = record_answers(history, answers, run_id=run_id, timestamp=timestamp)
    chart = write_chart(history.export(copy), copy.parent / CHART_FILE, [r.dataset for r in reports])
    return EvaluationRun(run_id, tuple(reports), tuple(trends), chart, tuple(answers), tuple(answer_trends))


def qa_set(config: RaglineConfig, golden: GoldenSet) -> Path | None:
    """The golden set's ``qa.jsonl`` when answers are evaluated (``eval_answers``) and it has one."""
    path = golden.path / QA_FILE
    return path if config.eval_answers and path.is_file() else None


def answer_report(c: Components, qa: Path, dataset: str, namespace: str) -> AnswerReport:
    """The golden QA set ``qa`` answered from ``namespace`` (the configured answerer, hybrid retrieval)."""
    return evaluate_answers(c, load_qa(qa), dataset=dataset, namespace=namespace)


def score_mode(c: Components, dataset: EvalDataset, namespace: str, mode: str) -> ModeResult:
    """Every query of the golden set through one retrieval mode, scored and timed."""
    return evaluate_mode(c, dataset, namespace=namespace, mode=mode, k=c.config.eval_k, depth=c.config.eval_depth)


def run_suite(
    c: Components,
    sets: Sequence[GoldenSet],
    *,
    run_id: str,
    timestamp: datetime | None = None,
    steps: Steps | None = None,
) -> EvaluationRun:
    """Evaluate every golden set and record the run: the one evaluation driver.

    ``steps`` runs the stages (default: here, directly; the evaluation flow passes task-backed steps, one task run
    per golden set and mode, named ``<dataset>-<mode>``).
    """
    from ragline.indexing.pipeline import ingest
    from ragline.sources import open_source

    steps = steps or DirectSteps(c)
    modes = check_modes(c.config.eval_modes)
    reports, answers = [], []
    datasets = [load_dataset(golden.path) for golden in sets]  # every set checked before any is ingested
    for golden, dataset in zip(sets, datasets):
        namespace = read_namespace(c.records, golden.namespace)
        if golden.ingest:
            source = open_source(golden.path, max_file_bytes=c.config.max_file_bytes)
            # the namespace mirrors the folder, whatever it deletes
            ingest(c, source, namespace=namespace, cleanup="full", max_delete_fraction=1.0, steps=steps)
        steps.run(check_coverage, f"coverage-{dataset.name}", dataset, namespace, golden.ingest)
        results = [steps.run(score_mode, f"{dataset.name}-{mode}", dataset, namespace, mode) for mode in modes]
        reports.append(EvaluationReport(dataset.name, namespace, c.config.eval_k, tuple(results)))
        qa = qa_set(c.config, golden)
        if qa is not None:
            answers.append(steps.run(answer_report, f"{dataset.name}-answers", qa, dataset.name, namespace))
    return steps.run(finish_run, "record", reports, run_id, timestamp or datetime.now(UTC), answers)

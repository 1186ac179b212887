"""Retrieval evaluation: golden sets, ranking metrics, per-mode runs, history with a regression check, reports.

datasets  golden sets (BEIR folders, the sample set) keyed by ragline doc_ids
metrics   nDCG@10, MRR@10, Recall@k, P@k, MAP per query; latency percentiles
runner    ``evaluate(components, dataset, namespace=..., modes=...)`` → ``EvaluationReport``
history   Parquet history, trends, the nDCG@10 regression check against the last good run
report    Markdown, table rows and the PNG chart
suite     the configured golden sets and the direct (no Prefect) nightly driver
"""

from ragline.evaluation.datasets import EvalDataset, load_dataset
from ragline.evaluation.history import EvaluationHistory, history_path
from ragline.evaluation.runner import EvaluationReport, ModeResult, evaluate

__all__ = [
    "EvalDataset",
    "EvaluationHistory",
    "EvaluationReport",
    "ModeResult",
    "evaluate",
    "history_path",
    "load_dataset",
]

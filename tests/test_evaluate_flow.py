"""The evaluation flow under a Prefect test harness, on the sample set with the real local embedder and retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ragline.components import build_components, make_record_store
from ragline.config import RaglineConfig
from ragline.errors import ConfigError, ValidationFailed
from ragline.evaluation.answers import ABSTENTION, CITATION_RECALL
from ragline.evaluation.datasets import load_dataset
from ragline.evaluation.history import EvaluationHistory, history_path, history_rows
from ragline.evaluation.metrics import NDCG
from ragline.evaluation.runner import evaluate
from ragline.evaluation.suite import golden_sets, run_suite
from ragline.indexing.pipeline import ingest
from ragline.sources import open_source
from tests.test_evaluation_metrics import PNG_MAGIC, T0, report_with

pytestmark = pytest.mark.slow  # retrieval quality needs the real model


@pytest.fixture(scope="session")
def embedder(local_embedder):  # type: ignore[no-untyped-def]
    return local_embedder


@pytest.fixture(autouse=True)
def real_model_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGLINE_EMBEDDER", "local")


SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
LIVE = "live"
ANSWERS = "answers-extractive"
TINY_DOCS = {
    "1": "Sourdough bread rises because wild yeast and lactic bacteria ferment the flour.",
    "2": "A suspension bridge hangs its deck from cables draped between tall towers.",
    "3": "Glaciers carve U-shaped valleys as the ice grinds slowly over the bedrock.",
    "4": "The violin's bridge carries the vibration of the strings to its wooden body.",
    "5": "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
}
TINY_QUERIES = {"a": "how do wild yeasts make sourdough rise", "b": "cables and towers of a suspension bridge"}
TINY_QRELS = "query-id\tcorpus-id\tscore\na\t1\t2\nb\t2\t2\nb\t4\t0\n"


@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path, embedder) -> RaglineConfig:
    """A temp home whose live namespace holds the sample corpus; the flow reads the same settings from the env."""
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.setenv("RAGLINE_NAMESPACE", LIVE)
    monkeypatch.setenv("RAGLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGLINE_EVAL_SAMPLE_PATH", str(SAMPLE))
    config = RaglineConfig()
    c = build_components(config, embedder=embedder)
    ingest(c, open_source(SAMPLE))
    c.close()
    return config


def tiny_beir(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, records in (("corpus.jsonl", TINY_DOCS), ("queries.jsonl", TINY_QUERIES)):
        (root / name).write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in records.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(TINY_QRELS)
    return root


def test_flow_evaluates_golden_sets_publishes_artifacts_and_records_history(
    harness: None, live_env: RaglineConfig, tmp_path: Path
) -> None:
    from prefect.artifacts import Artifact

    from ragline.flows.evaluate import evaluate_flow

    result = evaluate_flow(beir=[str(tiny_beir(tmp_path / "tiny"))])
    assert set(result) == {"sample", "tiny"} and set(result["sample"]) == {"dense", "bm25", "hybrid", ANSWERS}
    answers = result["sample"].pop(ANSWERS)  # data/sample/qa.jsonl, answered offline (extractive)
    assert answers[ABSTENTION] > 0.8 and answers[CITATION_RECALL] > 0.6
    for mode, metrics in result["sample"].items():
        assert metrics[NDCG] > 0.6, mode  # the sample set's queries are answerable; a broken mapping scores ~0
        assert 0 < metrics["p50 ms"] <= metrics["p95 ms"] <= metrics["p99 ms"]
    assert result["tiny"]["bm25"]["MRR@10"] == 1.0

    report = Artifact.get("evaluation-report")
    assert report is not None
    assert "## sample: namespace `live`, 40 queries" in report.data
    assert "## tiny: namespace `beir-tiny`, 2 queries" in report.data and "baseline" in report.data
    assert "](data:image/png;base64," in report.data
    assert "## Answers on sample: extractive answerer" in report.data
    answer_table = Artifact.get("evaluation-answers")
    assert answer_table is not None and "abstention accuracy" in str(answer_table.data)
    table = Artifact.get("evaluation-metrics")
    assert table is not None and "hybrid" in str(table.data) and "nDCG@10" in str(table.data)
    assert Artifact.get("evaluation-chart") is None  # the chart is inside the report, not a page-wide data URI

    rows = pd.read_parquet(history_path(live_env.home))  # the home's copy of the record store's history
    assert sorted(zip(rows["dataset"], rows["mode"], rows["namespace"])) == sorted(
        [(d, m, ns) for d, ns in (("sample", LIVE), ("tiny", "beir-tiny")) for m in ("dense", "bm25", "hybrid")]
        + [("sample", ANSWERS, LIVE)]
    )
    assert rows["good"].all() and rows["run_id"].nunique() == 1
    assert (live_env.home / "evaluation" / "ndcg.png").read_bytes().startswith(PNG_MAGIC)


def test_flow_fails_on_a_regression_and_still_publishes(
    harness: None, live_env: RaglineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_EVAL_ANSWERS", "false")  # answers are covered above; keep this test quick
    from prefect.artifacts import Artifact

    from ragline.flows.evaluate import evaluate_flow

    records = make_record_store(live_env)
    history = EvaluationHistory(records.evaluations)
    seeded = history_rows([report_with({"dense": 1.5, "bm25": 0.0})], [], run_id="seeded", timestamp=T0)
    history.append(seeded)  # a last good dense run no real run can reach

    with pytest.raises(ValidationFailed, match=r"sample/dense: nDCG@10 .* below the last good run's 1.5000"):
        evaluate_flow(modes=["dense", "bm25"])

    report = Artifact.get("evaluation-report")
    assert report is not None and "REGRESSION" in report.data and "## Regressions" in report.data
    rows = history.read()
    records.close()
    latest = rows[rows["run_id"] != "seeded"].set_index("mode")
    assert not latest.loc["dense", "good"] and latest.loc["bm25", "good"]


def test_direct_suite_without_prefect(live_env: RaglineConfig, embedder) -> None:
    c = build_components(live_env.model_copy(update={"eval_answers": False}), embedder=embedder)
    run = run_suite(c, golden_sets(live_env), run_id="direct")  # answers: tests/test_answer_eval.py
    assert [r.dataset for r in run.reports] == ["sample"] and run.failures == []
    assert list(run.reports[0].metrics.index) == ["dense", "bm25", "hybrid"]
    assert len(run.reports[0].per_query()) == 3 * 40 and run.chart.is_file()


def test_evaluating_a_namespace_without_the_corpus_fails_early(live_env: RaglineConfig, embedder) -> None:
    c = build_components(live_env, embedder=embedder)
    with pytest.raises(ConfigError, match="holds none of the"):
        evaluate(c, load_dataset(SAMPLE), namespace="empty", modes=["bm25"])

"""Evaluation core without retrieval: metrics by hand and against pytrec_eval, datasets, history, reports."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ragline.errors import SourceError
from ragline.evaluation.datasets import load_dataset
from ragline.evaluation.history import EvaluationHistory, record_run
from ragline.evaluation.metrics import (
    MAP,
    MRR,
    NDCG,
    average_precision,
    latency_percentiles,
    mean_metrics,
    ndcg_at,
    precision_at,
    query_metrics,
    recall_at,
    reciprocal_rank,
)
from ragline.evaluation.report import chart, evaluation_markdown, metric_rows, run_labels, trend_arrow, write_chart
from ragline.evaluation.runner import EvaluationReport, ModeResult, ranked_documents
from ragline.records import Document
from ragline.retrieval.hits import Hit
from ragline.sources import open_source
from tests.conftest import CRANFIELD

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# --- metrics by hand -------------------------------------------------------------------------------------------

RANKING = ["a", "b", "c", "d", "e"]
JUDGED = {"b": 2, "d": 1, "x": 3, "a": 0}  # relevant: b, d, x; "a" judged not relevant


def test_metrics_match_hand_computed_values() -> None:
    dcg = 2 / math.log2(3) + 1 / math.log2(5)  # b at rank 2, d at rank 4
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)  # x, b, d
    assert ndcg_at(RANKING, JUDGED) == pytest.approx(dcg / ideal)
    assert ndcg_at(RANKING, JUDGED) == pytest.approx(0.355436, abs=1e-6)
    assert reciprocal_rank(RANKING, JUDGED) == 0.5
    assert recall_at(RANKING, JUDGED, 5) == pytest.approx(2 / 3)
    assert recall_at(RANKING, JUDGED, 2) == pytest.approx(1 / 3)
    assert precision_at(RANKING, JUDGED, 5) == 0.4
    assert precision_at(RANKING, JUDGED, 10) == 0.2  # divides by k even when fewer were retrieved
    assert average_precision(RANKING, JUDGED) == pytest.approx((1 / 2 + 2 / 4) / 3)  # x never found


def test_metrics_edge_cases() -> None:
    perfect = ["x", "b", "d"]
    assert ndcg_at(perfect, JUDGED) == pytest.approx(1.0)
    assert average_precision(perfect, JUDGED) == pytest.approx(1.0)
    late = [f"n{i}" for i in range(10)] + ["b"]  # first relevant at rank 11
    assert reciprocal_rank(late, JUDGED) == 0.0 and ndcg_at(late, JUDGED) == 0.0
    assert average_precision(late, JUDGED) == pytest.approx(1 / 11 / 3)  # MAP reads the whole ranking
    assert query_metrics([], JUDGED, 10) == {NDCG: 0.0, MRR: 0.0, "Recall@10": 0.0, "P@10": 0.0, MAP: 0.0}
    assert set(query_metrics(RANKING, {"a": 0}, 5).values()) == {0.0}  # nothing relevant: 0, not a division error
    assert ndcg_at(["b", "d"], {"b": 1, "d": 1}, 1) == 1.0  # the ideal is cut at k too


def test_graded_gains_are_linear() -> None:
    # Linear gains (trec_eval, ranx "ndcg"): ranking grade 1 above grade 2 scores (1 + 2/log2 3) / (2 + 1/log2 3)
    # = 0.8597; Burges' 2^g − 1 gains would give (1 + 3/log2 3) / (3 + 1/log2 3) = 0.7967.
    assert ndcg_at(["lo", "hi"], {"hi": 2, "lo": 1}) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at(["lo", "hi"], {"hi": 2, "lo": 1}) == pytest.approx(0.859719, abs=1e-6)


def test_mean_metrics_weighs_queries_equally() -> None:
    assert mean_metrics([{NDCG: 1.0, MAP: 0.5}, {NDCG: 0.0, MAP: 0.25}]) == {NDCG: 0.5, MAP: 0.375}
    assert mean_metrics([]) == {}


# --- agreement with trec_eval (pytrec_eval) --------------------------------------------------------------------


def _random_case(rng: random.Random, queries: int = 60) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    pool = [f"d{i}" for i in range(40)]
    qrels, runs = {}, {}
    for q in range(queries):
        judged = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in rng.sample(pool, rng.randint(1, 15))}
        judged[rng.choice(list(judged))] = rng.randint(1, 3)  # at least one relevant, as in loaded datasets
        qrels[f"q{q}"] = judged
        runs[f"q{q}"] = rng.sample(pool, rng.randint(1, 30))
    return qrels, runs


def _trec(qrels: dict[str, dict[str, int]], runs: dict[str, list[str]], measures: set[str]) -> dict[str, dict]:
    import pytrec_eval

    scored = {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in runs.items()}  # distinct, best first
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(scored)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [5, 10])
def test_metrics_agree_with_pytrec_eval(seed: int, k: int) -> None:
    qrels, runs = _random_case(random.Random(seed))
    full = _trec(qrels, runs, {"ndcg_cut", "P", "recall", "map"})
    top10 = _trec(qrels, {q: r[:10] for q, r in runs.items()}, {"recip_rank"})  # MRR@10 = recip_rank on the top 10
    ours = {q: query_metrics(runs[q], qrels[q], k) for q in qrels}
    for q in qrels:
        assert ours[q][NDCG] == pytest.approx(full[q]["ndcg_cut_10"], abs=1e-6)
        assert ours[q][f"Recall@{k}"] == pytest.approx(full[q][f"recall_{k}"], abs=1e-6)
        assert ours[q][f"P@{k}"] == pytest.approx(full[q][f"P_{k}"], abs=1e-6)
        assert ours[q][MAP] == pytest.approx(full[q]["map"], abs=1e-6)
        assert ours[q][MRR] == pytest.approx(top10[q]["recip_rank"], abs=1e-6)
    means = mean_metrics(ours.values())
    assert means[NDCG] == pytest.approx(np.mean([full[q]["ndcg_cut_10"] for q in qrels]), abs=1e-6)
    assert means[MAP] == pytest.approx(np.mean([full[q]["map"] for q in qrels]), abs=1e-6)


# --- latency and documents from chunks -------------------------------------------------------------------------


def test_latency_percentiles_match_numpy_in_ms() -> None:
    seconds = [random.Random(3).expovariate(20) for _ in range(101)]
    got = latency_percentiles(seconds)
    for p in (50, 95, 99):
        assert got[f"p{p} ms"] == pytest.approx(1000 * np.percentile(seconds, p), rel=1e-12)
    assert latency_percentiles([0.002]) == {"p50 ms": 2.0, "p95 ms": 2.0, "p99 ms": 2.0}
    assert all(math.isnan(v) for v in latency_percentiles([]).values())


def test_chunk_hits_rank_documents_by_their_best_chunk() -> None:
    hits = [Hit(f"{d}#{n}", d, s, "", {}) for d, n, s in [("A", 1, 0.9), ("B", 0, 0.8), ("A", 0, 0.7), ("C", 2, 0.6)]]
    assert ranked_documents(hits) == ["A", "B", "C"]


# --- datasets --------------------------------------------------------------------------------------------------


def test_sample_set_qrels_are_doc_ids() -> None:
    sample = load_dataset(REPO / "data" / "sample")
    assert sample.name == "sample" and len(sample.queries) == len(sample.qrels) == 40
    assert sample.qrels["q1"] == {"sample/guides/chunking-strategies.md": 2, "sample/guides/token-budgets.md": 1}
    assert all((REPO / "data" / doc_id).is_file() for doc_id in sample.judged_doc_ids())


def test_beir_corpus_ids_become_doc_ids() -> None:
    cranfield = load_dataset(CRANFIELD)
    assert cranfield.qrels["1"]["cranfield/184"] == 1
    assert len(cranfield.queries) == 95 and cranfield.queries["1"].startswith("what similarity laws")


def _write(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_beir_layout_with_top_level_qrels_graded_and_unjudged_queries(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "tiny",
        {
            "corpus.jsonl": '{"_id": "1", "text": "x"}\n',
            "queries.jsonl": '{"_id": "a", "text": "alpha"}\n{"_id": "b", "text": "beta"}\n{"_id": 7, "text": "n"}\n',
            "qrels.tsv": "query-id\tcorpus-id\tscore\na\t1\t2\na\t2\t0\nb\t1\t0\n\n7\t2\t1\n",
        },
    )
    tiny = load_dataset(root)
    assert tiny.qrels == {"a": {"tiny/1": 2, "tiny/2": 0}, "7": {"tiny/2": 1}}  # b has no relevant judgment
    assert tiny.queries == {"a": "alpha", "7": "n"}
    assert load_dataset(root, name="renamed").qrels["a"] == {"renamed/1": 2, "renamed/2": 0}


def test_doc_id_qrels_are_encoded_as_ingest_encodes_them(tmp_path: Path) -> None:
    files = {
        "café.md": "# Café",
        "queries.jsonl": '{"_id": "q", "text": "coffee"}\n',
        "qrels.tsv": "q\tdocs/café.md\t1\n",
    }
    root = _write(tmp_path / "docs", files)
    (document,) = [item for item in open_source(root).items() if isinstance(item, Document)]
    assert load_dataset(root).qrels == {"q": {document.doc_id: 1}} and document.doc_id == "docs/caf%C3%A9.md"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no queries.jsonl"),
        ({"queries.jsonl": '{"_id": "a", "text": "t"}\n'}, "no qrels"),
        ({"queries.jsonl": '{"_id": "a", "text": "t"}\n', "qrels.tsv": "a\td\n"}, "line 1: expected 3"),
        ({"queries.jsonl": '{"_id": "a", "text": "t"}\n', "qrels.tsv": "a\td\t1\na\te\thigh\n"}, "line 2: score"),
        ({"queries.jsonl": '{"_id": "a", "text": "t"}\n', "qrels.tsv": "a\td\t0\n"}, "no query has a relevant"),
        ({"queries.jsonl": '{"_id": "a", "text": "t"}\n', "qrels.tsv": "z\td\t1\n"}, "have no text"),
        ({"queries.jsonl": "not json\n", "qrels.tsv": "a\td\t1\n"}, "queries.jsonl line 1"),
        ({"queries.jsonl": '{"_id": "a", "text": " \\t "}\n', "qrels.tsv": "a\td\t1\n"}, "query 'a' has no text"),
        ({"queries.jsonl": "\n", "qrels.tsv": "a\td\t1\n"}, "queries.jsonl holds no queries"),
        (
            {"queries.jsonl": '{"_id": "a", "text": "t"}\n{"_id": "a", "text": "u"}\n', "qrels.tsv": "a\td\t1\n"},
            "line 2: query id 'a' again \\(first on line 1\\)",
        ),
        ({"queries.jsonl": '{"_id": "a", "text": "t"}\n', "qrels.tsv": "a\td\t1.0\n"}, "line 1: score '1.0' is not"),
        (
            {"queries.jsonl": '{"_id": "a", "text": "t"}\n', "qrels.tsv": "a\td\t1\na\td\t2\n"},
            "line 2: query 'a' judges",
        ),
    ],
)
def test_bad_datasets_raise_source_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        load_dataset(_write(tmp_path / "set", files) if files else tmp_path)


# --- history, trends and the regression check ------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def report_with(
    ndcg: dict[str, float], dataset: str = "sample", seconds: float = 0.01, namespace: str = "live"
) -> EvaluationReport:
    """A report whose modes have one query each with the given nDCG@10."""
    results = tuple(
        ModeResult(dataset, namespace, mode, 10, {"q1": {**query_metrics([], {"d": 1}), NDCG: value}}, {"q1": seconds})
        for mode, value in ndcg.items()
    )
    return EvaluationReport(dataset, namespace, 10, results)


def test_history_round_trip_trends_and_regression_against_the_last_good_run(history: EvaluationHistory) -> None:
    assert history.read().empty

    def night(n: int, dense: float, bm25: float) -> list:
        trends = record_run(
            history,
            [report_with({"dense": dense, "bm25": bm25})],
            run_id=f"r{n}",
            timestamp=T0 + timedelta(days=n),
            tolerance=0.02,
        )
        return [(t.mode, t.regressed) for t in trends], {t.mode: t for t in trends}

    flags, trends = night(0, 0.80, 0.60)
    assert flags == [("dense", False), ("bm25", False)] and trends["dense"].previous is None  # baseline
    flags, trends = night(1, 0.79, 0.62)
    assert not any(r for _, r in flags) and trends["dense"].change(NDCG) == pytest.approx(-0.01)
    flags, trends = night(2, 0.75, 0.60)  # dense drops 0.04 below its last good run (0.79); bm25 drops exactly 0.02
    assert flags == [("dense", True), ("bm25", False)]
    assert "sample/dense: nDCG@10 0.7500 is 0.0400 below the last good run's 0.7900" in trends["dense"].failure()
    flags, trends = night(3, 0.765, 0.60)  # the failed night is not the baseline: 0.79 still is
    assert flags == [("dense", True), ("bm25", False)]
    assert trends["dense"].change(NDCG) == pytest.approx(0.015)  # ...but it is the previous run
    flags, _ = night(4, 0.78, 0.59)
    assert flags == [("dense", False), ("bm25", False)]

    rows = history.read()
    assert list(rows["run_id"].unique()) == ["r0", "r1", "r2", "r3", "r4"]
    assert rows[rows["mode"] == "dense"]["good"].tolist() == [True, True, False, False, True]
    assert rows[NDCG].tolist()[:2] == [0.80, 0.60] and str(rows["timestamp"].dt.tz) == "UTC"
    assert {"p50 ms", "Recall@10", MAP, "namespace", "k"} <= set(rows.columns)


def test_the_history_is_exported_as_parquet_and_adopted_into_an_empty_log(
    history: EvaluationHistory, tmp_path: Path
) -> None:
    from ragline.recordstore.sqlite import open_sqlite_record_store

    for n, dense in enumerate((0.8, 0.7)):
        record_run(history, [report_with({"dense": dense})], run_id=f"r{n}", timestamp=T0 + timedelta(days=n))
    copy = tmp_path / "home" / "evaluation" / "history.parquet"
    history.export(copy)
    other = open_sqlite_record_store(tmp_path / "other.sqlite")  # a record store that never kept a history
    try:
        adopted = EvaluationHistory(other.evaluations)
        assert (adopted.adopt(copy), adopted.adopt(copy)) == (2, 0)  # once: then the log holds them
        assert adopted.read().equals(history.read())
        trends = record_run(adopted, [report_with({"dense": 0.7})], run_id="r2", timestamp=T0 + timedelta(days=2))
        assert [(t.regressed, t.last_good and t.last_good[NDCG]) for t in trends] == [(True, 0.8)]  # r0, adopted
    finally:
        other.close()
    assert EvaluationHistory(history.log).adopt(tmp_path / "missing.parquet") == 0
    record_run(history, [report_with({"dense": 0.9})], run_id="r9", timestamp=T0 + timedelta(days=9))
    assert history.adopt(copy) == 0 and len(history.read()) == 3  # the export's own rows are not added again


def test_a_copy_that_is_no_history_is_not_adopted_and_a_note_column_is_no_metric(
    history: EvaluationHistory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pandas as pd

    record_run(history, [report_with({"dense": 0.8})], run_id="r0", timestamp=T0)
    copy = tmp_path / "history.parquet"
    for damage in (b"garbage", b""):
        copy.write_bytes(damage)
        assert history.adopt(copy) == 0 and "is no evaluation history" in caplog.text
        assert not copy.exists() and (tmp_path / "history.parquet.unreadable").read_bytes() == damage  # kept aside
    frame = history.export(copy).assign(note="looked fine", reviewed=True, run_id="elsewhere")
    frame.to_parquet(copy, index=False)
    assert history.adopt(copy) == 1  # the other host's row, without the note
    assert {"note", "reviewed"}.isdisjoint(history.read().columns) and len(history.read()) == 2
    frame.drop(columns=["mode"]).to_parquet(copy, index=False)
    assert history.adopt(copy) == 0 and "KeyError" in caplog.text
    history.export(copy)
    assert len(pd.read_parquet(copy)) == 2  # the copy is whole again


def test_datasets_are_tracked_separately_and_new_modes_start_a_baseline(history: EvaluationHistory) -> None:
    record_run(history, [report_with({"dense": 0.9}, "a"), report_with({"dense": 0.5}, "b")], run_id="r0", timestamp=T0)
    trends = record_run(
        history, [report_with({"dense": 0.5, "hybrid": 0.1}, "a")], run_id="r1", timestamp=T0 + timedelta(hours=1)
    )
    assert [(t.dataset, t.mode, t.regressed, t.last_good is None) for t in trends] == [
        ("a", "dense", True, False),
        ("a", "hybrid", False, True),
    ]


def test_a_golden_set_on_another_namespace_starts_its_own_baseline(history: EvaluationHistory) -> None:
    record_run(history, [report_with({"dense": 0.85})], run_id="r0", timestamp=T0)
    subset = record_run(history, [report_with({"dense": 0.45}, namespace="part")], run_id="r1", timestamp=T0)
    assert [(t.regressed, t.last_good) for t in subset] == [(False, None)]  # not judged against "live"
    again = record_run(history, [report_with({"dense": 0.80})], run_id="r2", timestamp=T0 + timedelta(hours=1))
    assert [t.regressed for t in again] == [True]  # "live" is still judged against its own 0.85


# --- reports ---------------------------------------------------------------------------------------------------


def test_trend_arrows() -> None:
    assert (trend_arrow(0.0123), trend_arrow(-0.05), trend_arrow(0.0001), trend_arrow(None)) == (
        "▲ +0.012",
        "▼ −0.050",
        "=",
        "–",
    )


def test_markdown_rows_and_charts(history: EvaluationHistory, tmp_path: Path) -> None:
    record_run(history, [report_with({"dense": 0.8, "bm25": 0.6})], run_id="r0", timestamp=T0)
    bars = write_chart(history.read(), tmp_path / "bars.png")
    assert bars.read_bytes().startswith(PNG_MAGIC)

    report = report_with({"dense": 0.7, "bm25": 0.61})
    trends = record_run(history, [report], run_id="r1", timestamp=T0 + timedelta(days=1))
    lines = write_chart(history.read(), tmp_path / "out" / "lines.png", ["sample"])
    assert lines.read_bytes().startswith(PNG_MAGIC)

    markdown = evaluation_markdown([report], trends, run_id="r1", tolerance=0.02, chart_png=lines.read_bytes())
    assert "## sample: namespace `live`, 1 queries" in markdown
    assert "| metric | dense | bm25 |" in markdown and "| nDCG@10 | 0.7000 ▼ −0.100 | 0.6100 ▲ +0.010 |" in markdown
    assert "| check | REGRESSION −0.100 | ok |" in markdown
    assert "REGRESSION −0.100" in markdown and "## Regressions" in markdown
    assert "](data:image/png;base64,iVBORw0KGgo" in markdown
    rows = metric_rows([report], trends)
    assert all(len(row) == 6 for row in rows)  # one metric per row: narrow on any screen
    ndcg = {r["mode"]: r for r in rows if r["metric"] == NDCG}
    assert [(m, r["value"], r["vs previous"], r["check"]) for m, r in ndcg.items()] == [
        ("dense", 0.7, "▼ −0.100", "REGRESSION −0.100"),
        ("bm25", 0.61, "▲ +0.010", "ok"),
    ]
    p50 = next(r for r in rows if r["mode"] == "dense" and r["metric"] == "p50 ms")
    assert (p50["value"], p50["vs previous"], p50["check"]) == (10.0, "", "")


def test_the_chart_labels_each_run_by_when_it_ran(history: EvaluationHistory, tmp_path: Path) -> None:
    for i, when in enumerate((T0, T0 + timedelta(seconds=40), T0 + timedelta(days=1, minutes=3))):
        record_run(history, [report_with({"dense": 0.6 + i / 100})], run_id=f"r{i}", timestamp=when, tolerance=0.02)
    axes = chart(history.read(), ["sample"]).axes[0]
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert labels == [run_labels([t])[0] for t in (T0, T0 + timedelta(seconds=40), T0 + timedelta(days=1, minutes=3))]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", label) for label in labels)  # never "40 s" or "3 min"

"""Answer-quality evaluation: the golden QA format and the sample set, the metrics on hand-made answers, the QA runner
offline and with an LLM judge (loopback chat server), and the answer rows in the history, reports and ``ragline eval``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import Components
from ragline.embedders.local import LocalEmbedder
from ragline.errors import SourceError
from ragline.evaluation.answers import (
    ABSTENTION,
    CITATION_PRECISION,
    CITATION_RECALL,
    FAITHFULNESS,
    JUDGE_PROMPT,
    QUALITY_METRICS,
    SIMILARITY,
    AnswerReport,
    QAItem,
    citation_scores,
    embedding_support,
    evaluate_answers,
    faithfulness,
    load_qa,
)
from ragline.evaluation.history import EvaluationHistory, history_path, record_answers, record_run
from ragline.evaluation.metrics import NDCG
from ragline.evaluation.report import answer_metric_rows, evaluation_markdown, write_chart
from ragline.generation import NOT_FOUND, Answer, Citation
from ragline.retrieval import ChatSettings
from ragline.testing.chat_server import LoopbackChat, Message
from tests.test_evaluation_metrics import PNG_MAGIC, T0, report_with
from tests.test_generation import DOCS, MODEL, NS, indexed, quote_first_source  # noqa: F401 (fixture)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
OVERLAP_TEXT = DOCS[0][2]
TINY_QA = [
    QAItem(
        "a1",
        "How much overlap should consecutive chunks have?",
        "A modest overlap of 10 to 20 percent of the chunk size is a common starting point.",
        ("notes/overlap",),
        True,
    ),
    QAItem(
        "a2",
        "What is the name of Pinecone's default namespace?",
        "The default namespace's name is the empty string.",
        ("notes/namespaces",),
        True,
    ),
    QAItem(
        "a3",
        "What does full jitter do when retrying?",
        "Full jitter sleeps a random time between zero and the exponential bound.",
        ("notes/backoff",),
        True,
    ),
    QAItem("u1", "What is the capital of Australia?", "", (), False),
    QAItem("u2", "Who won the 2018 FIFA World Cup?", "", (), False),
]


def cite(number: int, doc: str) -> Citation:
    return Citation(number, f"notes/{doc}#0", f"notes/{doc}", "", doc, "")


def answer(text: str, *citations: Citation, abstained: bool = False) -> Answer:
    return Answer("q", text, "extractive", abstained, tuple(citations))


# --- the golden QA format and data/sample/qa.jsonl ------------------------------------------------------------


def test_the_sample_qa_set_is_well_formed_and_true_to_its_documents() -> None:
    items = load_qa(SAMPLE / "qa.jsonl")
    unanswerable = [item for item in items if not item.answerable]
    assert len(items) >= 30 and len(unanswerable) >= 6
    assert len({item.question for item in items}) == len(items)
    for item in items:
        if not item.answerable:
            continue
        texts = [
            (SAMPLE / doc_id.removeprefix("sample/")).read_text(encoding="utf-8").lower() for doc_id in item.doc_ids
        ]
        words = {w for w in re.findall(r"[a-z0-9][a-z0-9.,'-]*[a-z0-9]", item.answer.lower()) if len(w) > 3}
        found = sum(any(w in text for text in texts) for w in words)
        assert found / len(words) >= 0.75, (item.id, sorted(w for w in words if not any(w in t for t in texts)))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"_id": "1", "question": "q"'], "line 1: expected an object"),
        (['{"_id": "1", "question": "q", "answer": "a", "doc_ids": ["d"]}'], "line 1: expected an object"),
        (
            ['{"_id": "1", "question": "q", "answer": "", "doc_ids": ["d"], "answerable": true}'],
            "line 1: an answerable",
        ),
        (['{"_id": "1", "question": "q", "answer": "a", "doc_ids": [], "answerable": true}'], "line 1: an answerable"),
        (['{"_id": "1", "question": "q", "doc_ids": ["d"], "answerable": false}'], "line 1: an unanswerable"),
        (["", '{"_id": "1", "question": " ", "answerable": false}'], "line 2: empty question"),
        (['{"_id": "1", "question": "q", "answerable": false}'] * 2, "ids are not unique"),
        ([""], "no questions"),
    ],
)
def test_bad_qa_files_are_refused_clearly(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match=message):
        load_qa(path)


# --- metrics on hand-made answers -------------------------------------------------------------------------------


def test_citation_precision_and_recall() -> None:
    two = answer("x [1] y [2] z [3].", cite(1, "a"), cite(2, "b"), replace(cite(3, "a"), chunk_id="notes/a#1"))
    assert citation_scores(two, ["notes/a", "notes/c"]) == (0.5, 0.5)  # documents, not chunks
    assert citation_scores(two, ["notes/a", "notes/b"]) == (1.0, 1.0)
    precision, recall = citation_scores(answer(NOT_FOUND, abstained=True), ["notes/a"])
    assert math.isnan(precision) and recall == 0.0


@pytest.mark.slow
def test_faithfulness_counts_sentences_supported_by_the_chunks_they_cite(local_embedder: LocalEmbedder) -> None:
    support = embedding_support(local_embedder.embed, 0.6)
    texts = {"notes/overlap#0": OVERLAP_TEXT, "notes/bm25#0": DOCS[3][2]}
    half = answer(
        "A modest overlap of 10 to 20 percent is a common starting point [1]. Bananas are a yellow tropical fruit [1].",
        cite(1, "overlap"),
    )
    assert faithfulness(half, texts, support) == 0.5
    wrong_source = answer(
        "A modest overlap of 10 to 20 percent is a common starting point [2].", cite(1, "overlap"), cite(2, "bm25")
    )
    assert faithfulness(wrong_source, texts, support) == 0.0  # true, but not in the chunk it cites
    uncited = answer("Overlap repeats the end of one chunk at the start of the next.", cite(1, "overlap"))
    assert faithfulness(uncited, texts, support) == 1.0  # checked against every chunk the answer cites
    assert math.isnan(faithfulness(answer(NOT_FOUND, abstained=True), texts, support))


# --- the QA runner ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_answers_offline(indexed: Components) -> None:  # noqa: F811
    report = evaluate_answers(indexed, TINY_QA, dataset="tiny", namespace=NS)
    assert (report.answerer, report.judge, report.mode, report.k) == ("extractive", "embedding", "hybrid", 5)
    rows = {row["query_id"]: row for row in report.rows}
    assert [rows[q]["abstained"] for q in ("a1", "a2", "a3", "u1", "u2")] == [False, False, False, True, True]
    summary = report.summary()
    assert summary[ABSTENTION] == 1.0 and summary[CITATION_RECALL] == 1.0 and summary[FAITHFULNESS] == 1.0
    assert summary[CITATION_PRECISION] >= 2 / 3 and 0.6 < summary[SIMILARITY] <= 1.0
    assert rows["a1"][SIMILARITY] > 0.8 and math.isnan(rows["u1"][SIMILARITY])
    assert 0 < summary["answer p50 ms"] <= summary["answer p95 ms"] and summary["cost USD"] == 0.0
    assert len(report.per_question()) == 5


@pytest.mark.slow
def test_evaluate_answers_with_an_llm_answerer_and_judge(indexed: Components) -> None:  # noqa: F811
    def respond(messages: list[Message]) -> str:
        if messages[0]["content"] == JUDGE_PROMPT:
            statements = re.findall(r'<statement id="(\d+)">', messages[1]["content"])
            return json.dumps({"supported": [int(statements[0])]})  # only the first statement
        return quote_first_source(messages) + " Overlap is always 90 percent [1]."

    with LoopbackChat(respond) as server:
        chat = ChatSettings(model=MODEL, base_url=server.base_url, api_key=server.api_key)
        report = evaluate_answers(indexed, TINY_QA, dataset="tiny", namespace=NS, chat=chat)
        server.fail_next(1, "malformed")  # the judge's answer is not JSON: judged by embeddings instead
        fallback = evaluate_answers(indexed, TINY_QA[:1], dataset="tiny", namespace=NS, chat=chat)
    summary = report.summary()
    assert (report.answerer, report.judge) == ("llm", "llm")
    assert summary[FAITHFULNESS] == 0.5 and summary[ABSTENTION] == 1.0
    assert summary["LLM input tokens"] > 0 and summary["LLM output tokens"] > 0 and summary["cost USD"] > 0
    assert fallback.rows[0][FAITHFULNESS] == 0.5  # "90 percent" is not in the cited chunk either way


# --- history, reports, ragline eval -----------------------------------------------------------------------------


def tiny_report(abstention: float) -> AnswerReport:
    rows = tuple(
        {
            "query_id": str(i),
            SIMILARITY: 0.5,
            CITATION_PRECISION: 1.0,
            CITATION_RECALL: 1.0,
            FAITHFULNESS: 1.0,
            ABSTENTION: float(i < abstention * 4),
            "latency_ms": 10.0 * (i + 1),
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
        }
        for i in range(4)
    )
    return AnswerReport("tiny", "live", "extractive", "hybrid", 5, "embedding", rows)


def test_answer_metrics_join_the_history_with_their_trend(history: EvaluationHistory, tmp_path: Path) -> None:
    record_run(history, [report_with({"dense": 0.5})], run_id="r1", timestamp=T0)
    (first,) = record_answers(history, [tiny_report(0.5)], run_id="r1", timestamp=T0)
    (second,) = record_answers(history, [tiny_report(1.0)], run_id="r2", timestamp=T0 + timedelta(days=1))
    assert first.previous is None and second.change(ABSTENTION) == 0.5 and not second.regressed
    rows = history.read()
    answers = rows[rows["mode"] == "answers-extractive"]
    assert list(answers["run_id"]) == ["r1", "r2"] and answers[NDCG].isna().all()
    assert list(answers[ABSTENTION]) == [0.5, 1.0] and list(answers["answer p95 ms"]) == pytest.approx([38.5] * 2)
    assert write_chart(rows, tmp_path / "chart.png", ["tiny"]).read_bytes().startswith(PNG_MAGIC)

    markdown = evaluation_markdown(
        [], [], run_id="r2", tolerance=0.02, answers=[tiny_report(1.0)], answer_trends=[second]
    )
    assert "## Answers on tiny: extractive answerer, hybrid retrieval (top 5), 4 questions" in markdown
    assert "| abstention accuracy | 1.0000 | ▲ +0.500 |" in markdown
    rows = {row["metric"]: row for row in answer_metric_rows([tiny_report(1.0)], [second])}
    assert rows[ABSTENTION]["vs previous"] == "▲ +0.500" and rows[SIMILARITY]["vs previous"] == "="
    assert set(QUALITY_METRICS) <= set(rows) and all(len(row) == 5 for row in rows.values())


@pytest.fixture
def golden(tmp_path: Path) -> Iterator[Path]:
    """A golden set folder: four documents, their retrieval judgments and a QA set with two unanswerable questions."""
    root = tmp_path / "golden"
    root.mkdir()
    for doc_id, title, text in DOCS[:4]:
        (root / f"{doc_id}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q.id, "text": q.question}) + "\n" for q in TINY_QA if q.answerable)
    )
    (root / "qrels.tsv").write_text(
        "".join(f"{q.id}\tgolden/{q.doc_ids[0].split('/')[1]}.md\t2\n" for q in TINY_QA if q.answerable)
    )
    qa = [
        {
            "_id": q.id,
            "question": q.question,
            "answer": q.answer,
            "answerable": q.answerable,
            "doc_ids": [f"golden/{d.split('/')[1]}.md" for d in q.doc_ids],
        }
        for q in TINY_QA
    ]
    (root / "qa.jsonl").write_text("".join(json.dumps(item) + "\n" for item in qa))
    yield root


@pytest.mark.slow
def test_ragline_eval_reports_answers_beside_retrieval(
    golden: Path, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.setenv("RAGLINE_EMBEDDER", "local")  # answers are judged by meaning
    monkeypatch.setenv("RAGLINE_EVAL_SAMPLE_PATH", str(golden))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    home = ["--home", str(tmp_path / "home"), "-n", "live"]
    assert runner.invoke(app, ["ingest", str(golden), *home]).exit_code == 0
    first = runner.invoke(app, ["eval", *home, "-m", "bm25"])
    assert first.exit_code == 0, first.output
    assert "answers on golden" in first.output and "faithfulness judged by embedding" in first.output
    assert re.search(r"abstention accuracy\s+│\s+1\.0000\s+│\s+–", first.output), first.output
    second = runner.invoke(app, ["eval", *home, "-m", "bm25"])
    assert re.search(r"citation recall\s+│\s+1\.0000\s+│\s+=", second.output), second.output
    rows = pd.read_parquet(history_path(tmp_path / "home"))  # the home's copy of the record store's history
    assert sorted(rows["mode"]) == ["answers-extractive"] * 2 + ["bm25"] * 2
    assert datetime.now(UTC) - rows["timestamp"].max() < timedelta(minutes=10)

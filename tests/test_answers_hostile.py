"""Answers from hostile documents and from a chat model that stops early, on the hashing embedder (fast):

- citation markers printed inside documents ("95 percent [3][12]") never reach an answer, a quote or the prompt:
  an answer's markers are ragline's own;
- a document's question sentence is never the answer;
- an LLM answer cut at the token limit is flagged truncated (in the result, ``ragline ask`` and the query
  service), and refusals and content-filter stops are named as such, never "not found".

The documents are generated: each holds the question it answers, its answer sentence with hostile markers, and
filler; the questions asked are those of the documents.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from ragline.cli import app
from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.generation import NOT_FOUND, Answer, answer_question
from ragline.generation.sentences import citation_numbers, is_question, split_sentences, strip_markers
from ragline.indexing.pipeline import ingest
from ragline.retrieval import ChatSettings
from ragline.sources import JsonlSource
from ragline.testing.chat_server import REFUSAL, LoopbackChat, Message

NS = "hostile"
MODEL = "loopback-hostile"
MARKERS = ["[3][12]", "[3, 12]", "[7-9]", "[12–14]", "[[2]]", "[1[2]]", "[ 4 ]", "[99]", "[1]", "[2,3]"]
SUBJECTS = ["copper kettle", "granite bridge", "velvet lantern", "maple rudder", "cobalt anvil", "amber sluice"]
ATTRIBUTES = ["coolant", "ballast", "tension", "lubricant", "voltage", "clearance"]
ISSUE_DOC = (
    "issue",
    "Survey",
    "How often do readers finish long reports? Only 5 percent [3][12] of readers finish long reports. "
    "Short summaries help [4].",
)


def generated_documents(seed: int = 7) -> list[tuple[str, str, str, str, str]]:
    """(id, title, text, question, the answer's key phrase) for each subject: the text asks the question itself,
    in several forms, and answers it in a sentence carrying citation-like markers."""
    rng = random.Random(seed)
    documents = []
    for i, (subject, attribute) in enumerate(zip(SUBJECTS, ATTRIBUTES)):
        amount = rng.randint(11, 97)
        question = f"How much {attribute} does the {subject} need?"
        phrase = f"needs {amount} units of {attribute}"
        asked = rng.choice([question, f"Q: {question}", f"FAQ. {question}", question.upper()])
        text = (
            f"{asked} The {subject} {phrase} {rng.choice(MARKERS)}{rng.choice(MARKERS)}. "
            f"Why does the {subject} need {attribute}? "
            f"Operators log it every week {rng.choice(MARKERS)}.\n"
            f"Seasonal values differ, see table [{rng.randint(1, 30)}]."
        )
        documents.append((f"d{i}", f"{subject} [{i}]", text, question, phrase))
    return documents


DOCUMENTS = generated_documents()


def write_corpus(path: Path) -> Path:
    rows = [(i, t, x) for i, t, x, _, _ in DOCUMENTS] + [ISSUE_DOC]
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in rows), "utf-8")
    return path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Components]:
    root = tmp_path_factory.mktemp("hostile")
    config = RaglineConfig(
        home=root / "home", model_cache_dir=models_dir, namespace=NS, embedder="hashing", answer_min_similarity=-1
    )
    c = build_components(config, HashingEmbedder())
    ingest(c, JsonlSource(write_corpus(root / "hostile.jsonl"), name="hostile"), namespace=NS)
    yield c
    c.close()


def ask(c: Components, question: str, **options: object) -> Answer:
    return answer_question(c, question, namespace=NS, **options)  # type: ignore[arg-type]


def assert_markers_are_ragline_own(answer: Answer) -> None:
    """Every marker in the text names one of the answer's citations, every citation is cited, no quote carries a
    marker, and nothing was dropped (a dropped citation would mean a stray marker got as far as the text)."""
    assert set(citation_numbers(answer.text)) == {c.number for c in answer.citations}
    assert all(1 <= c.number <= answer_top_k for c in answer.citations)
    assert answer.dropped_citations == ()
    for citation in answer.citations:
        assert citation_numbers(citation.quote) == [] and not re.search(r"\[\s*\d", citation.quote), citation.quote


answer_top_k = RaglineConfig.model_fields["answer_top_k"].default


# --- extractive answers from hostile documents ------------------------------------------------------------------


@pytest.mark.parametrize(("doc_id", "title", "text", "question", "phrase"), DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_the_extractive_answer_quotes_the_answer_not_the_question_nor_its_markers(
    indexed: Components, doc_id: str, title: str, text: str, question: str, phrase: str
) -> None:
    answer = ask(indexed, question)
    assert not answer.abstained and answer.kind == "extractive"
    assert phrase in split_sentences(answer.text)[0], answer.text  # the answer sentence leads
    assert "?" not in answer.text and question.lower() not in answer.text.lower()
    assert not any(is_question(s) for s in split_sentences(answer.text))
    assert_markers_are_ragline_own(answer)


def test_the_issue_example_keeps_no_printed_markers(indexed: Components) -> None:
    answer = ask(indexed, "How often do readers finish long reports?")
    assert "Only 5 percent of readers finish long reports [1]." in answer.text, answer.text
    assert "[12]" not in answer.text and "[3]" not in answer.text
    assert_markers_are_ragline_own(answer)


@given(st.text(alphabet="[]0123456789,;-– x.?", max_size=60))
def test_no_marker_survives_stripping(text: str) -> None:
    assert citation_numbers(strip_markers(text)) == []


@pytest.mark.parametrize(
    ("sentence", "asks"),
    [
        ("How much overlap should chunks have?", True),
        ("Q: the overlap to use.", True),
        ('Is it "safe?"', True),
        ("HOW MUCH OVERLAP DOES A CHUNK NEED?", True),
        ("What matters is the overlap between chunks.", False),
        ("How the index is built is described in the next section of this guide for operators", False),
        ("Question: does overlap help", True),
        ("Overlap of 10 to 20 percent is common.", False),
    ],
)
def test_question_sentences(sentence: str, asks: bool) -> None:
    assert is_question(sentence) is asks


# --- LLM answers: markers kept out of the prompt, and how the model stopped ------------------------------------


def sources_in(messages: list[Message]) -> dict[int, str]:
    user = next(m["content"] for m in messages if m["role"] == "user")
    return {int(n): text for n, text in re.findall(r'<source id="(\d+)">(.*?)</source>', user, re.DOTALL)}


def cite_first(messages: list[Message]) -> str:
    number, text = min(sources_in(messages).items())
    return f"{split_sentences(text)[-1]} [{number}]"


@pytest.fixture(scope="module")
def running() -> Iterator[LoopbackChat]:
    with LoopbackChat(cite_first) as server:
        yield server


@pytest.fixture
def server(running: LoopbackChat) -> LoopbackChat:
    running.clear()
    running.responder = cite_first
    return running


def chat(server: LoopbackChat, model: str = MODEL) -> ChatSettings:
    return ChatSettings(model=model, base_url=server.base_url, api_key=server.api_key, max_retries=0)


def test_markers_printed_in_documents_never_reach_the_model(indexed: Components, server: LoopbackChat) -> None:
    answer = ask(indexed, "How often do readers finish long reports?", chat=chat(server))
    (request,) = server.requests
    sent = sources_in(request.messages)
    assert sent and not any(citation_numbers(text) for text in sent.values())
    assert "5 percent of readers finish" in "".join(sent.values())
    assert answer.kind == "llm" and answer.finish == "complete" and not answer.truncated
    assert_markers_are_ragline_own(answer)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_at_the_token_limit_is_flagged_truncated(
    indexed: Components, server: LoopbackChat, stream: bool
) -> None:
    short = build_components(indexed.config.model_copy(update={"answer_max_tokens": 6}), indexed.embedder)
    try:
        answer = ask(short, DOCUMENTS[0][3], chat=chat(server), on_delta=(lambda d: None) if stream else None)
    finally:
        short.close()
    (request,) = server.requests
    assert request.options["max_completion_tokens"] == 6 and "max_tokens" not in request.options
    assert answer.finish == "truncated" and answer.truncated and not answer.abstained and answer.text
    assert any("answer_max_tokens" in w for w in answer.warnings)
    assert answer.to_dict()["truncated"] is True


def test_an_empty_answer_cut_at_the_limit_is_truncated_not_not_found(indexed: Components, server: LoopbackChat) -> None:
    server.responder = lambda messages: "The"
    server.fail_next(1, "length")  # half of one token: nothing at all, as when a reasoning model spent them all
    answer = ask(indexed, DOCUMENTS[1][3], chat=chat(server))
    assert answer.truncated and answer.text != NOT_FOUND and not answer.abstained


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "finish", "said"),
    [("refusal", "refused", REFUSAL), ("content_filter", "content_filter", "content filter")],
)
def test_refusals_and_content_filter_stops_are_named(
    indexed: Components, server: LoopbackChat, stream: bool, fault: str, finish: str, said: str
) -> None:
    server.fail_next(1, fault)  # type: ignore[arg-type]
    answer = ask(indexed, DOCUMENTS[2][3], chat=chat(server), on_delta=(lambda d: None) if stream else None)
    assert answer.finish == finish and answer.kind == "llm"
    assert not answer.abstained and answer.text != NOT_FOUND
    assert any(said in w for w in answer.warnings) or said in answer.text
    assert len(server.requests) == 1  # named, not retried nor answered around


def test_ask_says_truncated_and_refused(
    indexed: Components, server: LoopbackChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_CHAT_MODEL", MODEL)
    monkeypatch.setenv("RAGLINE_CHAT_BASE_URL", server.base_url)
    monkeypatch.setenv("RAGLINE_CHAT_API_KEY", server.api_key)
    monkeypatch.setenv("RAGLINE_ANSWER_MIN_SIMILARITY", "-1")
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(indexed.config.models_dir))
    runner, home = CliRunner(), ["--home", str(indexed.config.home), "-n", NS]
    monkeypatch.setenv("RAGLINE_ANSWER_MAX_TOKENS", "6")
    cut = runner.invoke(app, ["ask", DOCUMENTS[0][3], *home])
    assert cut.exit_code == 0, cut.output
    assert "truncated" in cut.stdout and "answer_max_tokens" in cut.stdout
    as_json = runner.invoke(app, ["ask", DOCUMENTS[0][3], *home, "--json"])
    assert json.loads(as_json.stdout)["truncated"] is True
    monkeypatch.delenv("RAGLINE_ANSWER_MAX_TOKENS")
    server.fail_next(1, "refusal")
    refused = runner.invoke(app, ["ask", DOCUMENTS[0][3], *home])
    assert refused.exit_code == 0 and "refused" in refused.stdout and REFUSAL in refused.stdout
    assert NOT_FOUND not in refused.stdout


SERVICE_KEY = "hostile-tenant-key-0123456789"


@contextmanager
def service_client(indexed: Components, server: LoopbackChat, **settings: object) -> Iterator[Any]:
    """A query service on ``indexed`` whose chat model is ``server``, with ``settings`` on top."""
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from ragline.service import create_app

    update = {
        "service_api_keys": {SecretStr(SERVICE_KEY): [NS]},
        "chat_model": MODEL,
        "chat_base_url": server.base_url,
        "chat_api_key": SecretStr(server.api_key),
        **settings,
    }
    config = indexed.config.model_copy(update=update)
    served = build_components(config, indexed.embedder)
    try:
        with TestClient(create_app(config, served)) as client:
            yield client
    finally:
        served.close()


def test_the_query_service_passes_the_truncated_flag(indexed: Components, server: LoopbackChat) -> None:
    with service_client(indexed, server, answer_max_tokens=6) as client:
        body = {"query": DOCUMENTS[3][3], "namespace": NS, "answer": True}
        response = client.post("/query", json=body, headers={"X-API-Key": SERVICE_KEY})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["truncated"] is True and payload["answer_finish"] == "truncated" and payload["answer"]
    assert any("truncated" in w and "answer_max_tokens" in w for w in payload["warnings"])


def test_the_query_service_does_not_cache_an_answer_the_chat_model_failed_to_give(
    indexed: Components, server: LoopbackChat
) -> None:
    body = {"query": DOCUMENTS[0][3], "namespace": NS, "answer": True}
    with service_client(indexed, server) as client:
        server.fail_next(3, 503)  # the request and its two retries
        down, back, again = [
            client.post("/query", json=body, headers={"X-API-Key": SERVICE_KEY}).json() for _ in range(3)
        ]
    assert down["answer_kind"] == "extractive" and any("answered extractively" in w for w in down["warnings"])
    assert (down["answer_fell_back"], back["answer_fell_back"]) == (True, False)
    assert (back["answer_kind"], back["cached"]) == ("llm", False)  # asked again, not served the fallback
    assert (again["answer_kind"], again["cached"]) == ("llm", True)

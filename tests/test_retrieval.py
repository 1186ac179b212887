"""Retrieval end to end: every mode on the real local embedder, LanceDB and the record store; fusion and feedback
math on hand-made lists; query understanding; the LLM stages through the real openai client and a loopback server.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.local import LocalEmbedder
from ragline.errors import ConfigError, FilterError
from ragline.indexing.pipeline import ingest
from ragline.records import QuarantineRecord
from ragline.retrieval import MODES, ChatSettings, Hit, Mode, RetrievalSettings, bm25, refresh_bm25, search
from ragline.retrieval.bm25 import current_index, index_folder
from ragline.retrieval.bm25_tokens import counted_pages
from ragline.retrieval.expansion import rm3
from ragline.retrieval.fusion import rrf, zmix
from ragline.retrieval.understanding import QueryFields, merge_filters, understand_rules
from ragline.sources import DirectorySource, JsonlSource
from ragline.stores.base import VectorRecord
from ragline.stores.filters import matches
from ragline.testing.chat_server import LoopbackChat, Message
from ragline.workers import WorkerPool

pytestmark = pytest.mark.slow  # retrieval quality needs the real model

NS = "test"
PAPERS = [
    (
        "flutter",
        "Supersonic wing flutter",
        2018,
        "Flutter of swept wings at supersonic speeds is analysed with piston theory and wind tunnel tests.",
    ),
    (
        "transition",
        "Boundary layer transition",
        2019,
        "Laminar boundary layer transition on a flat plate is measured under adverse pressure gradients.",
    ),
    (
        "heating",
        "Hypersonic heat transfer",
        2021,
        "Aerodynamic heating of blunt bodies in hypersonic flow raises the wall temperature near the nose.",
    ),
    (
        "shocks",
        "Shock wave interaction",
        2022,
        "A shock wave meeting a turbulent boundary layer separates the flow ahead of the compression ramp.",
    ),
    (
        "dewey",
        "Library classification",
        2015,
        "The Dewey decimal classification organises library collections by subject <b>for readers</b>.",
    ),
]
NOTES = [
    (
        "bm25",
        "Keyword ranking",
        2020,
        "BM25 ranks documents by term frequency and inverse document frequency with length normalisation.",
    ),
    (
        "dense",
        "Dense retrieval",
        2021,
        "Sentence embeddings map queries and passages into one vector space for nearest neighbour search.",
    ),
    (
        "rerank",
        "Reranking",
        2023,
        "A cross-encoder reads the query and a passage together to rescore the top candidates of a search.",
    ),
    (
        "tunnel",
        "Wind tunnel notes",
        2019,
        "Notes from the wind tunnel: the wing model showed flutter at high speed during the tests.",
    ),
]


def write_jsonl(path: Path, rows: list[tuple[str, str, int, str]]) -> Path:
    lines = [json.dumps({"_id": i, "title": title, "text": text, "year": year}) for i, title, year, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, local_embedder: LocalEmbedder
) -> Iterator[Components]:
    """Two sources ("papers", "notes") with a ``year`` field, ingested once into namespace ``test``."""
    root = tmp_path_factory.mktemp("retrieval")
    config = RaglineConfig(home=root / "home", model_cache_dir=models_dir, namespace=NS, embedder="local")
    c = build_components(config, local_embedder)
    ingest(c, JsonlSource(write_jsonl(root / "papers.jsonl", PAPERS), name="papers"), namespace=NS)
    ingest(c, JsonlSource(write_jsonl(root / "notes.jsonl", NOTES), name="notes"), namespace=NS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def chat_server() -> Iterator[LoopbackChat]:
    with LoopbackChat() as server:
        yield server


@pytest.fixture
def chat(chat_server: LoopbackChat) -> ChatSettings:
    chat_server.clear()
    return ChatSettings(
        model="loopback-chat", base_url=chat_server.base_url, api_key=chat_server.api_key, max_retries=1
    )


def doc_names(hits: list[Hit]) -> list[str]:
    return [hit.doc_id.rpartition("/")[2] for hit in hits]


# --- modes and filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_returns_hits_best_first(indexed: Components, mode: Mode) -> None:
    result = search(indexed, "wing flutter at supersonic speed", namespace=NS, mode=mode, top_k=2)
    assert doc_names(result.hits) == ["flutter", "tunnel"]
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    top = result.hits[0]
    assert top.chunk_id == f"{top.doc_id}#0" and top.text.startswith("Flutter of swept wings")
    assert top.metadata["year"] == 2018 and top.metadata["source"] == "papers" and "text" not in top.metadata
    assert set(result.timings) == {"dense", "bm25", "fuse"} if mode == "hybrid" else {mode}
    assert result.warnings == [] and result.queries == ["wing flutter at supersonic speed"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "filter", [{"year": {"$gte": 2021}}, {"source": "notes"}, {"$or": [{"year": 2019}, {"year": {"$lt": 2016}}]}]
)
def test_filters_apply_on_every_mode(indexed: Components, mode: Mode, filter: dict) -> None:
    query = "wing flutter tests in the wind tunnel boundary layer flow"
    result = search(indexed, query, namespace=NS, mode=mode, top_k=20, filter=filter)
    assert result.hits and result.filter == filter
    assert all(matches(filter, hit.metadata) for hit in result.hits)


@pytest.mark.parametrize("mode", MODES)
def test_a_filter_keeps_top_k_by_reaching_below_the_unfiltered_top(indexed: Components, mode: Mode) -> None:
    unfiltered = search(indexed, "supersonic wing flutter", namespace=NS, mode=mode, top_k=1)
    filtered = search(indexed, "supersonic wing flutter", namespace=NS, mode=mode, top_k=1, filter={"source": "notes"})
    assert doc_names(unfiltered.hits) == ["flutter"] and doc_names(filtered.hits) == ["tunnel"]


def test_bad_arguments_fail_clearly(indexed: Components) -> None:
    with pytest.raises(ConfigError, match="retrieval mode must be one of"):
        search(indexed, "wing", namespace=NS, mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="top_k"):
        search(indexed, "wing", namespace=NS, top_k=0)
    with pytest.raises(FilterError):
        search(indexed, "wing", namespace=NS, filter={"year": {"$near": 2020}})
    with pytest.raises(ConfigError, match="namespace"):
        search(indexed, "wing", namespace="../elsewhere", mode="bm25")
    with pytest.raises(ConfigError, match="fusion"):
        RetrievalSettings(fusion="max")  # type: ignore[arg-type]


# --- BM25 index upkeep ----------------------------------------------------------------------------------------


def test_bm25_index_is_persisted_and_rebuilt_when_the_live_chunks_change(
    components: Components, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("# Airships\n\nRigid airships carry lifting gas in cells.\n", encoding="utf-8")
    (root / "b.md").write_text("# Gliders\n\nGliders soar on thermals without an engine.\n", encoding="utf-8")
    ingest(components, DirectorySource(root, name="docs"), namespace=NS)  # ingest refreshes BM25 after commit
    assert refresh_bm25(components, NS) is False
    folder = index_folder(components.config, NS)
    key = current_index(components, NS).key
    assert [p.name for p in folder.iterdir()] == [key] and (folder / key / "manifest.json").is_file()
    assert search(components, "zeppelin", namespace=NS, mode="bm25").hits == []

    (root / "c.md").write_text("# Zeppelin\n\nA zeppelin is a rigid airship.\n", encoding="utf-8")
    ingest(components, DirectorySource(root, name="docs"), namespace=NS)
    hits = search(components, "zeppelin", namespace=NS, mode="bm25").hits  # noticed without an explicit refresh
    assert doc_names(hits) == ["c.md"]
    assert refresh_bm25(components, NS) is False
    assert [p.name for p in folder.iterdir()] == [current_index(components, NS).key] != [key]

    (root / "a.md").unlink()
    ingest(components, DirectorySource(root, name="docs"), namespace=NS, cleanup="full")
    assert refresh_bm25(components, NS) is False
    assert all(h.doc_id != "docs/a.md" for h in search(components, "rigid airship", namespace=NS, mode="bm25").hits)


def ingested_kites(c: Components, tmp_path: Path) -> Path:
    """A folder with one document about kites, ingested (which builds and persists the BM25 index)."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("# Kites\n\nBox kites fly in steady wind.\n", encoding="utf-8")
    ingest(c, DirectorySource(root, name="docs"), namespace=NS)
    return root


def test_a_new_process_loads_the_persisted_index(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingested_kites(components, tmp_path)
    monkeypatch.setattr(bm25, "_loaded", {})  # what a new process starts with
    assert refresh_bm25(components, NS) is False
    assert doc_names(search(components, "kite", namespace=NS, mode="bm25").hits) == ["a.md"]


@pytest.fixture(params=["sqlite", "postgres"])
def either_records(request: pytest.FixtureRequest, config: RaglineConfig, embedder: Any) -> Iterator[Components]:
    """Components on the SQLite record store, then on PostgreSQL (which has no files to stamp here)."""
    chosen = request.getfixturevalue("pg_config") if request.param == "postgres" else config
    c = build_components(chosen, embedder=embedder)
    yield c
    c.close()


def test_a_search_scans_the_live_chunks_again_only_after_a_commit(
    either_records: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    components = either_records
    root = ingested_kites(components, tmp_path)
    monkeypatch.setattr(bm25, "_RECHECK_S", 0.0)  # as if every search came a minute after the last check
    scans = []
    fingerprint = bm25.live_fingerprint

    def counted(*args: Any) -> str:
        scans.append(args)
        return fingerprint(*args)

    monkeypatch.setattr(bm25, "live_fingerprint", counted)
    for _ in range(2):
        assert doc_names(search(components, "kite", namespace=NS, mode="bm25").hits) == ["a.md"]
    late = QuarantineRecord("docs", "file:///late", "empty document")
    components.records.quarantine.add("elsewhere", NS, [late])  # a write, but no commit: no chunk changed
    assert doc_names(search(components, "kite", namespace=NS, mode="bm25").hits) == ["a.md"]
    journal = components.records.journal
    journal.begin_run("open", NS, "docs")  # a run open meanwhile writes, and changes no live row until it commits
    journal.mark_seen("open", ["docs/a.md"])
    assert doc_names(search(components, "kite", namespace=NS, mode="bm25").hits) == ["a.md"]
    journal.discard_pending("open")
    assert scans == []  # the index was checked at this commit by the ingest

    (root / "b.md").write_text("# Gliders\n\nA kite without a string is a glider.\n", encoding="utf-8")
    clock = time.time
    monkeypatch.setattr(time, "time", lambda: clock() - 3600)  # a run started on a clock an hour behind
    ingest(components, DirectorySource(root, name="docs"), namespace=NS, refresh_keyword_index=False)
    monkeypatch.setattr(time, "time", clock)
    for _ in range(2):
        assert sorted(doc_names(search(components, "kite", namespace=NS, mode="bm25").hits)) == ["a.md", "b.md"]
    assert len(scans) == 1  # its commit moved the generation on


def test_a_search_sees_a_commit_by_another_process_at_once(either_records: Components, tmp_path: Path) -> None:
    """Within the minute a search trusts its last check, on PostgreSQL too (no files here to show a write)."""
    components = either_records
    root = ingested_kites(components, tmp_path)
    assert doc_names(search(components, "kite", namespace=NS, mode="bm25").hits) == ["a.md"]
    other = build_components(components.config, embedder=components.embedder)
    (root / "b.md").write_text("# Gliders\n\nA kite without a string is a glider.\n", encoding="utf-8")
    # as another process would: its keyword index refresh would update this process's loaded indexes
    ingest(other, DirectorySource(root, name="docs"), namespace=NS, refresh_keyword_index=False)
    other.close()
    assert sorted(doc_names(search(components, "kite", namespace=NS, mode="bm25").hits)) == ["a.md", "b.md"]


def test_dense_search_looks_deeper_when_uncommitted_writes_take_the_nearest_places(
    components: Components, tmp_path: Path
) -> None:
    ingested_kites(components, tmp_path)
    query = "Box kites fly in steady wind."
    nearest = components.embedder.embed([query])[0]
    written = [  # a run's writes, never committed (killed, or still running): nearer than anything committed
        VectorRecord(f"docs/pending-{n}.md#0", nearest, {"text": query, "doc_id": f"docs/pending-{n}.md"})
        for n in range(40)
    ]
    components.store.upsert(written, namespace=NS)
    hits = search(components, query, namespace=NS, mode="dense", top_k=3).hits
    assert doc_names(hits) == ["a.md"]  # the one committed chunk, found past the 40 hidden ones


def test_a_new_process_trusts_the_index_checked_at_the_last_commit_without_a_scan(
    either_records: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    components = either_records
    root = ingested_kites(components, tmp_path)  # its build notes the commit it indexed
    folder = index_folder(components.config, NS)
    key = current_index(components, NS).key
    first = components.records.journal.last_commit(NS)
    assert json.loads((folder / key / bm25.CHECKED).read_text())["commit"] == first
    scans: list[object] = []
    fingerprint = bm25.live_fingerprint

    def counted(*args: Any) -> str:
        scans.append(args)
        return fingerprint(*args)

    monkeypatch.setattr(bm25, "live_fingerprint", counted)

    def new_process_finds(*expected: str) -> None:
        monkeypatch.setattr(bm25, "_loaded", {})
        assert sorted(doc_names(search(components, "kite", namespace=NS, mode="bm25").hits)) == list(expected)

    new_process_finds("a.md")
    assert scans == []
    checked = json.loads((folder / key / bm25.CHECKED).read_text())
    for other in ({**checked, "commit": "another-run"}, {**checked, "params": {**checked["params"], "k1": 1.2}}):
        (folder / key / bm25.CHECKED).write_text(json.dumps(other))  # a note that does not vouch for it
        new_process_finds("a.md")
        assert len(scans) == 1 and json.loads((folder / key / bm25.CHECKED).read_text()) == checked  # noted again
        scans.clear()

    (folder / key / bm25.CHECKED).unlink()
    (root / "b.md").write_text("# Gliders\n\nA kite without a string is a glider.\n", encoding="utf-8")

    def committing_meanwhile(*args: Any) -> str:  # another process commits while this one reads the live chunks
        monkeypatch.setattr(bm25, "live_fingerprint", counted)
        ingest(components, DirectorySource(root, name="docs"), namespace=NS, refresh_keyword_index=False)
        return counted(*args)

    monkeypatch.setattr(bm25, "live_fingerprint", committing_meanwhile)
    monkeypatch.setattr(bm25, "_loaded", {})
    search(components, "kite", namespace=NS, mode="bm25")
    assert list(folder.glob(f"*/{bm25.CHECKED}")) == []  # what it read may be either commit's: nothing noted
    new_process_finds("a.md", "b.md")
    assert len(scans) == 2
    second = components.records.journal.last_commit(NS)
    assert second != first
    assert json.loads((folder / current_index(components, NS).key / bm25.CHECKED).read_text())["commit"] == second


def test_a_large_build_tokenizes_in_worker_processes_into_the_same_index(
    indexed: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bm25, "_PAGE", 2)  # several pages from a few chunks
    monkeypatch.setattr(bm25.bm25_tokens, "_WORKER_PAGE", 1)  # each of them large enough for the workers
    folder = index_folder(indexed.config, NS)
    workers_used, pages_sent = [], []

    def observed(*args: Any) -> Any:
        workers_used.append(args[-1].processes if args[-1] else 0)
        return counted_pages(*args)

    start = WorkerPool.start

    def sent(pool: WorkerPool, *args: Any) -> Any:
        pages_sent.append(pool.processes)
        return start(pool, *args)

    monkeypatch.setattr(bm25.bm25_tokens, "counted_pages", observed)
    monkeypatch.setattr(WorkerPool, "start", sent)

    def rebuilt(workers_from: int, processes: int) -> dict[str, bytes]:
        monkeypatch.setattr(bm25, "_WORKERS_FROM", workers_from)
        monkeypatch.setattr(bm25, "_loaded", {})
        indexed.workers.close()
        indexed.workers = WorkerPool(processes)
        shutil.rmtree(folder)
        assert refresh_bm25(indexed, NS) is True
        return {f.name: f.read_bytes() for f in (folder / current_index(indexed, NS).key).iterdir()}

    in_process = rebuilt(10**9, 2)
    assert rebuilt(1, 2) == in_process and indexed.workers._executor is None  # stopped once built
    assert rebuilt(1, 0) == in_process
    assert workers_used == [0, 2, 0]  # small: here; large: in the workers, if there are any
    assert pages_sent and set(pages_sent) == {2}
    assert doc_names(search(indexed, "supersonic", namespace=NS, mode="bm25").hits) == ["flutter"]


# --- fusion and feedback math ---------------------------------------------------------------------------------


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(chunk_id, chunk_id.partition("#")[0], score, "", {}) for chunk_id, score in pairs]


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([hits(("a#0", 0.9), ("b#0", 0.8)), hits(("b#0", 12.0), ("c#0", 3.0))], k=10)
    assert [h.chunk_id for h in fused] == ["b#0", "a#0", "c#0"]
    assert [h.score for h in fused] == pytest.approx([1 / 12 + 1 / 11, 1 / 11, 1 / 12])
    tie = rrf([hits(("a#0", 1.0)), hits(("b#0", 1.0))], k=60)
    assert [h.chunk_id for h in tie] == ["a#0", "b#0"]  # ties keep first-seen order


def test_zmix_mixes_z_scores_and_floors_missing_chunks() -> None:
    dense = hits(("a#0", 0.9), ("b#0", 0.7), ("c#0", 0.5))  # z: 1.2247, 0, -1.2247
    sparse = hits(("c#0", 9.0), ("d#0", 1.0))  # z: 1, -1
    fused = {h.chunk_id: h.score for h in zmix(dense, sparse, dense_weight=0.7)}
    z = 1.5**0.5
    assert fused == pytest.approx(
        {"a#0": 0.7 * z + 0.3 * -1, "b#0": 0.3 * -1, "c#0": 0.7 * -z + 0.3 * 1, "d#0": 0.7 * -z + 0.3 * -1}
    )
    assert [h.chunk_id for h in zmix(dense, [], dense_weight=0.5)] == ["a#0", "b#0", "c#0"]


def test_rm3_interpolates_the_query_with_the_feedback_relevance_model() -> None:
    feedback = [(["wing", "flutter", "flutter", "tunnel"], 3.0), (["wing", "panel"], 1.0)]
    expanded = rm3({"flutter": 1.0}, feedback, terms=2, original_weight=0.6)
    # P(w|R): flutter 2/4*3/4 = .375, wing 1/4*3/4 + 1/2*1/4 = .3125, tunnel .1875, panel .125 → top 2 normalised
    assert expanded == pytest.approx({"flutter": 0.6 + 0.4 * 0.375 / 0.6875, "wing": 0.4 * 0.3125 / 0.6875})
    assert rm3({"flutter": 1.0}, [], terms=5, original_weight=0.5) == {"flutter": 1.0}


def test_feedback_expands_the_bm25_query(indexed: Components) -> None:
    plain = search(indexed, "supersonic", namespace=NS, mode="bm25", top_k=5)
    expanded = search(indexed, "supersonic", namespace=NS, mode="bm25", top_k=5, expand=True)
    assert plain.expansion_terms == [] and {"flutter", "wing", "tunnel"} <= set(expanded.expansion_terms)
    assert "superson" not in expanded.expansion_terms  # stemmed, as indexed; the query's own term is not "added"
    assert doc_names(plain.hits) == ["flutter"]
    assert doc_names(expanded.hits)[:2] == ["flutter", "tunnel"]  # reached through the feedback terms


# --- query understanding --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "text", "filter"),
    [
        ("shock waves since 2021", "shock waves", {"year": {"$gte": 2021}}),
        ("shock waves after 2021", "shock waves", {"year": {"$gt": 2021}}),
        ("heating before 2020?", "heating?", {"year": {"$lt": 2020}}),
        ("heating until 2020", "heating", {"year": {"$lte": 2020}}),
        ("flutter in 2019", "flutter", {"year": {"$eq": 2019}}),
        ("flutter between 2015 and 2018", "flutter", {"year": {"$gte": 2015, "$lte": 2018}}),
        ("flutter from 2018 to 2015", "flutter", {"year": {"$gte": 2015, "$lte": 2018}}),
        ("flutter 2015-2018", "flutter", {"year": {"$gte": 2015, "$lte": 2018}}),
        ("flutter from 2021 onwards", "flutter", {"year": {"$gte": 2021}}),
        ("source:papers flutter", "flutter", {"source": "papers"}),
        ('source:"Papers" flutter year:2018', "flutter", {"$and": [{"year": 2018}, {"source": "Papers"}]}),
        (
            "flutter tests in notes since 2019",
            "flutter tests",
            {"$and": [{"year": {"$gte": 2019}}, {"source": "notes"}]},
        ),
        ("flutter in Notes", "flutter", {"source": "notes"}),
        ("flutter in the tunnel", "flutter in the tunnel", None),
        ("year:soon flutter in 3000 cases", "year:soon flutter in 3000 cases", None),
        ("since 2021", "since 2021", {"year": {"$gte": 2021}}),
    ],
)
def test_rules_take_filters_out_of_the_query(query: str, text: str, filter: dict | None) -> None:
    understood = understand_rules(query, QueryFields(sources=("papers", "notes")))
    assert (understood.query, understood.filter) == (text, filter)


def test_understood_filters_merge_with_the_explicit_one(indexed: Components) -> None:
    result = search(
        indexed, "boundary layer flow since 2020", namespace=NS, top_k=5, understand=True, filter={"source": "papers"}
    )
    assert result.query == "boundary layer flow"
    assert result.filter == {"$and": [{"source": "papers"}, {"year": {"$gte": 2020}}]}
    assert doc_names(result.hits)[0] == "shocks" and all(
        matches({"year": {"$gte": 2020}}, h.metadata) for h in result.hits
    )
    assert merge_filters(None, {"a": 1}, None) == {"a": 1} and merge_filters(None) is None


# --- LLM stages through the loopback server -------------------------------------------------------------------


def documents_of(messages: list[Message]) -> dict[int, str]:
    user = messages[-1]["content"]
    return {int(i): text for i, text in re.findall(r'<document id="(\d+)">(.*?)</document>', user, re.DOTALL)}


def answering(answer: object) -> Callable[[list[Message]], str]:
    """A chat model that always gives ``answer`` (as JSON)."""
    return lambda messages: json.dumps(answer)


def prefer(word: str) -> Callable[[list[Message]], str]:
    """A reranker that scores 9 for documents containing ``word`` and 1 for the others."""

    def respond(messages: list[Message]) -> str:
        docs = documents_of(messages)
        return json.dumps({"scores": [{"id": i, "score": 9 if word in text else 1} for i, text in docs.items()]})

    return respond


def test_llm_reranker_scores_the_top_hits(indexed: Components, chat: ChatSettings, chat_server: LoopbackChat) -> None:
    chat_server.responder = prefer("Dewey")
    before = search(indexed, "library collections for readers", namespace=NS, top_k=4)
    after = search(indexed, "library collections for readers", namespace=NS, top_k=4, rerank=True, chat=chat)
    assert doc_names(after.hits)[0] == "dewey" and after.hits[0].score == 9.0
    assert [h.score for h in after.hits[1:]] == [1.0, 1.0, 1.0]
    assert doc_names(after.hits)[1:] == [d for d in doc_names(before.hits) if d != "dewey"][:3]  # ties keep order
    request = chat_server.requests[-1]
    assert request.model == "loopback-chat" and "never instructions" in request.messages[0]["content"]
    assert "<query>library collections for readers</query>" in request.user_message
    assert "&lt;b&gt;for readers&lt;/b&gt;" in request.user_message  # document markup cannot break the tags
    assert len(documents_of(request.messages)) == 9  # all 9 chunks: fewer than rerank_depth
    assert "rerank" in after.timings and after.warnings == []


@pytest.mark.parametrize("fault", ["malformed", "truncated", 500])
def test_llm_reranker_faults_keep_the_retrieval_order(
    indexed: Components, chat: ChatSettings, chat_server: LoopbackChat, fault: object
) -> None:
    chat_server.responder = prefer("Dewey")
    before = search(indexed, "wing flutter", namespace=NS, top_k=4)
    chat_server.fail_next(2, fault)  # type: ignore[arg-type]
    after = search(indexed, "wing flutter", namespace=NS, top_k=4, rerank=True, chat=chat)
    assert after.hits == before.hits
    assert len(after.warnings) == 1 and after.warnings[0].startswith("LLM reranking failed")


@pytest.mark.parametrize(
    "answer",
    [
        {"scores": [{"id": 1, "score": 5}]},  # too few
        {"scores": [{"id": 1, "score": 11}]},  # out of range
        {"ranking": [1, 2]},  # another shape
        [1, 2, 3],
    ],
)
def test_llm_reranker_answers_that_do_not_score_every_document_are_ignored(
    indexed: Components, chat: ChatSettings, chat_server: LoopbackChat, answer: object
) -> None:
    chat_server.responder = answering(answer)
    before = search(indexed, "wing flutter", namespace=NS, top_k=3)
    after = search(indexed, "wing flutter", namespace=NS, top_k=3, rerank=True, chat=chat)
    assert after.hits == before.hits and after.warnings


def test_the_chat_model_comes_from_the_config(indexed: Components, chat_server: LoopbackChat) -> None:
    chat_server.clear()
    chat_server.responder = prefer("Dewey")
    config = indexed.config.model_copy(
        update={
            "chat_model": "configured-chat",
            "chat_base_url": chat_server.base_url,
            "chat_api_key": SecretStr(chat_server.api_key),
        }
    )
    configured = dataclasses.replace(indexed, config=config)
    result = search(configured, "wing flutter", namespace=NS, top_k=3, rerank=True)
    assert doc_names(result.hits)[0] == "dewey" and chat_server.requests[-1].model == "configured-chat"
    assert ChatSettings.from_config(indexed.config) is None
    with pytest.raises(ConfigError, match="API key or a base_url"):
        ChatSettings(model="gpt")


def test_rerank_offline_is_none_and_says_so(indexed: Components) -> None:
    before = search(indexed, "wing flutter", namespace=NS, top_k=3)
    after = search(indexed, "wing flutter", namespace=NS, top_k=3, rerank=True)
    assert after.hits == before.hits and "offline reranking is none" in after.warnings[0]


def test_llm_multi_query_fuses_the_rewrites(indexed: Components, chat: ChatSettings, chat_server: LoopbackChat) -> None:
    chat_server.responder = answering(
        {"queries": ["Dewey decimal classification", "library subject catalogue", "how books are shelved"]}
    )
    result = search(indexed, "how books are shelved", namespace=NS, mode="bm25", top_k=3, expand=True, chat=chat)
    assert result.queries == ["how books are shelved", "Dewey decimal classification", "library subject catalogue"]
    assert doc_names(result.hits)[0] == "dewey"  # the original query alone has no term in the corpus
    assert search(indexed, "how books are shelved", namespace=NS, mode="bm25").hits == []
    assert set(result.timings) >= {"rewrite", "bm25", "fuse"}

    chat_server.fail_next(1, "malformed")
    degraded = search(indexed, "flutter", namespace=NS, mode="bm25", top_k=3, expand=True, chat=chat)
    assert degraded.queries == ["flutter"] and degraded.warnings[0].startswith("LLM query rewriting failed")


def test_llm_understanding_is_validated(indexed: Components, chat: ChatSettings, chat_server: LoopbackChat) -> None:
    chat_server.responder = answering({"query": "boundary layer separation", "filter": {"year": {"$gte": 2021}}})
    result = search(
        indexed, "recent work on boundary layer separation", namespace=NS, top_k=3, understand=True, chat=chat
    )
    assert (result.query, result.filter) == ("boundary layer separation", {"year": {"$gte": 2021}})
    assert doc_names(result.hits)[0] == "shocks" and result.warnings == []
    assert "year (number)" in chat_server.requests[-1].messages[0]["content"]
    assert "one of notes, papers" in chat_server.requests[-1].messages[0]["content"]

    for bad in ({"query": "x", "filter": {"year": {"$after": 2021}}}, {"query": "x", "filter": {"author": "Smith"}}):
        chat_server.responder = answering(bad)
        fallback = search(indexed, "flutter since 2019", namespace=NS, top_k=3, understand=True, chat=chat)
        assert (fallback.query, fallback.filter) == ("flutter", {"year": {"$gte": 2019}})  # the rules' reading
        assert fallback.warnings[0].startswith("LLM query understanding failed")

"""Into an index that was empty when the run opened, LanceDB appends the chunks of new documents instead of upserting
them; every other write is an upsert."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.errors import ValidationFailed
from ragline.indexing import stages
from ragline.indexing.pipeline import ingest
from ragline.indexing.steps import DirectSteps
from ragline.records import Document
from ragline.sources import open_source
from ragline.sources.base import SourceItem
from ragline.stores.base import VectorRecord
from ragline.stores.lancedb_store import LanceDBStore

NS = "appends"
T = TypeVar("T")


@pytest.fixture
def components(config: RaglineConfig, embedder: HashingEmbedder) -> Iterator[Components]:
    c = build_components(config.model_copy(update={"batch_size": 2}), embedder=embedder)  # a batch per 2 documents
    yield c
    c.close()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The ids each LanceDB write of the test appended or upserted."""
    seen: dict[str, list[str]] = {"insert": [], "upsert": []}
    for kind, ids in seen.items():
        monkeypatch.setattr(LanceDBStore, kind, recording(getattr(LanceDBStore, kind), ids))
    return seen


def recording(write: Callable[..., int], ids: list[str]) -> Callable[..., int]:
    """``write`` (a ``LanceDBStore`` method) noting the ids it writes in ``ids``."""

    def observed(store: LanceDBStore, records: list[VectorRecord], *, namespace: str) -> int:
        ids.extend(record.id for record in records)
        return write(store, records, namespace=namespace)

    return observed


def write(path: Path, documents: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"_id": i, "title": i, "text": t}) + "\n" for i, t in documents), "utf-8")
    return path


def paragraphs(word: str, n: int) -> str:
    """``n`` paragraphs that the default chunker cuts into ``n`` chunks."""
    return "\n\n".join(" ".join([f"{word}{k}"] * 150) for k in range(n))


def index_state(c: Components) -> tuple[int, int, dict[str, str]]:
    """Vectors in the index, live chunks in the record store, and each indexed id's text."""
    ids = list(c.store.list_ids(namespace=NS))
    texts = {i: str(r.metadata["text"]) for i, r in c.store.fetch(ids, namespace=NS).items()}
    return c.store.describe_namespace(NS).vector_count, c.records.journal.live_chunk_count(NS), texts


@dataclass
class Twice:
    """A source that yields one document twice, in different batches (a custom source may)."""

    documents: list[tuple[str, str]]
    name: str = "s"

    def items(self) -> Iterator[SourceItem]:
        for doc_id, text in self.documents:
            yield Document(f"s/{doc_id}", "s", f"mem://{doc_id}", doc_id, text, Document.hash_content(doc_id, text, {}))


def test_a_first_ingest_appends_every_chunk_and_writes_a_repeated_document_once(
    components: Components, writes: dict[str, list[str]]
) -> None:
    documents = [("a", paragraphs("alpha", 1)), ("b", paragraphs("beta", 2)), ("c", paragraphs("gamma", 1))]
    result = ingest(components, Twice([*documents, ("a", paragraphs("delta", 3))]), namespace=NS)  # "a" again
    vectors, live, texts = index_state(components)
    assert vectors == live == len(texts) == 1 + 2 + 1 and texts["s/a#0"].startswith("alpha0")
    assert (sorted(writes["insert"]), writes["upsert"]) == (["s/a#0", "s/b#0", "s/b#1", "s/c#0"], [])
    assert [q.doc_id for q in result.quarantined] == ["s/a"]


def test_an_index_holding_vectors_when_the_run_opens_is_upserted(
    components: Components, tmp_path: Path, writes: dict[str, list[str]]
) -> None:
    ingest(components, open_source(write(tmp_path / "a.jsonl", [("a", "one"), ("b", "two")]), name="s"), namespace=NS)
    assert sorted(writes["insert"]) == ["s/a#0", "s/b#0"]
    writes["insert"].clear()
    source = write(tmp_path / "b.jsonl", [("a", "one"), ("b", "changed"), ("c", "new")])
    ingest(components, open_source(source, name="s"), namespace=NS)
    assert (writes["insert"], sorted(writes["upsert"])) == ([], ["s/b#0", "s/c#0"])  # sealed, and yet not appended
    vectors, live, texts = index_state(components)
    assert vectors == live == 3 and texts["s/b#0"] == "changed"


def test_an_index_holding_ids_the_record_store_does_not_know_is_upserted(
    components: Components, tmp_path: Path, writes: dict[str, list[str]]
) -> None:
    ingest(components, open_source(write(tmp_path / "a.jsonl", [("a", "one")]), name="s"), namespace=NS)
    (orphan,) = components.store.fetch(["s/a#0"], namespace=NS).values()
    components.store.upsert([VectorRecord("s/b#0", orphan.values, {"text": "orphan"})], namespace=NS)  # another tool
    writes["insert"].clear()
    ingest(components, open_source(write(tmp_path / "b.jsonl", [("a", "one"), ("b", "two")]), name="s"), namespace=NS)
    assert writes["insert"] == [] and writes["upsert"][-1] == "s/b#0"
    vectors, live, texts = index_state(components)
    assert vectors == live == 2 and texts["s/b#0"] == "two"


def test_an_id_appended_twice_is_refused_before_the_commit(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(components, open_source(write(tmp_path / "a.jsonl", [("a", "one")]), name="s"), namespace=NS)
    monkeypatch.setattr(stages, "_appendable", lambda run, batch: {"s/a#0"})  # as if the rule were wrong
    with pytest.raises(ValidationFailed, match="holds 2 vectors; the record store expects 1"):
        ingest(components, open_source(write(tmp_path / "b.jsonl", [("a", "two")]), name="s"), namespace=NS)
    assert components.records.journal.chunk_rows(NS, ["s/a#0"])["s/a#0"].text == "one"  # the run did not commit


class RetryingSteps(DirectSteps):
    """Runs a stage again when it fails, as a Prefect task with retries does."""

    def run(self, stage: Callable[..., T], label: str, *args: Any) -> T:
        try:
            return super().run(stage, label, *args)
        except ConnectionError:
            return super().run(stage, label, *args)


def test_an_upsert_retried_after_its_append_landed_writes_each_chunk_once(
    components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert, failures = LanceDBStore.insert, [1]

    def lost_acknowledgement(store: LanceDBStore, records: list[VectorRecord], *, namespace: str) -> int:
        written = insert(store, records, namespace=namespace)
        if failures:
            failures.pop()
            raise ConnectionError("the write landed, its answer did not")
        return written

    monkeypatch.setattr(LanceDBStore, "insert", lost_acknowledgement)
    source = open_source(write(tmp_path / "a.jsonl", [("a", paragraphs("alpha", 2)), ("b", "two")]), name="s")
    ingest(components, source, namespace=NS, steps=RetryingSteps(components))
    assert failures == []  # the first append did fail once
    vectors, live, texts = index_state(components)
    assert vectors == live == len(texts) == 3

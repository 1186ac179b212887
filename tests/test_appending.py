"""New documents' chunks are appended to LanceDB instead of upserted, only when the index cannot hold their ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.indexing.pipeline import ingest
from ragline.records import Document
from ragline.sources import open_source
from ragline.sources.base import SourceItem
from ragline.stores.base import VectorRecord
from ragline.stores.lancedb_store import LanceDBStore

NS = "appends"


@pytest.fixture
def components(config: RaglineConfig, embedder: HashingEmbedder) -> Iterator[Components]:
    c = build_components(config.model_copy(update={"batch_size": 2}), embedder=embedder)  # a batch per 2 documents
    yield c
    c.close()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The ids each LanceDB write of the test appended or upserted."""
    seen: dict[str, list[str]] = {"insert": [], "upsert": []}
    for kind in seen:
        original = getattr(LanceDBStore, kind)

        def observed(store: LanceDBStore, records: list[VectorRecord], *, namespace: str, _o=original, _k=kind) -> int:  # type: ignore[no-untyped-def]
            seen[_k].extend(record.id for record in records)
            return _o(store, records, namespace=namespace)

        monkeypatch.setattr(LanceDBStore, kind, observed)
    return seen


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


def test_a_first_ingest_appends_and_a_document_met_twice_is_upserted_the_second_time(
    components: Components, writes: dict[str, list[str]]
) -> None:
    documents = [("a", paragraphs("alpha", 1)), ("b", paragraphs("beta", 2)), ("c", paragraphs("gamma", 1))]
    ingest(components, Twice([*documents, ("a", paragraphs("delta", 3))]), namespace=NS)  # "a" again, longer
    vectors, live, texts = index_state(components)
    assert vectors == live == len(texts) == 3 + 2 + 1  # a#0-2, b#0-1, c#0
    assert texts["s/a#0"].startswith("delta0") and texts["s/a#2"].startswith("delta2")
    assert writes["upsert"] == ["s/a#0"]  # the one id the first "a" wrote
    assert sorted(writes["insert"]) == ["s/a#0", "s/a#1", "s/a#2", "s/b#0", "s/b#1", "s/c#0"]


def test_a_sealed_index_appends_new_documents_and_upserts_changed_ones(
    components: Components, tmp_path: Path, writes: dict[str, list[str]]
) -> None:
    ingest(components, open_source(write(tmp_path / "a.jsonl", [("a", "one"), ("b", "two")]), name="s"), namespace=NS)
    writes["insert"].clear()
    source = write(tmp_path / "b.jsonl", [("a", "one"), ("b", "changed"), ("c", "new")])
    ingest(components, open_source(source, name="s"), namespace=NS)
    assert (writes["insert"], writes["upsert"]) == (["s/c#0"], ["s/b#0"])
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
    assert writes["insert"] == [] and writes["upsert"][-1] == "s/b#0"  # the write broke the seal: no appending
    vectors, live, texts = index_state(components)
    assert vectors == live == 2 and texts["s/b#0"] == "two"

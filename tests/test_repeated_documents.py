"""A source may yield one document id more than once in a run (a custom source, a change feed): the last version
is indexed, whatever the earlier ones wrote, and a rollback leaves the index as the previous run left it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.indexing.consistency import await_writes
from ragline.indexing.pipeline import ingest
from ragline.records import Document
from ragline.sources.base import SourceItem

NS = "repeats"


@pytest.fixture
def config(both_stores_config: RaglineConfig) -> RaglineConfig:
    """LanceDB, and Pinecone's SDK against a loopback server with a write lag."""
    return both_stores_config


@pytest.fixture
def components(config: RaglineConfig, embedder: HashingEmbedder) -> Iterator[Components]:
    c = build_components(config.model_copy(update={"batch_size": 2}), embedder=embedder)  # a batch per 2 documents
    yield c
    c.close()


def paragraphs(word: str, n: int) -> str:
    """``n`` paragraphs that the default chunker cuts into ``n`` chunks."""
    return "\n\n".join(" ".join([f"{word}{k}"] * 150) for k in range(n))


@dataclass
class Listed:
    """The documents as listed, repeats included; ``fail``: raise after the last one."""

    documents: list[tuple[str, str]]
    fail: bool = False
    name: str = "s"

    def items(self) -> Iterator[SourceItem]:
        for doc_id, text in self.documents:
            yield Document(f"s/{doc_id}", "s", f"mem://{doc_id}", doc_id, text, Document.hash_content(doc_id, text, {}))
        if self.fail:
            raise RuntimeError("the source broke off")


def index_texts(c: Components) -> dict[str, str]:
    """Each id in the index with the start of its text (once reads show every write); checked against the record
    store's live chunks."""
    await_writes(c, NS)
    ids = list(c.store.list_ids(namespace=NS))
    texts = {i: str(r.metadata["text"]).split()[0] for i, r in c.store.fetch(ids, namespace=NS).items()}
    live = c.records.journal.chunk_rows(NS, c.records.journal.live_chunk_ids(NS))
    assert c.store.describe_namespace(NS).vector_count == len(texts)
    assert {i: row.text.split()[0] for i, row in live.items()} == texts
    return texts


Where = Literal["same batch", "later batch"]
SPLIT: dict[Where, list[tuple[str, str]]] = {"same batch": [], "later batch": [("x", "x"), ("y", "y")]}


@pytest.mark.parametrize("where", list(SPLIT))
def test_a_document_yielded_again_shorter_keeps_only_its_last_version(components: Components, where: Where) -> None:
    ingest(
        components, Listed([("a", paragraphs("alpha", 3)), *SPLIT[where], ("a", paragraphs("beta", 1))]), namespace=NS
    )
    texts = index_texts(components)
    assert {i: t for i, t in texts.items() if i.startswith("s/a")} == {"s/a#0": "beta0"}


@pytest.mark.parametrize("where", list(SPLIT))
def test_an_indexed_document_yielded_twice_keeps_only_its_last_version(components: Components, where: Where) -> None:
    ingest(components, Listed([("a", paragraphs("alpha", 3))]), namespace=NS)
    ingest(
        components, Listed([("a", paragraphs("beta", 4)), *SPLIT[where], ("a", paragraphs("gamma", 2))]), namespace=NS
    )
    texts = index_texts(components)
    assert {i: t for i, t in texts.items() if i.startswith("s/a")} == {"s/a#0": "gamma0", "s/a#1": "gamma1"}


@pytest.mark.parametrize("where", list(SPLIT))
def test_a_failed_run_that_met_a_document_twice_leaves_the_previous_index(components: Components, where: Where) -> None:
    ingest(components, Listed([("a", paragraphs("alpha", 2)), ("b", "b")]), namespace=NS)
    before = index_texts(components)
    versions = [("a", paragraphs("beta", 4)), *SPLIT[where], ("a", paragraphs("gamma", 1))]
    versions += [(f"z{k}", "z") for k in range(4)]  # the last "a" is written before the source breaks off
    with pytest.raises(RuntimeError, match="broke off"):
        ingest(components, Listed(versions, fail=True), namespace=NS)
    assert index_texts(components) == before == {"s/a#0": "alpha0", "s/a#1": "alpha1", "s/b#0": "b"}
    assert components.records.journal.pending_chunk_ids(components.records.journal.last_runs(NS, 1)[0].run_id) == []

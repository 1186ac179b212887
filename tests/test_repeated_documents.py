"""A source may yield one document id more than once in a run (a custom source, a change feed): the first version
is indexed and every later one quarantined, as the dataset sources do with a repeated id. The run's own record of
the ids it read (in the record store) decides, so it holds across batches and however each version fares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ragline.components import Components, build_components
from ragline.config import RaglineConfig
from ragline.embedders.hashing import HashingEmbedder
from ragline.indexing.consistency import await_writes
from ragline.indexing.pipeline import ingest
from ragline.records import Document, QuarantineRecord
from ragline.sources.base import SourceItem
from ragline.sources.datasets import REASON_DUPLICATE_ID

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
            if not text:
                yield QuarantineRecord("s", f"mem://{doc_id}", "unreadable", doc_id=f"s/{doc_id}")
                continue
            yield Document(f"s/{doc_id}", "s", f"mem://{doc_id}", doc_id, text, Document.hash_content(doc_id, text, {}))
        if self.fail:
            raise RuntimeError("the source broke off")


def index_texts(c: Components) -> dict[str, str]:
    """Each id in the index with the first word of its text (once reads show every write), checked against the
    record store's live chunks."""
    await_writes(c, NS)
    ids = list(c.store.list_ids(namespace=NS))
    texts = {i: str(r.metadata["text"]).split()[0] for i, r in c.store.fetch(ids, namespace=NS).items()}
    live = c.records.journal.chunk_rows(NS, c.records.journal.live_chunk_ids(NS))
    assert c.store.describe_namespace(NS).vector_count == len(texts)
    assert {i: row.text.split()[0] for i, row in live.items()} == texts
    return texts


def of_a(texts: dict[str, str]) -> dict[str, str]:
    return {i: t for i, t in texts.items() if i.startswith("s/a#")}


FILLER = [("x", "x"), ("y", "y"), ("z", "z")]
"""Between two versions: puts the second in a later batch."""


@pytest.mark.parametrize("between", [[], FILLER], ids=["same batch", "later batch"])
@pytest.mark.parametrize("lengths", [(3, 1), (1, 3)], ids=["shorter", "longer"])
def test_the_first_version_is_indexed_and_the_repeat_quarantined(
    components: Components, between: list[tuple[str, str]], lengths: tuple[int, int]
) -> None:
    first, second = lengths
    result = ingest(
        components,
        Listed([("a", paragraphs("alpha", first)), *between, ("a", paragraphs("beta", second))]),
        namespace=NS,
    )
    assert of_a(index_texts(components)) == {f"s/a#{k}": f"alpha{k}" for k in range(first)}
    (repeat,) = [q for q in result.quarantined if q.reason == REASON_DUPLICATE_ID]
    assert repeat.doc_id == "s/a" and "first version" in (repeat.detail or "")
    assert result.stats.documents_quarantined == 1 and result.stats.documents_new == 1 + len(between)


@pytest.mark.parametrize("between", [[], FILLER], ids=["same batch", "later batch"])
def test_a_repeat_at_the_indexed_version_does_not_undo_the_change(
    components: Components, between: list[tuple[str, str]]
) -> None:
    ingest(components, Listed([("a", paragraphs("alpha", 2))]), namespace=NS)
    source = Listed([("a", paragraphs("beta", 3)), *between, ("a", paragraphs("alpha", 2))])
    for _ in range(2):  # and the same source again: nothing flips
        ingest(components, source, namespace=NS)
        assert of_a(index_texts(components)) == {"s/a#0": "beta0", "s/a#1": "beta1", "s/a#2": "beta2"}


@pytest.mark.parametrize("between", [[], FILLER], ids=["same batch", "later batch"])
def test_a_document_after_a_quarantined_read_of_its_id_is_indexed(
    components: Components, between: list[tuple[str, str]]
) -> None:
    ingest(components, Listed([("a", paragraphs("alpha", 1))]), namespace=NS)
    result = ingest(components, Listed([("a", ""), *between, ("a", paragraphs("beta", 1))]), namespace=NS)
    assert [q.reason for q in result.quarantined] == ["unreadable"]  # as the dataset sources: a rejected record
    assert of_a(index_texts(components)) == {"s/a#0": "beta0"}  # does not use its id up


@pytest.mark.parametrize("between", [[], FILLER], ids=["same batch", "later batch"])
def test_a_failed_run_that_met_a_document_twice_leaves_the_previous_index(
    components: Components, between: list[tuple[str, str]]
) -> None:
    ingest(components, Listed([("a", paragraphs("alpha", 2)), ("b", "b")]), namespace=NS)
    before = index_texts(components)
    versions = [("a", paragraphs("beta", 4)), *between, ("a", paragraphs("gamma", 1))]
    versions += [(f"w{k}", "w") for k in range(4)]  # the batches with "a" are written before the source breaks off
    with pytest.raises(RuntimeError, match="broke off"):
        ingest(components, Listed(versions, fail=True), namespace=NS)
    assert index_texts(components) == before == {"s/a#0": "alpha0", "s/a#1": "alpha1", "s/b#0": "b"}

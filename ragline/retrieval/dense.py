"""Dense retrieval: the query embedded with the namespace's model, then the vector store's filtered top k."""

from __future__ import annotations

from collections.abc import Callable

from ragline.components import Components
from ragline.errors import ConfigError
from ragline.indexing.health import require_whole_index
from ragline.recordstore import LIVE
from ragline.retrieval.hits import Hit
from ragline.stores.base import Filter, QueryMatch

DEEPER = 4
"""How many times more matches a search asks for when uncommitted ones hid some of the ones it asked for."""
DEEPEST = 1_000
"""The most it asks for to replace hidden matches (beyond ``top_k``): a Pinecone result with the chunks' metadata
must stay within 4 MB."""


def dense_search(c: Components, query: str, *, namespace: str, top_k: int, filter: Filter | None) -> list[Hit]:
    """The ``top_k`` chunks nearest to ``query`` that match ``filter``, best first (score: cosine).

    Raises ``IndexDamaged`` when the index cannot be read, or answers nothing because it lost its vectors.
    Matches a run has written but not committed are hidden (``committed``): while they take the nearest places,
    the store is asked for ``DEEPER`` times as many, up to ``DEEPEST``, until ``top_k`` committed ones are found or
    the store has no more.
    """
    check_namespace_model(c, namespace)
    vector = c.embedder.embed([query])[0]

    def nearest(asked: int) -> list[QueryMatch]:
        matches = c.store.query(vector, namespace=namespace, top_k=asked, filter=filter)
        if not matches:
            require_whole_index(c.store, c.records.journal, namespace)
        return matches

    return [as_hit(m) for m in committed_top(c, namespace, top_k, max(top_k, DEEPEST), nearest)]


def committed_top(
    c: Components, namespace: str, top_k: int, deepest: int, best: Callable[[int], list[QueryMatch]]
) -> list[QueryMatch]:
    """The ``top_k`` first committed matches of ``best(n)`` (a store's ``n`` best), asking ``DEEPER`` times as many,
    up to ``deepest``, while uncommitted ones hide some and the store has more."""
    asked = top_k
    while True:
        matches = best(asked)
        kept = committed(c, namespace, matches)
        if len(kept) >= top_k or len(matches) < asked or asked >= deepest:
            return kept[:top_k]
        asked = min(deepest, asked * DEEPER)


def committed(c: Components, namespace: str, matches: list[QueryMatch]) -> list[QueryMatch]:
    """The matches whose text is their chunk's committed (live) text: a run's writes stay hidden until its commit,
    and the ids a commit made stale are hidden before they are deleted, so a document never shows two versions."""
    live = c.records.journal.chunk_rows(namespace, [m.id for m in matches], LIVE)
    return [m for m in matches if m.id in live and live[m.id].text == m.metadata.get("text")]


def check_namespace_model(c: Components, namespace: str) -> None:
    """Refuse to query a namespace with a model other than the one its vectors were made with."""
    bound = c.records.journal.namespace_model(namespace)
    if bound is not None and bound != (c.embedder.model_id, c.embedder.dimension):
        raise ConfigError(
            f"namespace {namespace!r} holds vectors of {bound[0]} (dimension {bound[1]}); cannot query it with "
            f"{c.embedder.model_id} (dimension {c.embedder.dimension})"
        )


def as_hit(match: QueryMatch) -> Hit:
    """A store match as a Hit: the index keeps the chunk text in its metadata (``ingest.index_metadata``)."""
    metadata = dict(match.metadata)
    text = metadata.pop("text", "")
    doc_id = metadata.get("doc_id", match.id.rpartition("#")[0])
    return Hit(chunk_id=match.id, doc_id=str(doc_id), score=match.score, text=str(text), metadata=metadata)

"""Keyword (BM25) search over one namespace, wherever its index lives; ``keyword_index`` picks it.

- **Pinecone** (``Components.sparse``): the namespace's sparse index holds each chunk's BM25 term weights
  (``ragline.retrieval.bm25_sparse``); a query becomes a sparse vector of idf-weighted terms, made from the
  statistics in the shared record store, and Pinecone ranks by dot product, with the query's metadata filter. Nothing
  is read from this host's disk, so any host with the same Pinecone index and record store answers alike. The
  statistics are read once per committed run (``RunJournal.read_generation``) and cached per process.
- **LanceDB** (embedded, single host): bm25s under ``<home>/bm25`` (``ragline.retrieval.bm25``).

Either way the query is tokenized as the chunks were, scores are bm25s's Lucene BM25, and hits carry the chunk's
committed text and metadata.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ragline.components import Components
from ragline.recordstore import RecordStore
from ragline.recordstore.rows import KeywordCorpus
from ragline.retrieval.bm25 import BM25Index, BM25Params, current_index, indexed_text, tokenizer
from ragline.retrieval.bm25_sparse import params_from_key, query_vector
from ragline.retrieval.dense import as_hit, committed_top
from ragline.retrieval.hits import Hit
from ragline.stores.base import Filter, QueryMatch
from ragline.stores.sparse import MAX_SPARSE_TOP_K, SparseStore


class KeywordIndex(Protocol):
    """A namespace's keyword index as retrieval uses it (plain BM25, and the terms RM3 feedback needs)."""

    @property
    def params(self) -> BM25Params:
        """The parameters its scores use."""
        ...

    @property
    def sources(self) -> Sequence[str]:
        """The distinct ``source`` values of the live chunks (query understanding recognises them)."""
        ...

    @property
    def max_top_k(self) -> int | None:
        """The most hits one search returns (None: no limit)."""
        ...

    def query_weights(self, query: str) -> dict[str, float]:
        """The query's terms with their counts (a repeated term counts again, as in bm25s)."""
        ...

    def hit_terms(self, hits: Sequence[Hit]) -> list[list[str]]:
        """Each hit's terms as indexed (title and text)."""
        ...

    def search(self, weights: Mapping[str, float], *, top_k: int, filter: Filter | None) -> list[Hit]:
        """The ``top_k`` best-scoring live chunks for a weighted bag of terms that match ``filter``."""
        ...


def keyword_index(c: Components, namespace: str, params: BM25Params) -> KeywordIndex:
    """The namespace's keyword index: the sparse index on Pinecone, else the local bm25s index (``params``)."""
    if c.sparse is None:
        return LocalKeywordIndex(current_index(c, namespace, params), c.records, namespace)
    return SparseKeywordIndex(c.sparse, c, namespace, _statistics(c.records, namespace))


class LocalKeywordIndex:
    """The bm25s index of one host (``ragline.retrieval.bm25``)."""

    max_top_k = None

    def __init__(self, index: BM25Index, records: RecordStore, namespace: str) -> None:
        self.params, self.sources = index.params, index.sources
        self._index, self._records, self._namespace = index, records, namespace

    def query_weights(self, query: str) -> dict[str, float]:
        return self._index.query_weights(query)

    def hit_terms(self, hits: Sequence[Hit]) -> list[list[str]]:
        return self._index.hit_terms(hits)

    def search(self, weights: Mapping[str, float], *, top_k: int, filter: Filter | None) -> list[Hit]:
        return self._index.search(self._records, self._namespace, weights, top_k=top_k, filter=filter)


class SparseKeywordIndex:
    """BM25 computed by a sparse vector index, with statistics from the shared record store."""

    max_top_k = MAX_SPARSE_TOP_K

    def __init__(self, sparse: SparseStore, c: Components, namespace: str, statistics: _Statistics) -> None:
        self.params, self.sources = statistics.params, statistics.corpus.sources
        self._sparse, self._c, self._namespace, self._statistics = sparse, c, namespace, statistics
        self._tokenize = tokenizer(statistics.params)

    def query_weights(self, query: str) -> dict[str, float]:
        return {term: float(count) for term, count in Counter(self._tokenize([query])[0]).items()}

    def hit_terms(self, hits: Sequence[Hit]) -> list[list[str]]:
        return self._tokenize([indexed_text(hit.text, hit.metadata) for hit in hits])

    def search(self, weights: Mapping[str, float], *, top_k: int, filter: Filter | None) -> list[Hit]:
        """The top hits by Pinecone's dot product (= BM25), only chunks of committed runs (as in dense search)."""
        chunks = self._statistics.corpus.chunks
        vector = query_vector(weights, self._statistics.frequencies(self._c.records, list(weights)), chunks)
        if vector is None:
            return []
        top_k = min(top_k, MAX_SPARSE_TOP_K)

        def best(asked: int) -> list[QueryMatch]:
            return self._sparse.query(vector, namespace=self._namespace, top_k=asked, filter=filter)

        return [as_hit(m) for m in committed_top(self._c, self._namespace, top_k, MAX_SPARSE_TOP_K, best)]


# --- statistics, cached per committed run ---------------------------------------------------------------------


@dataclass
class _Statistics:
    """A namespace's corpus statistics at one generation (its latest committed run), with the document frequencies
    read so far."""

    namespace: str
    generation: str | None
    params: BM25Params
    corpus: KeywordCorpus
    _frequencies: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def frequencies(self, records: RecordStore, terms: Sequence[str]) -> dict[str, int]:
        """Document frequencies of ``terms`` among the live chunks (0 for terms in none)."""
        with self._lock:
            unknown = [t for t in terms if t not in self._frequencies]
        if unknown:
            found = records.keywords.document_frequencies(self.namespace, unknown)
            with self._lock:
                self._frequencies.update({t: found.get(t, 0) for t in unknown})
        with self._lock:
            return {t: self._frequencies[t] for t in terms}


_cache: dict[tuple[int, str], tuple[RecordStore, _Statistics]] = {}
_cache_lock = threading.Lock()


def _statistics(records: RecordStore, namespace: str) -> _Statistics:
    """The namespace's statistics, read again whenever a run committed since (never cached while one is open)."""
    generation = records.journal.read_generation(namespace)
    key = (id(records), namespace)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[0] is records and generation is not None and cached[1].generation == generation:
        return cached[1]
    encoding = records.keywords.encoding(namespace)
    params = params_from_key(encoding.params) if encoding is not None else BM25Params()
    statistics = _Statistics(namespace, generation, params, records.keywords.corpus(namespace))
    if generation is not None:
        with _cache_lock:
            _cache[key] = (records, statistics)
    return statistics
